"""The ASGI application, wired explicitly: ``create_app(ctx)``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from strongroom import proto
from strongroom.errors import ProtocolError, StoreError

from ._blobs import BlobApi
from ._console import console_mount
from ._context import ServerContext
from ._directory import directory_route
from ._errors import ApiRefusal
from ._escrow import escrow_routes
from ._http_api import Api
from ._stream import StreamHandler

__all__ = ["create_app"]

log = logging.getLogger("strongroom.server")


def _error(
    status: int, code: str, detail: str, tries_left: int | None = None
) -> Response:
    body = proto.ErrorBody(code=code, detail=detail, tries_left=tries_left)
    return Response(proto.encode_json(body), status, media_type="application/json")


async def _on_refusal(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiRefusal)
    return Response(
        proto.encode_json(exc.body), exc.status, media_type="application/json"
    )


async def _on_protocol_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ProtocolError)
    return _error(400, exc.code, str(exc))


async def _on_store_error(request: Request, exc: Exception) -> Response:
    log.error("store error on %s %s: %s", request.method, request.url.path, exc)
    return _error(503, proto.ErrorCode.UNAVAILABLE, "storage unavailable, try again")


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    log.exception(
        "unexpected error on %s %s", request.method, request.url.path, exc_info=exc
    )
    return _error(500, proto.ErrorCode.INTERNAL, "internal error")


def create_app(ctx: ServerContext) -> Starlette:
    """The Strongroom server application over an already-built context.

    The store and bus are opened in the app's lifespan and closed when it ends.
    """
    api = Api(ctx)
    blobs = BlobApi(ctx, api.nonces)

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await ctx.store.ping()
        except StoreError:
            return JSONResponse({"status": "unready", "store": "down"}, 503)
        if not ctx.bus.healthy():
            return JSONResponse({"status": "unready", "bus": "down"}, 503)
        if not ctx.ready:
            return JSONResponse({"status": "unready"}, 503)
        return JSONResponse({"status": "ready"})

    async def metrics(request: Request) -> Response:
        # The store is shared by every node: each reports the same depth.
        with contextlib.suppress(StoreError):
            ctx.metrics.inbox_depth.set(await ctx.store.inbox_depth())
        return Response(
            generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST
        )

    async def prune_forever() -> None:
        limits = ctx.config.limits
        while True:
            try:
                removed = await ctx.store.prune(
                    ctx.clock(),
                    blob_grace_ms=int(limits.blob_grace_seconds * 1000),
                    upload_ttl_ms=int(limits.upload_ttl_seconds * 1000),
                )
                if removed and blobs.files is not None:
                    await asyncio.to_thread(blobs.files.delete, removed)
            except StoreError:
                log.warning("pruning failed; will retry")
            except OSError as exc:
                log.warning("deleting attachment files failed: %s", exc)
            await asyncio.sleep(limits.prune_seconds)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await ctx.store.open()
        await ctx.bus.start()
        pruner = asyncio.create_task(prune_forever())
        ctx.ready = True
        try:
            yield
        finally:
            ctx.ready = False
            pruner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pruner
            await ctx.bus.close()
            await ctx.store.close()

    routes = [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/v1/authority", api.authority),
        Route("/v1/activation/start", api.activation_start, methods=["POST"]),
        Route("/v1/activation/finish", api.activation_finish, methods=["POST"]),
        Route("/v1/keys/claim", api.claim, methods=["POST"]),
        Route("/v1/keys/upload", api.upload, methods=["POST"]),
        Route("/v1/keys/user/{user}", api.user_keys),
        Route("/v1/keys/device/{device_id}", api.device_keys),
        directory_route(ctx, api.nonces),
        Route("/v1/groups/{group}/changes", api.group_changes, methods=["GET"]),
        Route("/v1/groups/{group}/changes", api.group_post, methods=["POST"]),
        Route("/v1/blobs", blobs.create, methods=["POST"]),
        Route("/v1/blobs/{blob}", blobs.download, methods=["GET"]),
        Route("/v1/blobs/{blob}", blobs.put, methods=["PUT"]),
        Route("/v1/blobs/{blob}/status", blobs.status, methods=["GET"]),
        Route("/v1/admin/users", api.admin_users, methods=["GET", "POST"]),
        Route("/v1/admin/users/{user}/code", api.admin_code, methods=["POST"]),
        Route("/v1/admin/users/{user}/disable", api.admin_disable, methods=["POST"]),
        Route("/v1/admin/devices", api.admin_devices),
        Route(
            "/v1/admin/devices/{device_id}/revoke", api.admin_revoke, methods=["POST"]
        ),
        Route("/v1/admin/devices/{device_id}/wipe", api.admin_wipe, methods=["POST"]),
        Route("/v1/admin/policy", api.admin_policy, methods=["GET", "POST"]),
        Route("/v1/admin/policy/history", api.admin_policy_history),
        Route("/v1/admin/audit", api.admin_audit),
        Route("/v1/admin/audit/verify", api.admin_audit_verify),
        Route("/v1/policy", api.policy),
        *escrow_routes(ctx, api.nonces),
        WebSocketRoute("/v1/stream", StreamHandler(ctx).handle),
        console_mount(ctx),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={
            ApiRefusal: _on_refusal,
            ProtocolError: _on_protocol_error,
            StoreError: _on_store_error,
            Exception: _on_unexpected,
        },
    )
