"""The organisation's authority key: certificates, revocations, PEM and fingerprints."""

from __future__ import annotations

import hashlib
import re

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed448 import Ed448PrivateKey
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from strongroom import crypto, proto
from strongroom.errors import CertificateError, ConfigError

TAMPER = settings(max_examples=100, deadline=None)

AUTHORITY = crypto.AuthorityKey.generate()
OTHER_AUTHORITY = crypto.AuthorityKey.generate()
DEVICE = crypto.DeviceAccount.generate()

CERT = proto.DeviceCertificate(
    org="Test Ministry",
    user="alice",
    device_id=DEVICE.device_id,
    ed25519=DEVICE.ed25519,
    curve25519=DEVICE.curve25519,
    name="phone",
    issued_at=1_700_000_000,
)
REVOCATION = proto.Revocation(
    org="Test Ministry",
    device_id=DEVICE.device_id,
    revoked_at=1_700_000_100,
    reason="lost",
)
SIGNED_CERT = AUTHORITY.sign_certificate(CERT)
SIGNED_REVOCATION = AUTHORITY.sign_revocation(REVOCATION)


def _private(key: crypto.AuthorityKey) -> Ed25519PrivateKey:
    """The raw private key, recovered through the public PEM export."""
    loaded = serialization.load_pem_private_key(key.to_pem(), password=None)
    assert isinstance(loaded, Ed25519PrivateKey)
    return loaded


def _flip(data: bytes, index: int, mask: int) -> bytes:
    return data[:index] + bytes([data[index] ^ mask]) + data[index + 1 :]


# --- round trips ------------------------------------------------------------------


def test_certificate_round_trip() -> None:
    assert AUTHORITY.public.verify_certificate(SIGNED_CERT) == CERT
    assert SIGNED_CERT.body == proto.encode(CERT)
    assert len(SIGNED_CERT.signature) == 64


def test_revocation_round_trip() -> None:
    assert AUTHORITY.public.verify_revocation(SIGNED_REVOCATION) == REVOCATION
    assert SIGNED_REVOCATION.body == proto.encode(REVOCATION)


def test_signature_covers_domain_zero_byte_body() -> None:
    # Checked with cryptography directly, not through strongroom's own helper.
    public = Ed25519PublicKey.from_public_bytes(AUTHORITY.public.raw)
    public.verify(
        SIGNED_CERT.signature,
        b"strongroom/v1/device-certificate\x00" + SIGNED_CERT.body,
    )
    public.verify(
        SIGNED_REVOCATION.signature,
        b"strongroom/v1/device-revocation\x00" + SIGNED_REVOCATION.body,
    )


def test_signed_objects_survive_the_wire() -> None:
    entry = proto.DeviceEntry(certificate=SIGNED_CERT, revocation=SIGNED_REVOCATION)
    decoded = proto.decode_json(proto.encode_json(entry), proto.DeviceEntry)
    assert decoded.revocation is not None
    assert AUTHORITY.public.verify_certificate(decoded.certificate) == CERT
    assert AUTHORITY.public.verify_revocation(decoded.revocation) == REVOCATION


# --- what must not verify ---------------------------------------------------------


@TAMPER
@given(data=st.data())
def test_tampered_certificate_is_refused(data: st.DataObject) -> None:
    blob = SIGNED_CERT.body + SIGNED_CERT.signature
    index = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    mask = data.draw(st.integers(min_value=1, max_value=255))
    tampered = _flip(blob, index, mask)
    split = len(SIGNED_CERT.body)
    signed = proto.Signed(body=tampered[:split], signature=tampered[split:])
    with pytest.raises(CertificateError):
        AUTHORITY.public.verify_certificate(signed)


@TAMPER
@given(data=st.data())
def test_tampered_revocation_is_refused(data: st.DataObject) -> None:
    blob = SIGNED_REVOCATION.body + SIGNED_REVOCATION.signature
    index = data.draw(st.integers(min_value=0, max_value=len(blob) - 1))
    mask = data.draw(st.integers(min_value=1, max_value=255))
    tampered = _flip(blob, index, mask)
    split = len(SIGNED_REVOCATION.body)
    signed = proto.Signed(body=tampered[:split], signature=tampered[split:])
    with pytest.raises(CertificateError):
        AUTHORITY.public.verify_revocation(signed)


def test_another_authority_is_refused() -> None:
    with pytest.raises(CertificateError):
        OTHER_AUTHORITY.public.verify_certificate(SIGNED_CERT)
    with pytest.raises(CertificateError):
        OTHER_AUTHORITY.public.verify_revocation(SIGNED_REVOCATION)
    forged = OTHER_AUTHORITY.sign_certificate(CERT)
    assert forged.body == SIGNED_CERT.body
    with pytest.raises(CertificateError):
        AUTHORITY.public.verify_certificate(forged)


def test_certificate_signature_is_not_a_revocation_signature() -> None:
    # Domain separation: the same key and the same bytes, signed for another purpose.
    # The body is a valid revocation, so only the domain can make this fail.
    as_certificate = _private(AUTHORITY).sign(
        proto.signing_input(proto.DOMAIN_CERTIFICATE, SIGNED_REVOCATION.body)
    )
    with pytest.raises(CertificateError) as info:
        AUTHORITY.public.verify_revocation(
            proto.Signed(body=SIGNED_REVOCATION.body, signature=as_certificate)
        )
    assert isinstance(info.value.__cause__, InvalidSignature)


def test_revocation_signature_is_not_a_certificate_signature() -> None:
    as_revocation = _private(AUTHORITY).sign(
        proto.signing_input(proto.DOMAIN_REVOCATION, SIGNED_CERT.body)
    )
    with pytest.raises(CertificateError) as info:
        AUTHORITY.public.verify_certificate(
            proto.Signed(body=SIGNED_CERT.body, signature=as_revocation)
        )
    assert isinstance(info.value.__cause__, InvalidSignature)


def test_signed_certificate_presented_as_revocation_is_refused() -> None:
    with pytest.raises(CertificateError):
        AUTHORITY.public.verify_revocation(SIGNED_CERT)
    with pytest.raises(CertificateError):
        AUTHORITY.public.verify_certificate(SIGNED_REVOCATION)


@pytest.mark.parametrize(
    "domain",
    [proto.DOMAIN_HELLO, proto.DOMAIN_HTTP, proto.DOMAIN_ONE_TIME_KEY, b""],
    ids=["hello", "http", "one-time-key", "no-domain"],
)
def test_other_domains_do_not_make_a_certificate(domain: bytes) -> None:
    signature = _private(AUTHORITY).sign(proto.signing_input(domain, SIGNED_CERT.body))
    with pytest.raises(CertificateError):
        AUTHORITY.public.verify_certificate(
            proto.Signed(body=SIGNED_CERT.body, signature=signature)
        )


def test_signed_garbage_is_refused() -> None:
    body = b"\x81\xa4type\xa5bogus"
    signature = _private(AUTHORITY).sign(
        proto.signing_input(proto.DOMAIN_CERTIFICATE, body)
    )
    with pytest.raises(CertificateError):
        AUTHORITY.public.verify_certificate(proto.Signed(body, signature))


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_public_key_must_be_32_bytes(length: int) -> None:
    with pytest.raises(CertificateError):
        crypto.AuthorityPublicKey(bytes(length))


# --- PEM and fingerprint ----------------------------------------------------------


def test_pem_round_trip() -> None:
    pem = AUTHORITY.to_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    loaded = crypto.AuthorityKey.from_pem(pem)
    assert loaded.public.raw == AUTHORITY.public.raw
    assert loaded.to_pem() == pem
    # the loaded key signs what the original public key verifies
    assert AUTHORITY.public.verify_certificate(loaded.sign_certificate(CERT)) == CERT


@pytest.mark.parametrize(
    "pem",
    [
        b"",
        b"not a key",
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    ],
    ids=["empty", "text", "broken-pem"],
)
def test_from_pem_refuses_garbage(pem: bytes) -> None:
    with pytest.raises(ConfigError):
        crypto.AuthorityKey.from_pem(pem)


def test_from_pem_refuses_a_key_of_another_kind() -> None:
    pem = Ed448PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    with pytest.raises(ConfigError):
        crypto.AuthorityKey.from_pem(pem)


def test_fingerprint_is_stable_and_has_eight_groups() -> None:
    fingerprint = AUTHORITY.public.fingerprint()
    assert re.fullmatch(r"[0-9a-f]{4}( [0-9a-f]{4}){7}", fingerprint)
    assert fingerprint.split() == [
        hashlib.sha256(AUTHORITY.public.raw).hexdigest()[i : i + 4]
        for i in range(0, 32, 4)
    ]
    assert AUTHORITY.public.fingerprint() == fingerprint
    assert crypto.AuthorityKey.from_pem(AUTHORITY.to_pem()).public.fingerprint() == (
        fingerprint
    )
    assert crypto.AuthorityPublicKey(AUTHORITY.public.raw).fingerprint() == fingerprint
    assert OTHER_AUTHORITY.public.fingerprint() != fingerprint
