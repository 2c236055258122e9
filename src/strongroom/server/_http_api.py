"""The HTTP API: activation, key directory, admin.  JSON in, JSON out, typed both ways.

Every handler reads its body through ``read_body`` (size limit) and ``proto.decode_json``
(schema); every refusal is an ``ApiRefusal`` that ``_app`` turns into an error body.
"""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from strongroom import crypto, proto
from strongroom.errors import (
    ActivationError,
    ConflictError,
    CryptoError,
    NotFoundError,
    RemoteProtocolError,
)

from ._auth import NonceCache, authenticate_admin, authenticate_device
from ._context import ServerContext
from ._errors import ApiRefusal
from .store import ActivationRow, DeviceRow, StoredKey

__all__ = ["Api", "iso", "read_body"]

T = TypeVar("T")
_E = proto.ErrorCode
Handler = Callable[[Request], Awaitable[Response]]


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    stamp = datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC)
    return stamp.isoformat(timespec="seconds").replace("+00:00", "Z")


async def read_body(request: Request, limit: int = proto.MAX_HTTP_BODY_BYTES) -> bytes:
    """The request body, refusing (413) before reading more than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise ApiRefusal(413, _E.FRAME_TOO_LARGE, f"request body over {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiRefusal(
                413, _E.FRAME_TOO_LARGE, f"request body over {limit} bytes"
            )
        chunks.append(chunk)
    return b"".join(chunks)


def json_response(
    obj: msgspec.Struct | list[msgspec.Struct], status: int = 200
) -> Response:
    return Response(proto.encode_json(obj), status, media_type="application/json")


def _to_stored(key: proto.OneTimeKey) -> StoredKey:
    return StoredKey(key.key_id, key.key, key.signature, key.fallback)


def _to_wire(key: StoredKey) -> proto.OneTimeKey:
    return proto.OneTimeKey(
        key_id=key.key_id, key=key.key, signature=key.signature, fallback=key.fallback
    )


_signed_decoder = msgspec.msgpack.Decoder(proto.Signed)


def device_entry(row: DeviceRow) -> proto.DeviceEntry:
    return proto.DeviceEntry(
        certificate=_signed_decoder.decode(row.certificate),
        revocation=None
        if row.revocation is None
        else _signed_decoder.decode(row.revocation),
    )


def device_info(row: DeviceRow) -> proto.DeviceInfo:
    return proto.DeviceInfo(
        device_id=row.device_id,
        user=row.user,
        name=row.name,
        created_at=iso(row.created_at) or "",
        last_seen=iso(row.last_seen),
        revoked_at=iso(row.revoked_at),
        ed25519=row.ed25519,
    )


class Api:
    """The HTTP handlers, bound to one server context."""

    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx
        self.nonces = NonceCache()

    # --- activation ---------------------------------------------------------------------

    async def activation_start(self, request: Request) -> Response:
        start = proto.decode_json(await read_body(request), proto.ActivationStart)
        ctx = self.ctx
        now = ctx.clock()
        code = await ctx.store.latest_code(start.user)
        # Whatever the state of the user's code, answer the same way: the outcome shows only
        # after the device has proven (or failed to prove) knowledge of a code.  This keeps
        # the endpoint from telling strangers which users have codes waiting.
        reason: str | None = None
        password = secrets.token_bytes(32)
        if code is None:
            reason = "none"
        elif code.state != "live":
            reason = code.state
        elif code.expires_at < now:
            reason = "expired"
        else:
            password = code.password
        server = crypto.ActivationServer(start.user, password)
        reply = server.start()
        try:
            server.finish(start.pake)
        except ActivationError as exc:
            raise ApiRefusal(400, _E.BAD_REQUEST, str(exc)) from exc
        session_id = secrets.token_urlsafe(24)
        await ctx.store.put_activation(
            ActivationRow(
                session_id=session_id,
                user=start.user,
                code_id=code.code_id if code is not None else None,
                shared=server.shared_key,
                expires_at=now + ctx.config.limits.activation_session_seconds * 1000,
                reason=reason,
            )
        )
        return json_response(proto.ActivationStarted(session=session_id, pake=reply))

    async def activation_finish(self, request: Request) -> Response:
        finish = proto.decode_json(await read_body(request), proto.ActivationFinish)
        ctx = self.ctx
        now = ctx.clock()
        session = await ctx.store.take_activation(finish.session, now)
        if session is None:
            raise ApiRefusal(
                403,
                _E.CODE_INVALID,
                "activation session unknown or expired: start again",
            )
        keys = crypto.ActivationKeys(session.shared)
        if not keys.check_confirm(finish.confirm):
            await self._wrong_code(session)
        if session.reason is not None or session.code_id is None:
            await self._dead_code(session.reason)
        code_id: str = session.code_id or ""
        try:
            registration = proto.decode_msgpack(
                keys.open_registration(finish.sealed),
                proto.ActivationRegistration,
                "registration",
            )
            crypto.verify_ed25519(
                registration.ed25519,
                proto.signing_input(proto.DOMAIN_REGISTRATION, keys.transcript_id),
                registration.proof,
            )
            device_id = crypto.device_id_for(registration.ed25519)
            offered = [*registration.one_time_keys]
            if registration.fallback is not None:
                offered.append(registration.fallback)
            for key in offered:
                crypto.verify_one_time_key(device_id, registration.ed25519, key)
        except (CryptoError, RemoteProtocolError) as exc:
            raise ApiRefusal(
                400, _E.BAD_REQUEST, "activation registration rejected"
            ) from exc
        name = registration.name or f"{session.user}'s device"
        certificate = proto.DeviceCertificate(
            org=ctx.config.organisation.name,
            user=session.user,
            device_id=device_id,
            ed25519=registration.ed25519,
            curve25519=registration.curve25519,
            name=name,
            issued_at=now,
        )
        signed = ctx.authority.sign_certificate(certificate)
        row = DeviceRow(
            device_id=device_id,
            user=session.user,
            name=name,
            ed25519=registration.ed25519,
            curve25519=registration.curve25519,
            certificate=proto.encode(signed),
            created_at=now,
            client_version=registration.client_version,
        )
        try:
            await ctx.store.add_device(
                row, code_id, now, [_to_stored(k) for k in offered]
            )
        except ConflictError as exc:
            raise ApiRefusal(
                403,
                _E.CODE_INVALID,
                "the activation code was used or withdrawn meanwhile",
            ) from exc
        ctx.metrics.activations.labels("ok").inc()
        grant = proto.ActivationGrant(
            org=ctx.config.organisation.name,
            authority_key=ctx.authority.public.raw,
            certificate=signed,
        )
        return json_response(
            proto.ActivationFinished(sealed=keys.seal_grant(proto.encode(grant)))
        )

    async def _wrong_code(self, session: ActivationRow) -> None:
        self.ctx.metrics.activations.labels("wrong_code").inc()
        if session.code_id is None or session.reason is not None:
            await self._dead_code(session.reason)
        tries = self.ctx.config.limits.code_tries
        code = await self.ctx.store.code_failed(session.code_id or "", tries)
        if code.state == "burned":
            raise ApiRefusal(
                403,
                _E.CODE_BURNED,
                f"wrong activation code {tries} times: the code is burned, ask IT for a new one",
                tries_left=0,
            )
        raise ApiRefusal(
            403,
            _E.CODE_INVALID,
            "wrong activation code",
            tries_left=tries - code.failures,
        )

    async def _dead_code(self, reason: str | None) -> None:
        if reason == "expired":
            raise ApiRefusal(
                403, _E.CODE_EXPIRED, "the activation code has expired: ask IT"
            )
        if reason == "burned":
            raise ApiRefusal(
                403, _E.CODE_BURNED, "the activation code is burned: ask IT"
            )
        raise ApiRefusal(
            403, _E.CODE_INVALID, "no activation code is waiting for this user"
        )

    # --- key directory ------------------------------------------------------------------

    async def _device(self, request: Request, body: bytes = b"") -> DeviceRow:
        return await authenticate_device(self.ctx, self.nonces, request, body)

    async def authority(self, request: Request) -> Response:
        return json_response(
            proto.AuthorityInfo(
                org=self.ctx.config.organisation.name,
                authority_key=self.ctx.authority.public.raw,
                version=proto.PROTOCOL_VERSION,
            )
        )

    async def user_keys(self, request: Request) -> Response:
        await self._device(request)
        user = request.path_params["user"]
        if not proto.valid_user_id(user) or await self.ctx.store.get_user(user) is None:
            raise ApiRefusal(
                404, _E.NOT_FOUND, f"no user {user!r} in this organisation"
            )
        rows = await self.ctx.store.list_devices(user)
        return json_response(
            proto.UserDevices(user=user, devices=[device_entry(r) for r in rows])
        )

    async def device_keys(self, request: Request) -> Response:
        await self._device(request)
        row = await self.ctx.store.get_device(request.path_params["device_id"])
        if row is None:
            raise ApiRefusal(404, _E.NOT_FOUND, "no such device")
        return json_response(device_entry(row))

    async def claim(self, request: Request) -> Response:
        body = await read_body(request)
        await self._device(request, body)
        claim = proto.decode_json(body, proto.ClaimRequest)
        keys: dict[str, proto.OneTimeKey] = {}
        for device_id in dict.fromkeys(claim.devices):
            key = await self.ctx.store.claim_key(device_id)
            if key is not None:
                keys[device_id] = _to_wire(key)
        return json_response(proto.ClaimResponse(keys=keys))

    async def upload(self, request: Request) -> Response:
        body = await read_body(request)
        device = await self._device(request, body)
        upload = proto.decode_json(body, proto.UploadKeys)
        offered = [*upload.one_time_keys]
        if upload.fallback is not None:
            offered.append(upload.fallback)
        try:
            for key in offered:
                crypto.verify_one_time_key(device.device_id, device.ed25519, key)
        except CryptoError as exc:
            raise ApiRefusal(
                400, _E.BAD_REQUEST, "a key is not signed by this device"
            ) from exc
        count = await self.ctx.store.add_keys(
            device.device_id, [_to_stored(k) for k in offered]
        )
        return json_response(proto.KeyCount(count=count))

    # --- groups ---------------------------------------------------------------------------
    #
    # The server keeps each group's chain linear and hands it out; it cannot judge an
    # entry (members' devices verify the chain), so it checks only what keeps the chain
    # usable: the entry parses, belongs to this group, and is signed by the device posting
    # it, which must be active.

    async def group_post(self, request: Request) -> Response:
        body = await read_body(request)
        device = await self._device(request, body)
        group = request.path_params["group"]
        post = proto.decode_json(body, proto.GroupPost)
        change = proto.decode_group_change(post.entry.body)
        if change.group != group:
            raise ApiRefusal(400, _E.BAD_REQUEST, "the entry belongs to another group")
        if change.author_device != device.device_id or change.author != device.user:
            raise ApiRefusal(
                403, _E.NOT_AUTHORIZED, "post only entries this device signed"
            )
        try:
            crypto.verify_ed25519(
                device.ed25519,
                proto.group_change_signing_input(post.entry.body),
                post.entry.signature,
            )
        except CryptoError as exc:
            raise ApiRefusal(
                400, _E.BAD_REQUEST, "the entry is not signed by this device"
            ) from exc
        try:
            await self.ctx.store.append_group_change(
                group,
                change.seq,
                change.prev,
                proto.encode(post.entry),
                proto.entry_hash(post.entry),
                self.ctx.clock(),
            )
        except ConflictError as exc:
            raise ApiRefusal(409, _E.CONFLICT, str(exc)) from exc
        return json_response(proto.GroupChanges(entries=[post.entry]))

    async def group_changes(self, request: Request) -> Response:
        await self._device(request)
        group = request.path_params["group"]
        if proto.GROUP_ID_RE.fullmatch(group) is None:
            raise ApiRefusal(404, _E.NOT_FOUND, "no such group")
        try:
            after = int(request.query_params.get("after", "-1"))
        except ValueError as exc:
            raise ApiRefusal(400, _E.BAD_REQUEST, "after must be a number") from exc
        limit = proto.MAX_CHAIN_BATCH
        rows = await self.ctx.store.group_changes(group, after, limit + 1)
        return json_response(
            proto.GroupChanges(
                entries=[_signed_decoder.decode(r.entry) for r in rows[:limit]],
                more=len(rows) > limit,
            )
        )

    # --- admin ----------------------------------------------------------------------------

    async def admin_users(self, request: Request) -> Response:
        authenticate_admin(self.ctx, request)
        store = self.ctx.store
        if request.method == "POST":
            add = proto.decode_json(await read_body(request), proto.UserAdd)
            try:
                row = await store.add_user(add.user, add.name, self.ctx.clock())
            except ConflictError as exc:
                raise ApiRefusal(
                    409, _E.CONFLICT, f"user {add.user!r} exists already"
                ) from exc
            return json_response(
                proto.UserInfo(row.user, row.name, iso(row.created_at) or "", 0)
            )
        devices = await store.list_devices()
        counts: dict[str, int] = {}
        for d in devices:
            if d.revoked_at is None:
                counts[d.user] = counts.get(d.user, 0) + 1
        users = await store.list_users()
        return json_response(
            [
                proto.UserInfo(
                    u.user, u.name, iso(u.created_at) or "", counts.get(u.user, 0)
                )
                for u in users
            ]
        )

    async def admin_code(self, request: Request) -> Response:
        authenticate_admin(self.ctx, request)
        user = request.path_params["user"]
        body = await read_body(request)
        ask = proto.decode_json(body or b"{}", proto.CodeRequest)
        code = crypto.generate_code()
        now = self.ctx.clock()
        ttl = ask.ttl_seconds or self.ctx.config.limits.code_ttl_seconds
        expires = now + ttl * 1000
        try:
            await self.ctx.store.add_code(
                secrets.token_urlsafe(12),
                user,
                crypto.code_password(code),
                now,
                expires,
            )
        except NotFoundError as exc:
            raise ApiRefusal(
                404, _E.NOT_FOUND, f"no user {user!r}: add the user first"
            ) from exc
        return json_response(
            proto.CodeIssued(user=user, code=code, expires_at=iso(expires) or "")
        )

    async def admin_devices(self, request: Request) -> Response:
        authenticate_admin(self.ctx, request)
        user = request.query_params.get("user")
        rows = await self.ctx.store.list_devices(user)
        return json_response([device_info(r) for r in rows])

    async def admin_revoke(self, request: Request) -> Response:
        authenticate_admin(self.ctx, request)
        device_id = request.path_params["device_id"]
        ctx = self.ctx
        existing = await ctx.store.get_device(device_id)
        if existing is None:
            raise ApiRefusal(404, _E.NOT_FOUND, f"no device {device_id!r}")
        now = ctx.clock()
        revocation = ctx.authority.sign_revocation(
            proto.Revocation(
                org=ctx.config.organisation.name, device_id=device_id, revoked_at=now
            )
        )
        row = await ctx.store.revoke_device(device_id, proto.encode(revocation), now)
        await ctx.bus.publish("revoked", [device_id])
        return json_response(device_info(row))
