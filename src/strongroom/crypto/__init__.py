"""Strongroom's cryptography, composed from vetted libraries; no I/O.

- ``AuthorityKey`` / ``AuthorityPublicKey``: the organisation's Ed25519 authority
  (``cryptography``): device certificates and revocations.
- ``DeviceAccount`` / ``OlmSession``: device identity and 1:1 sessions (vodozemac Olm).
- ``OutboundGroupSession`` / ``InboundGroupSession``: group sessions (vodozemac Megolm).
- ``ActivationClient`` / ``ActivationServer``: the activation PAKE (SPAKE2) and its channel.
- ``AttachmentEncryptor`` / ``AttachmentDecryptor``: files sealed in AES-256-GCM chunks.
- ``SasKeys`` / ``SharedSas``: short authentication strings for interactive verification.
"""

from ._attachment import (
    ATTACHMENT_KEY_BYTES,
    ATTACHMENT_TAG_BYTES,
    DEFAULT_CHUNK,
    MAX_CHUNK,
    MIN_CHUNK,
    AttachmentDecryptor,
    AttachmentEncryptor,
    ChunkCipher,
    chunk_count,
    new_attachment_key,
    plain_size,
    sealed_size,
)
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
from ._sas import EMOJI, SasKeys, SharedSas, sas_commitment

__all__ = [
    "ATTACHMENT_KEY_BYTES",
    "ATTACHMENT_TAG_BYTES",
    "CODE_ALPHABET",
    "DEFAULT_CHUNK",
    "EMOJI",
    "MAX_CHUNK",
    "MIN_CHUNK",
    "PICKLE_KEY_BYTES",
    "ActivationClient",
    "ActivationKeys",
    "ActivationServer",
    "AttachmentDecryptor",
    "AttachmentEncryptor",
    "AuthorityKey",
    "AuthorityPublicKey",
    "ChunkCipher",
    "DeviceAccount",
    "GroupDecrypted",
    "InboundGroupSession",
    "OlmSession",
    "OutboundGroupSession",
    "SasKeys",
    "SharedSas",
    "b64decode",
    "b64encode",
    "chunk_count",
    "code_password",
    "device_id_for",
    "generate_code",
    "megolm_message_index",
    "new_attachment_key",
    "normalise_code",
    "plain_size",
    "sas_commitment",
    "sealed_size",
    "verify_ed25519",
    "verify_one_time_key",
]
