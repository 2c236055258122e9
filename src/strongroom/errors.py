"""Every error Strongroom raises on purpose.

One root, so that a caller can catch "anything Strongroom refused" in one place::

    StrongroomError
    ├── ProtocolError               bytes on the wire broke the protocol
    │   ├── LocalProtocolError      ... and we are the ones who broke it (a bug or bad input)
    │   └── RemoteProtocolError     ... the peer broke it, or refused us with a code
    ├── CryptoError                 a signature, certificate or ciphertext did not check out
    │   ├── CertificateError        a certificate or revocation is not the authority's
    │   ├── SignatureError          a signature by a device key does not verify
    │   ├── DecryptionError         a ciphertext could not be opened
    │   └── ActivationError         the activation PAKE failed (usually: wrong code)
    ├── StoreError                  the server's storage refused an operation
    │   ├── NotFoundError           the thing named does not exist
    │   ├── ConflictError           it exists already (or changed under you)
    │   └── SchemaError             the database has a schema this build does not know
    ├── ConfigError                 a data directory or device home is missing or malformed
    └── ClientError                 the device SDK cannot do what was asked
        ├── NotActivatedError       the device home holds no activated device
        ├── ServerRefusedError      the server answered with an error code
        ├── PasscodeRequiredError   the device store is protected and no passcode was given
        ├── WrongPasscodeError      the passcode did not open the device store
        └── DeviceWipedError        the device was wiped (wrong passcodes, or IT's order)

Foreign exceptions (vodozemac, sqlite3, cryptography, spake2) are mapped to these at the
one place where they enter, with ``raise ... from``.  Messages are written for the person
at the terminal; internal details never travel to the other end of a connection.
"""

from __future__ import annotations

__all__ = [
    "ActivationError",
    "CertificateError",
    "ClientError",
    "ConfigError",
    "ConflictError",
    "CryptoError",
    "DecryptionError",
    "DeviceWipedError",
    "LocalProtocolError",
    "NotActivatedError",
    "NotFoundError",
    "PasscodeRequiredError",
    "ProtocolError",
    "RemoteProtocolError",
    "SchemaError",
    "ServerRefusedError",
    "SignatureError",
    "StoreError",
    "StrongroomError",
    "WrongPasscodeError",
]


class StrongroomError(Exception):
    """Root of every error Strongroom raises on purpose."""


class ProtocolError(StrongroomError):
    """Bytes on the wire broke the protocol.

    ``code`` is the wire error code (a value of ``strongroom.proto.ErrorCode``) that
    describes the failure to the other side.
    """

    def __init__(self, message: str, code: str = "bad_frame") -> None:
        super().__init__(message)
        self.code = code


class LocalProtocolError(ProtocolError):
    """We were about to break the protocol (bad input from our own caller); nothing was sent."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol or refused us; the connection it happened on is done."""


class CryptoError(StrongroomError):
    """A signature, certificate or ciphertext did not check out; treat the input as hostile."""


class CertificateError(CryptoError):
    """A device certificate or revocation is not signed by the pinned authority key.

    The device it names must not be trusted: do not encrypt to it, do not believe it.
    """


class SignatureError(CryptoError):
    """A signature by a device key does not verify over the bytes it claims to sign."""


class DecryptionError(CryptoError):
    """A ciphertext could not be decrypted: corrupted, replayed, or not meant for us."""


class ActivationError(CryptoError):
    """Activation failed.

    Most often the activation code was mistyped: ask IT for the code again. ``tries_left``
    says how many more wrong tries the code survives (``None`` when unknown).
    """

    def __init__(self, message: str, tries_left: int | None = None) -> None:
        super().__init__(message)
        self.tries_left = tries_left


class StoreError(StrongroomError):
    """The server's storage refused an operation."""


class NotFoundError(StoreError):
    """The user, device or code named does not exist."""


class ConflictError(StoreError):
    """The thing being created exists already, or changed while we worked on it."""


class SchemaError(StoreError):
    """The database was written by a schema version this build does not know.

    Run ``strongroom migrate`` with a build at least as new as the one that wrote it.
    """


class ConfigError(StrongroomError):
    """A data directory or device home is missing, incomplete or malformed."""


class ClientError(StrongroomError):
    """The device cannot do what was asked."""


class NotActivatedError(ClientError):
    """The device home holds no activated device: run ``strongroom device activate`` first."""


class ServerRefusedError(ClientError):
    """The server answered with an error code; ``code`` is the wire code, stable across versions."""

    def __init__(self, message: str, code: str) -> None:
        super().__init__(message)
        self.code = code


class PasscodeRequiredError(ClientError):
    """The device store is protected by a passcode and none was given.

    Give the passcode (the command line reads ``STRONGROOM_PASSCODE``, or asks for it at a
    terminal).  Nothing was counted: asking without a passcode is not a wrong try.
    """


class WrongPasscodeError(ClientError):
    """The passcode did not open the device store.

    The try was counted; ``tries_left`` says how many more wrong passcodes the device
    accepts before it wipes itself.  Check the passcode and try again.
    """

    def __init__(self, message: str, tries_left: int) -> None:
        super().__init__(message)
        self.tries_left = tries_left


class DeviceWipedError(ClientError):
    """The device was wiped: its store and key are gone, and nothing can be recovered.

    ``reason`` says why (too many wrong passcodes, a wipe order from IT) and ``at_ms`` when
    (Unix milliseconds).  Ask IT for a new activation code and activate the device again.
    """

    def __init__(self, message: str, reason: str, at_ms: int) -> None:
        super().__init__(message)
        self.reason = reason
        self.at_ms = at_ms


class OrderRefusedError(ClientError):
    """An order said to come from IT (a policy, a wipe order) was refused.

    It was not signed by the organisation's authority, was meant for another device,
    user or organisation, or is older than what the device enforces (a replay).  The
    device keeps enforcing what it had; the sentence says which rule failed.
    """


class PolicyViolationError(ClientError):
    """The organisation's policy does not allow this (a file too large, an old client)."""
