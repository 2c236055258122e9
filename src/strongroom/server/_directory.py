"""The organisation's directory for devices: ``GET /v1/directory``.

Any device of the organisation may list who it can write to: every enabled user, with the
display name IT gave them.  The answer names users, never devices or keys (those come
from ``/v1/keys/user/{user}`` with their certificates), so a name can only ever help a
person pick a user id; it cannot make a device encrypt to anyone.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from strongroom import proto

from ._auth import NonceCache, authenticate_device
from ._context import ServerContext
from ._http_api import json_response

__all__ = ["directory_route"]


def directory_route(ctx: ServerContext, nonces: NonceCache) -> Route:
    """The route, bound to one server context and the API's replay cache."""

    async def directory(request: Request) -> Response:
        await authenticate_device(ctx, nonces, request, b"")
        users = await ctx.store.list_users()
        return json_response(
            proto.Directory(
                users=[
                    proto.DirectoryEntry(user=u.user, name=u.name)
                    for u in sorted(users, key=lambda u: u.user)
                    if not u.disabled
                ]
            )
        )

    return Route("/v1/directory", directory, methods=["GET"])
