"""Activating a device: the PAKE over HTTP, pinning the authority, storing the identity.

The activation code is used only as SPAKE2 input on this machine; the bytes that leave are
SPAKE2 messages, a key confirmation and AEAD ciphertext (see ``crypto._pake``).  A failed
activation leaves the device home as it was, so the user can simply try again.
"""

from __future__ import annotations

import shutil
import ssl
from pathlib import Path

import httpx
import msgspec

from strongroom import crypto, proto
from strongroom.errors import (
    ActivationError,
    ClientError,
    CryptoError,
    RemoteProtocolError,
)

from ._client import CLIENT_VERSION, http_error, tls_context, wall_clock_ms
from ._store import LocalStore

__all__ = ["ActivatedDevice", "activate"]


class ActivatedDevice(msgspec.Struct, frozen=True):
    device_id: str
    user: str
    org: str
    authority_fingerprint: str
    ed25519: str
    curve25519: str


async def _post(http: httpx.AsyncClient, path: str, body: msgspec.Struct) -> bytes:
    try:
        response = await http.post(
            path,
            content=proto.encode_json(body),
            headers={"content-type": "application/json"},
        )
    except httpx.HTTPError as exc:
        raise ClientError(f"cannot reach the server at {http.base_url}") from exc
    if response.status_code != 200:
        error = http_error(response)
        if error.code in ("code_invalid", "code_burned", "code_expired"):
            try:
                tries = msgspec.json.decode(
                    response.content, type=proto.ErrorBody
                ).tries_left
            except proto.DECODE_ERRORS:
                tries = None
            message = str(error)
            if tries:
                message += f" ({tries} {'try' if tries == 1 else 'tries'} left)"
            raise ActivationError(message, tries) from error
        raise error
    return response.content


async def activate(
    home: Path,
    server_url: str,
    user: str,
    code: str,
    name: str = "",
    ca: str | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> ActivatedDevice:
    """Activate a new device in ``home``.

    Raises ``ActivationError`` (wrong, burned or expired code), ``ConfigError`` (``home``
    already holds a device), ``ClientError`` (server unreachable or refusing).
    """
    if not proto.valid_user_id(user):
        raise ClientError(f"{user!r} is not a valid user id")
    pake = crypto.ActivationClient(user, code)  # checks the code's shape before any I/O
    server_url = server_url.rstrip("/")
    context: ssl.SSLContext | None = tls_context(ca)
    created = not home.exists()
    store = LocalStore.create(home)
    try:
        async with httpx.AsyncClient(
            base_url=server_url,
            timeout=30.0,
            verify=context or True,
            transport=transport,
        ) as http:
            result = await _run(http, store, server_url, user, pake, name)
        if ca:
            with store.transaction():
                store.set_meta("ca", str(Path(ca).resolve()).encode())
        return result
    except BaseException:
        store.close()
        for leftover in ("device.key", "device.db", "device.db-wal", "device.db-shm"):
            (home / leftover).unlink(missing_ok=True)
        if created:
            shutil.rmtree(home, ignore_errors=True)
        raise
    finally:
        store.close()


async def _run(
    http: httpx.AsyncClient,
    store: LocalStore,
    server_url: str,
    user: str,
    pake: crypto.ActivationClient,
    name: str,
) -> ActivatedDevice:
    account = crypto.DeviceAccount.generate()
    keys = account.new_one_time_keys(50)
    fallback = account.new_fallback_key()
    started = proto.decode_json(
        await _post(
            http, "/v1/activation/start", proto.ActivationStart(user, pake.start())
        ),
        proto.ActivationStarted,
    )
    pake.finish(started.pake)
    registration = proto.ActivationRegistration(
        ed25519=account.ed25519,
        curve25519=account.curve25519,
        name=name,
        one_time_keys=keys,
        fallback=fallback,
        proof=account.sign(
            proto.signing_input(proto.DOMAIN_REGISTRATION, pake.transcript_id)
        ),
        client_version=CLIENT_VERSION,
    )
    finish = proto.ActivationFinish(
        session=started.session,
        confirm=pake.confirm,
        sealed=pake.seal(proto.encode(registration)),
    )
    finished = proto.decode_json(
        await _post(http, "/v1/activation/finish", finish), proto.ActivationFinished
    )
    try:
        grant = proto.decode_msgpack(
            pake.open_grant(finished.sealed), proto.ActivationGrant, "grant"
        )
        authority = crypto.AuthorityPublicKey(grant.authority_key)
        cert = authority.verify_certificate(grant.certificate)
    except (CryptoError, RemoteProtocolError) as exc:
        raise ActivationError(
            "the server's answer did not verify: activation aborted"
        ) from exc
    if (
        cert.ed25519 != account.ed25519
        or cert.curve25519 != account.curve25519
        or cert.user != user
        or cert.org != grant.org
        or cert.device_id != account.device_id
    ):
        raise ActivationError(
            "the certificate does not match this device: activation aborted"
        )
    with store.transaction():
        for key, value in (
            ("device_id", cert.device_id),
            ("user", user),
            ("org", grant.org),
            ("server_url", server_url),
            ("device_name", cert.name),
            ("activated_at", str(wall_clock_ms())),
        ):
            store.set_meta(key, value.encode())
        store.set_meta("authority_key", grant.authority_key)
        store.set_meta("certificate", proto.encode(grant.certificate))
        store.set_meta("account", account.pickle(store.pickle_key).encode())
    return ActivatedDevice(
        device_id=cert.device_id,
        user=user,
        org=grant.org,
        authority_fingerprint=authority.fingerprint(),
        ed25519=account.ed25519,
        curve25519=account.curve25519,
    )
