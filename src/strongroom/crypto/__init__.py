"""Strongroom's cryptography, composed from vetted libraries; no I/O.

- ``AuthorityKey`` / ``AuthorityPublicKey``: the organisation's Ed25519 authority
  (``cryptography``): device certificates and revocations.
- ``DeviceAccount`` / ``OlmSession``: device identity and 1:1 sessions (vodozemac Olm).
- ``OutboundGroupSession`` / ``InboundGroupSession``: group sessions (vodozemac Megolm).
- ``ActivationClient`` / ``ActivationServer``: the activation PAKE (SPAKE2) and its channel.
"""

from ._authority import AuthorityKey, AuthorityPublicKey
from ._encoding import b64decode, b64encode
from ._megolm import (
    GroupDecrypted,
    InboundGroupSession,
    OutboundGroupSession,
    megolm_message_index,
)
from ._olm import (
    PICKLE_KEY_BYTES,
    DeviceAccount,
    OlmSession,
    device_id_for,
    verify_ed25519,
    verify_one_time_key,
)
from ._pake import (
    CODE_ALPHABET,
    ActivationClient,
    ActivationKeys,
    ActivationServer,
    code_password,
    generate_code,
    normalise_code,
)

__all__ = [
    "CODE_ALPHABET",
    "PICKLE_KEY_BYTES",
    "ActivationClient",
    "ActivationKeys",
    "ActivationServer",
    "AuthorityKey",
    "AuthorityPublicKey",
    "DeviceAccount",
    "GroupDecrypted",
    "InboundGroupSession",
    "OlmSession",
    "OutboundGroupSession",
    "b64decode",
    "b64encode",
    "code_password",
    "device_id_for",
    "generate_code",
    "megolm_message_index",
    "normalise_code",
    "verify_ed25519",
    "verify_one_time_key",
]
