"""The HTTP API: activation, key directory, admin.  JSON in, JSON out, typed both ways.

Every handler reads its body through ``read_body`` (size limit) and ``proto.decode_json``
(schema); every refusal is an ``ApiRefusal`` that ``_app`` turns into an error body.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from strongroom import crypto, proto
from strongroom.errors import (
    ActivationError,
    ConflictError,
    CryptoError,
    RemoteProtocolError,
)

from ._auth import NonceCache, authenticate_admin, authenticate_device
from ._context import ServerContext
from ._errors import ApiRefusal
from ._fleet import iso
from .store import ActivationRow, DeviceRow, StoredKey

__all__ = ["Api", "iso", "read_body"]

T = TypeVar("T")
_E = proto.ErrorCode


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
    obj: msgspec.Struct | Sequence[msgspec.Struct], status: int = 200
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
            await self.ctx.fleet.audit.record(
                "system",
                "activation.failed",
                session.user,
                {"reason": session.reason or "no code"},
            )
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
        await self._activation_allowed(session.user)
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
        await ctx.fleet.audit.record(
            f"device:{device_id}", "device.activate", session.user, {"name": name[:100]}
        )
        grant = proto.ActivationGrant(
            org=ctx.config.organisation.name,
            authority_key=ctx.authority.public.raw,
            certificate=signed,
        )
        return json_response(
            proto.ActivationFinished(sealed=keys.seal_grant(proto.encode(grant)))
        )

    async def _activation_allowed(self, user: str) -> None:
        """A disabled user gets no device; policy may cap devices per user."""
        ctx = self.ctx
        if await ctx.store.disabled_record(user) is not None:
            await ctx.fleet.audit.record(
                "system", "activation.refused", user, {"reason": "user disabled"}
            )
            raise ApiRefusal(403, _E.USER_DISABLED, "this user has been disabled by IT")
        cap = (await ctx.fleet.rules_for(user)).max_devices_per_user
        if cap is not None:
            active = [d for d in await ctx.store.list_devices(user) if not d.revoked_at]
            if len(active) >= cap:
                await ctx.fleet.audit.record(
                    "system", "activation.refused", user, {"reason": "device limit"}
                )
                raise ApiRefusal(
                    403,
                    _E.POLICY_VIOLATION,
                    f"the organisation's policy allows {cap} devices per user and "
                    f"{user} has {len(active)}: ask IT to revoke one first",
                )

    async def _wrong_code(self, session: ActivationRow) -> None:
        self.ctx.metrics.activations.labels("wrong_code").inc()
        await self.ctx.fleet.audit.record(
            "system", "activation.failed", session.user, {"reason": "wrong code"}
        )
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
        record = await self.ctx.store.disabled_record(user)
        return json_response(
            proto.UserDevices(
                user=user,
                devices=[device_entry(r) for r in rows],
                disabled=None if record is None else _signed(record),
            )
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
        if request.method == "POST":
            add = proto.decode_json(await read_body(request), proto.UserAdd)
            return json_response(
                await self.ctx.fleet.add_user(add.user, add.name, "admin")
            )
        return json_response(await self.ctx.fleet.users())

    async def admin_code(self, request: Request) -> Response:
        authenticate_admin(self.ctx, request)
        body = await read_body(request)
        ask = proto.decode_json(body or b"{}", proto.CodeRequest)
        issued = await self.ctx.fleet.issue_code(
            request.path_params["user"], ask.ttl_seconds, "admin"
        )
        return json_response(issued)

    async def admin_disable(self, request: Request) -> Response:
        authenticate_admin(self.ctx, request)
        user = request.path_params["user"]
        return json_response(await self.ctx.fleet.disable_user(user, "admin"))

    async def admin_devices(self, request: Request) -> Response:
        authenticate_admin(self.ctx, request)
        return json_response(
            await self.ctx.fleet.devices(request.query_params.get("user"))
        )

    async def admin_revoke(self, request: Request) -> Response:
        authenticate_admin(self.ctx, request)
        device_id = request.path_params["device_id"]
        return json_response(await self.ctx.fleet.revoke(device_id, "admin"))

    async def admin_wipe(self, request: Request) -> Response:
        authenticate_admin(self.ctx, request)
        device_id = request.path_params["device_id"]
        return json_response(await self.ctx.fleet.order_wipe(device_id, "admin"))

    async def admin_policy(self, request: Request) -> Response:
        authenticate_admin(self.ctx, request)
        fleet = self.ctx.fleet
        if request.method == "POST":
            change = proto.decode_json(await read_body(request), proto.PolicySet)
            return json_response(await fleet.set_policy(change, "admin"))
        return json_response(await fleet.policy_view(request.query_params.get("user")))

    async def admin_policy_history(self, request: Request) -> Response:
        authenticate_admin(self.ctx, request)
        return json_response(await self.ctx.fleet.policy_history())

    async def admin_audit(self, request: Request) -> Response:
        authenticate_admin(self.ctx, request)
        since = request.query_params.get("since")
        if since is not None and not since.isdigit():
            raise ApiRefusal(400, _E.BAD_REQUEST, "since is milliseconds since 1970")
        return json_response(
            await self.ctx.fleet.audit_entries(int(since) if since else None)
        )

    async def admin_audit_verify(self, request: Request) -> Response:
        authenticate_admin(self.ctx, request)
        count, problems = await self.ctx.fleet.audit.verify()
        return json_response(proto.AuditVerdict(entries=count, problems=problems))

    # --- a device's own view of IT's orders ----------------------------------------------

    async def policy(self, request: Request) -> Response:
        device = await self._device(request)
        signed = await self.ctx.fleet.signed_policy(device.user)
        return json_response(proto.PolicyFetch(None if signed is None else signed[1]))


def _signed(data: bytes) -> proto.Signed:
    return msgspec.msgpack.decode(data, type=proto.Signed)
