"""Who is asking: devices sign each HTTP request; the admin presents the admin credential.

Device requests carry four headers and a signature by the device's Ed25519 key over
``proto.http_signing_input`` (method, path and query, device id, time, nonce, body hash).
The server accepts a time within ``MAX_SKEW_MS`` of its own and each nonce once within that
window, so a captured request cannot be replayed.  There are no device bearer tokens.

The admin credential is a random token kept in the data directory; the server compares its
SHA-256 with the configured hash in constant time.  Device signatures are not accepted on
admin endpoints, nor the admin token on device endpoints.
"""

from __future__ import annotations

import hashlib
import hmac
import time

from starlette.requests import Request

from strongroom import proto
from strongroom.crypto import b64decode, verify_ed25519
from strongroom.errors import CryptoError

from ._context import ServerContext
from ._errors import ApiRefusal
from .store import DeviceRow

__all__ = ["MAX_SKEW_MS", "NonceCache", "authenticate_admin", "authenticate_device"]

MAX_SKEW_MS = 300_000
_E = proto.ErrorCode


class NonceCache:
    """Nonces seen within the replay window (per server process)."""

    def __init__(self) -> None:
        self._seen: dict[str, float] = {}

    def use(self, nonce: str) -> bool:
        now = time.monotonic()
        if len(self._seen) > 10_000:
            self._seen = {n: t for n, t in self._seen.items() if t > now}
        if self._seen.get(nonce, 0.0) > now:
            return False
        self._seen[nonce] = now + 2 * MAX_SKEW_MS / 1000
        return True


def _refuse(detail: str) -> ApiRefusal:
    return ApiRefusal(401, _E.AUTH_FAILED, detail)


async def authenticate_device(
    ctx: ServerContext, nonces: NonceCache, request: Request, body: bytes
) -> DeviceRow:
    """Returns the signing device, or raises ``ApiRefusal``."""
    headers = request.headers
    device_id = headers.get("strongroom-device")
    stamp = headers.get("strongroom-time", "")
    nonce = headers.get("strongroom-nonce", "")
    signature = headers.get("strongroom-signature", "")
    if not device_id or not stamp or not nonce or not signature:
        raise _refuse("this endpoint needs a device signature")
    if not proto.valid_device_id(device_id) or not stamp.isdigit() or len(nonce) > 64:
        raise _refuse("malformed device signature headers")
    if abs(int(stamp) - ctx.clock()) > MAX_SKEW_MS:
        raise _refuse("request time is too far from the server's clock")
    device = await ctx.store.get_device(device_id)
    if device is None:
        raise _refuse("unknown device")
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    message = proto.http_signing_input(
        request.method, target, device_id, stamp, nonce, body
    )
    try:
        verify_ed25519(device.ed25519, message, b64decode(signature))
    except CryptoError as exc:
        raise _refuse("device signature does not verify") from exc
    if device.revoked_at is not None:
        raise ApiRefusal(403, _E.DEVICE_REVOKED, "this device has been revoked by IT")
    if not nonces.use(nonce):
        raise _refuse("replayed request")
    return device


def authenticate_admin(ctx: ServerContext, request: Request) -> None:
    """Raises ``ApiRefusal`` unless the request carries the admin credential."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise ApiRefusal(
            401, _E.NOT_AUTHORIZED, "this endpoint needs the admin credential"
        )
    offered = hashlib.sha256(token.strip().encode()).hexdigest()
    if not hmac.compare_digest(offered, ctx.config.admin.token_sha256):
        raise ApiRefusal(401, _E.NOT_AUTHORIZED, "wrong admin credential")
