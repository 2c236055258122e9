"""The organisation's authority key: Ed25519, from ``cryptography``.

The authority signs device certificates and revocations (and, later, policies and audit
entries).  Its private half lives in its own file beside the database (mode 0600), never in
it, so a stolen database or backup cannot sign.  Devices pin the public half at activation
and believe nothing the authority did not sign.

Guarantee: ``verify_*`` returns a decoded object only if the exact bytes received carry a
valid signature under the pinned key for that object's domain; otherwise it raises
``CertificateError``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from strongroom import proto
from strongroom.errors import CertificateError, ConfigError, RemoteProtocolError

T = TypeVar("T")

__all__ = ["AuthorityKey", "AuthorityPublicKey"]


class AuthorityPublicKey:
    """The pinned public half: verifies what the authority signed."""

    def __init__(self, raw: bytes) -> None:
        if len(raw) != 32:
            raise CertificateError("an authority key is 32 bytes")
        self.raw = raw
        self._key = Ed25519PublicKey.from_public_bytes(raw)

    def fingerprint(self) -> str:
        """Hex groups a person can compare by eye: the first 16 bytes of SHA-256."""
        import hashlib

        digest = hashlib.sha256(self.raw).hexdigest()[:32]
        return " ".join(digest[i : i + 4] for i in range(0, 32, 4))

    def fingerprint_id(self) -> str:
        """The fingerprint without spaces: 32 hex digits, usable as a name."""
        return self.fingerprint().replace(" ", "")

    def _verify(self, domain: bytes, signed: proto.Signed) -> None:
        try:
            self._key.verify(signed.signature, proto.signing_input(domain, signed.body))
        except InvalidSignature as exc:
            raise CertificateError(
                "not signed by this organisation's authority"
            ) from exc

    def _verified(
        self,
        domain: bytes,
        signed: proto.Signed,
        decode: Callable[[bytes], T],
        what: str,
    ) -> T:
        """The object the authority signed, under ``domain``, as exactly these bytes.

        Raises ``CertificateError`` for a bad signature or bytes that do not decode.
        """
        self._verify(domain, signed)
        try:
            return decode(signed.body)
        except RemoteProtocolError as exc:
            raise CertificateError(f"signed {what} does not decode") from exc

    def verify_certificate(self, signed: proto.Signed) -> proto.DeviceCertificate:
        return self._verified(
            proto.DOMAIN_CERTIFICATE, signed, proto.decode_certificate, "certificate"
        )

    def verify_revocation(self, signed: proto.Signed) -> proto.Revocation:
        return self._verified(
            proto.DOMAIN_REVOCATION, signed, proto.decode_revocation, "revocation"
        )

    def verify_policy(self, signed: proto.Signed) -> proto.Policy:
        return self._verified(
            proto.DOMAIN_POLICY, signed, proto.decode_policy, "policy"
        )

    def verify_wipe_order(self, signed: proto.Signed) -> proto.WipeOrder:
        return self._verified(
            proto.DOMAIN_WIPE, signed, proto.decode_wipe_order, "wipe order"
        )

    def verify_user_disabled(self, signed: proto.Signed) -> proto.UserDisabled:
        return self._verified(
            proto.DOMAIN_USER_DISABLED,
            signed,
            proto.decode_user_disabled,
            "user-disabled record",
        )

    def verify_audit(self, signed: proto.Signed) -> proto.AuditEntry:
        return self._verified(
            proto.DOMAIN_AUDIT, signed, proto.decode_audit_entry, "audit entry"
        )


class AuthorityKey:
    """The private authority key.  Only the server process that owns the data dir holds it."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = AuthorityPublicKey(raw)

    @classmethod
    def generate(cls) -> AuthorityKey:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_pem(cls, data: bytes) -> AuthorityKey:
        """Raises ``ConfigError`` if ``data`` is not an Ed25519 private key in PEM."""
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                "the authority key file is not a PEM private key"
            ) from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise ConfigError("the authority key file does not hold an Ed25519 key")
        return cls(key)

    def to_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    def _sign(self, domain: bytes, body: bytes) -> proto.Signed:
        return proto.Signed(body, self._private.sign(proto.signing_input(domain, body)))

    def sign_certificate(self, cert: proto.DeviceCertificate) -> proto.Signed:
        return self._sign(proto.DOMAIN_CERTIFICATE, proto.encode(cert))

    def sign_revocation(self, revocation: proto.Revocation) -> proto.Signed:
        return self._sign(proto.DOMAIN_REVOCATION, proto.encode(revocation))

    def sign_policy(self, policy: proto.Policy) -> proto.Signed:
        return self._sign(proto.DOMAIN_POLICY, proto.encode(policy))

    def sign_wipe_order(self, order: proto.WipeOrder) -> proto.Signed:
        return self._sign(proto.DOMAIN_WIPE, proto.encode(order))

    def sign_user_disabled(self, record: proto.UserDisabled) -> proto.Signed:
        return self._sign(proto.DOMAIN_USER_DISABLED, proto.encode(record))

    def sign_audit(self, entry: proto.AuditEntry) -> proto.Signed:
        return self._sign(proto.DOMAIN_AUDIT, proto.encode(entry))
