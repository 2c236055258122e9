"""Lawful-access escrow on the server: keep sealed copies, open requests, check
custodians' partials, release exactly the requested scopes (docs/lawful-access.md).

Rules:

1. The server never holds the escrow secret or a share: it keeps S, the commitments, the
   sealed copies and the ephemeral points.  With all of that and fewer than k partials it
   can open nothing.
2. A request names a user and UTC dates; its scopes are fixed when it is made (the
   conversation-days that user took part in) and partials are accepted for exactly those
   scopes' points.  A partial whose proof does not verify is refused and named.
3. Every step (ceremony, request, approval, refused partial, export) is audited, and the
   export carries a digest of the audit entries that authorised it.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from typing import TYPE_CHECKING

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from strongroom import proto
from strongroom.crypto import _escrow as escrow
from strongroom.errors import ConflictError, CryptoError

from ._auth import NonceCache, authenticate_admin, authenticate_device
from ._errors import ApiRefusal
from ._fleet import iso
from ._http_api import json_response, read_body

if TYPE_CHECKING:
    from ._context import ServerContext
    from .store import DeviceRow

__all__ = ["Escrow", "escrow_routes"]

_E = proto.ErrorCode


class _Stored(msgspec.Struct, frozen=True):
    """A request as kept: what was asked and the scopes fixed at that moment."""

    id: str
    user: str
    start: str
    end: str
    reason: str
    reference: str
    at: int
    scopes: list[proto.EscrowScope]


class Escrow:
    def __init__(self, ctx: ServerContext) -> None:
        self.ctx = ctx

    async def _setup(self) -> tuple[bytes, list[bytes], int, int, list[str], int]:
        row = await self.ctx.store.escrow_setup()
        if row is None:
            raise ApiRefusal(
                409,
                _E.CONFLICT,
                "escrow is not set up: run `strongroom admin escrow init` first",
            )
        public, commitments, n, k, hashes, at = row
        return (
            public,
            msgspec.msgpack.decode(commitments, type=list[bytes]),
            n,
            k,
            json.loads(hashes),
            at,
        )

    async def public_key(self) -> bytes | None:
        row = await self.ctx.store.escrow_setup()
        return None if row is None else row[0]

    # --- ceremony ----------------------------------------------------------------------

    async def set_up(self, setup: proto.EscrowSetup, actor: str) -> proto.EscrowStatus:
        if not 1 <= setup.threshold <= setup.custodians:
            raise ApiRefusal(400, _E.BAD_REQUEST, "the threshold must be 1..custodians")
        if len(setup.commitments) != setup.threshold or (
            setup.commitments[0] != setup.public
        ):
            raise ApiRefusal(
                400,
                _E.BAD_REQUEST,
                "the commitments do not match the threshold and key",
            )
        if len(setup.token_hashes) != setup.custodians:
            raise ApiRefusal(400, _E.BAD_REQUEST, "one token hash per custodian")
        try:
            for i in range(1, setup.custodians + 1):
                escrow.share_public(setup.commitments, i)
        except CryptoError as exc:
            raise ApiRefusal(400, _E.BAD_REQUEST, str(exc)) from exc
        try:
            await self.ctx.store.put_escrow_setup(
                setup.public,
                msgspec.msgpack.encode(setup.commitments),
                setup.custodians,
                setup.threshold,
                json.dumps(setup.token_hashes),
                self.ctx.clock(),
            )
        except ConflictError as exc:
            raise ApiRefusal(
                409,
                _E.CONFLICT,
                "escrow was set up already; a second ceremony is refused",
            ) from exc
        await self.ctx.fleet.audit.record(
            actor,
            "escrow.ceremony",
            "escrow",
            {
                "custodians": str(setup.custodians),
                "threshold": str(setup.threshold),
                "public": setup.public.hex(),
            },
        )
        return await self.status()

    async def status(self) -> proto.EscrowStatus:
        row = await self.ctx.store.escrow_setup()
        if row is None:
            return proto.EscrowStatus(set_up=False)
        public, commitments, n, k, _, at = row
        return proto.EscrowStatus(
            set_up=True,
            custodians=n,
            threshold=k,
            public=public,
            commitments=msgspec.msgpack.decode(commitments, type=list[bytes]),
            at=iso(at),
        )

    # --- devices -----------------------------------------------------------------------

    async def accept_copies(
        self, device: DeviceRow, upload: proto.EscrowUpload
    ) -> None:
        for copy in upload.copies:
            if (
                copy.conversation.startswith("dm:")
                and device.user not in (copy.conversation.split(":")[1:])
            ):
                raise ApiRefusal(
                    400, _E.BAD_REQUEST, "a copy names a conversation you are not in"
                )
            await self.ctx.store.add_escrow_copy(
                device.device_id,
                device.user,
                copy.message_id,
                copy.conversation,
                copy.day,
                copy.ephemeral,
                copy.sealed,
                copy.members,
                self.ctx.clock(),
            )

    # --- requests ----------------------------------------------------------------------

    async def request(
        self, ask: proto.EscrowRequestAsk, actor: str
    ) -> proto.EscrowRequestView:
        await self._setup()
        if ask.end < ask.start:
            raise ApiRefusal(400, _E.BAD_REQUEST, "the end date is before the start")
        if await self.ctx.store.get_user(ask.user) is None:
            raise ApiRefusal(404, _E.NOT_FOUND, f"no user {ask.user!r}")
        scopes = [
            proto.EscrowScope(conversation, day, copies)
            for conversation, day, copies in await self.ctx.store.escrow_scopes(
                ask.user, ask.start, ask.end
            )
        ]
        stored = _Stored(
            id=secrets.token_hex(8),
            user=ask.user,
            start=ask.start,
            end=ask.end,
            reason=ask.reason,
            reference=ask.reference,
            at=self.ctx.clock(),
            scopes=scopes,
        )
        await self.ctx.store.put_escrow_request(
            stored.id, msgspec.msgpack.encode(stored), stored.at
        )
        await self.ctx.fleet.audit.record(
            actor,
            "escrow.request",
            stored.id,
            {
                "user": ask.user,
                "from": ask.start,
                "to": ask.end,
                "reason": ask.reason[:200],
                "reference": ask.reference,
                "scopes": str(len(scopes)),
            },
        )
        return await self.view(stored.id)

    async def _stored(self, request_id: str) -> _Stored:
        body = await self.ctx.store.escrow_request(request_id)
        if body is None:
            raise ApiRefusal(404, _E.NOT_FOUND, f"no escrow request {request_id!r}")
        return msgspec.msgpack.decode(body, type=_Stored)

    async def view(self, request_id: str) -> proto.EscrowRequestView:
        stored = await self._stored(request_id)
        _, _, _, k, _, _ = await self._setup()
        approvals = sorted(await self.ctx.store.partials(request_id))
        return proto.EscrowRequestView(
            id=stored.id,
            user=stored.user,
            start=stored.start,
            end=stored.end,
            reason=stored.reason,
            reference=stored.reference,
            created_at=iso(stored.at) or "",
            scopes=stored.scopes,
            approvals=approvals,
            threshold=k,
            state="released" if len(approvals) >= k else "waiting",
        )

    async def requests(self) -> list[proto.EscrowRequestView]:
        bodies = await self.ctx.store.escrow_requests()
        return [
            await self.view(msgspec.msgpack.decode(b, type=_Stored).id) for b in bodies
        ]

    # --- custodians --------------------------------------------------------------------

    async def custodian(self, request: Request) -> int:
        """The custodian index an ``authorization: Custodian <i> <token>`` proves."""
        _, _, n, _, hashes, _ = await self._setup()
        scheme, _, rest = request.headers.get("authorization", "").partition(" ")
        index_text, _, token = rest.strip().partition(" ")
        if scheme != "Custodian" or not index_text.isdigit() or not token:
            raise ApiRefusal(401, _E.NOT_AUTHORIZED, "this endpoint needs a custodian")
        index = int(index_text)
        offered = hashlib.sha256(token.strip().encode()).hexdigest()
        if not 1 <= index <= n or not hmac.compare_digest(offered, hashes[index - 1]):
            raise ApiRefusal(401, _E.NOT_AUTHORIZED, "not a custodian of this escrow")
        return index

    async def task(self, request_id: str) -> proto.CustodianTask:
        stored = await self._stored(request_id)
        org = self.ctx.config.organisation.name
        items = []
        for scope in stored.scopes:
            copies = await self.ctx.store.escrow_copies(scope.conversation, scope.day)
            points = sorted({c[3] for c in copies})
            items.append(
                proto.TaskItem(
                    conversation=scope.conversation,
                    day=scope.day,
                    h=escrow.scope_scalar(org, scope.conversation, scope.day),
                    ephemerals=points,
                )
            )
        return proto.CustodianTask(await self.view(request_id), org, items)

    async def accept_partials(
        self, request_id: str, index: int, post: proto.PartialsPost
    ) -> proto.EscrowRequestView:
        if post.index != index:
            raise ApiRefusal(403, _E.NOT_AUTHORIZED, "partials for another custodian")
        _, commitments, _, _, _, _ = await self._setup()
        task = await self.task(request_id)
        wanted = {
            (item.conversation, item.day, e): item.h
            for item in task.items
            for e in item.ephemerals
        }
        given = {(p.conversation, p.day, p.ephemeral): p for p in post.partials}
        outside = set(given) - set(wanted)
        if outside:
            conversation, day, _ = sorted(outside)[0]
            raise ApiRefusal(
                400,
                _E.BAD_REQUEST,
                f"a partial for {conversation} on {day} is outside this request",
            )
        for key, h in sorted(wanted.items()):
            item = given.get(key)
            where = f"{key[0]} on {key[1]}"
            if item is None:
                raise ApiRefusal(
                    400,
                    _E.BAD_REQUEST,
                    f"custodian {index} sent no partial for {where}",
                )
            partial = escrow.Partial(index, item.ephemeral, item.value, item.c, item.z)
            if not escrow.verify_partial(partial, commitments, h):
                await self.ctx.fleet.audit.record(
                    f"custodian:{index}",
                    "escrow.partial_rejected",
                    request_id,
                    {"scope": where[:200]},
                )
                raise ApiRefusal(
                    400,
                    _E.BAD_REQUEST,
                    f"custodian {index}'s partial for {where} does not verify: refused",
                )
        try:
            await self.ctx.store.put_partials(
                request_id, index, msgspec.msgpack.encode(post), self.ctx.clock()
            )
        except ConflictError as exc:
            raise ApiRefusal(
                409, _E.CONFLICT, f"custodian {index} approved this request already"
            ) from exc
        await self.ctx.fleet.audit.record(
            f"custodian:{index}",
            "escrow.approve",
            request_id,
            {"partials": str(len(post.partials))},
        )
        return await self.view(request_id)

    # --- release -----------------------------------------------------------------------

    async def export(self, request_id: str, actor: str) -> proto.EscrowExport:
        view = await self.view(request_id)
        if len(view.approvals) < view.threshold:
            raise ApiRefusal(
                403,
                _E.NOT_AUTHORIZED,
                f"request {request_id} has {len(view.approvals)} of the "
                f"{view.threshold} custodian approvals it needs: nothing is opened",
            )
        posts = {
            i: msgspec.msgpack.decode(body, type=proto.PartialsPost)
            for i, body in (await self.ctx.store.partials(request_id)).items()
        }
        chosen = sorted(posts)[: view.threshold]
        org = self.ctx.config.organisation.name
        messages: list[proto.EscrowMessage] = []
        unopened = 0
        for scope in view.scopes:
            h = escrow.scope_scalar(org, scope.conversation, scope.day)
            keys: dict[bytes, bytes] = {}
            for copy in await self.ctx.store.escrow_copies(
                scope.conversation, scope.day
            ):
                sender, _, message_id, ephemeral, sealed = copy
                if ephemeral not in keys:
                    parts = [
                        escrow.Partial(i, p.ephemeral, p.value, p.c, p.z)
                        for i in chosen
                        for p in posts[i].partials
                        if (p.conversation, p.day, p.ephemeral)
                        == (scope.conversation, scope.day, ephemeral)
                    ]
                    if len(parts) < view.threshold:
                        unopened += 1  # a copy that arrived after the approvals
                        continue
                    keys[ephemeral] = escrow.combine(parts, h)
                try:
                    content = msgspec.msgpack.decode(
                        escrow.open_copy(
                            keys[ephemeral], escrow.copy_aad(sender, message_id), sealed
                        ),
                        type=proto.SealedContent,
                    )
                except (CryptoError, msgspec.DecodeError):
                    unopened += 1
                    continue
                if content.conversation != scope.conversation:
                    unopened += 1
                    continue
                messages.append(_message(scope, content))
        entries = [
            v
            for v in await self.ctx.fleet.audit_entries()
            if v.subject == request_id
            and v.action in ("escrow.request", "escrow.approve")
        ]
        digest = hashlib.sha256(b"".join(bytes.fromhex(v.hash) for v in entries))
        await self.ctx.fleet.audit.record(
            actor,
            "escrow.export",
            request_id,
            {"messages": str(len(messages)), "authorised_by": digest.hexdigest()},
        )
        return proto.EscrowExport(
            request=view,
            messages=messages,
            audit_digest=digest.hexdigest(),
            audit_entries=[v.seq for v in entries],
            unopened=unopened,
        )


def _message(scope: proto.EscrowScope, c: proto.SealedContent) -> proto.EscrowMessage:
    return proto.EscrowMessage(
        conversation=scope.conversation,
        day=scope.day,
        from_user=c.from_user,
        from_device=c.from_device,
        message_id=c.message_id.hex(),
        sent_at=iso(c.sent_at) or "",
        kind=c.kind,
        text=c.text,
        target=c.target.hex() if c.target else None,
        file_name=c.file_name,
        file_size=c.file_size,
    )


def escrow_routes(ctx: ServerContext, nonces: NonceCache) -> list[Route]:
    """The escrow endpoints: devices upload, the admin asks and exports, custodians
    fetch their task and answer."""
    es = ctx.escrow

    async def copies(request: Request) -> Response:
        body = await read_body(request)
        device = await authenticate_device(ctx, nonces, request, body)
        await es.accept_copies(device, proto.decode_json(body, proto.EscrowUpload))
        return json_response(proto.EscrowStatus(set_up=True))

    async def setup(request: Request) -> Response:
        authenticate_admin(ctx, request)
        if request.method == "POST":
            body = proto.decode_json(await read_body(request), proto.EscrowSetup)
            return json_response(await es.set_up(body, "admin"))
        return json_response(await es.status())

    async def requests(request: Request) -> Response:
        authenticate_admin(ctx, request)
        if request.method == "POST":
            ask = proto.decode_json(await read_body(request), proto.EscrowRequestAsk)
            return json_response(await es.request(ask, "admin"))
        return json_response(await es.requests())

    async def one(request: Request) -> Response:
        authenticate_admin(ctx, request)
        return json_response(await es.view(request.path_params["id"]))

    async def export(request: Request) -> Response:
        authenticate_admin(ctx, request)
        return json_response(await es.export(request.path_params["id"], "admin"))

    async def task(request: Request) -> Response:
        await es.custodian(request)
        return json_response(await es.task(request.path_params["id"]))

    async def partials(request: Request) -> Response:
        index = await es.custodian(request)
        post = proto.decode_json(
            await read_body(request, 16 * 1024 * 1024), proto.PartialsPost
        )
        return json_response(
            await es.accept_partials(request.path_params["id"], index, post)
        )

    return [
        Route("/v1/escrow/copies", copies, methods=["POST"]),
        Route("/v1/escrow/requests/{id}", task),
        Route("/v1/escrow/requests/{id}/partials", partials, methods=["POST"]),
        Route("/v1/admin/escrow", setup, methods=["GET", "POST"]),
        Route("/v1/admin/escrow/requests", requests, methods=["GET", "POST"]),
        Route("/v1/admin/escrow/requests/{id}", one),
        Route("/v1/admin/escrow/requests/{id}/export", export),
    ]
