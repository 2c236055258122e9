"""Running the server: build the parts from a data directory, serve with uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import signal
import socket
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import uvicorn

from strongroom.errors import ConfigError

from ._app import create_app
from ._config import DataDir
from ._context import ServerContext
from ._logging import setup_logging
from ._websocket import StreamProtocol
from .bus import bus_from_url
from .store import store_from_url

__all__ = ["build_context", "migrate", "serve"]

log = logging.getLogger("strongroom.server")
_GC_YOUNG = 50_000


def build_context(data: DataDir) -> ServerContext:
    config = data.load_config()
    authority = data.load_authority()
    return ServerContext(
        config=config,
        store=store_from_url(config.storage.database, data.path),
        bus=bus_from_url(config.storage.bus, authority.public.fingerprint_id()),
        authority=authority,
        blob_dir=config.storage.blob_dir(data.path),
    )


async def migrate(data: DataDir) -> int:
    """Bring the database to this build's schema; returns the version it is at now."""
    ctx = build_context(data)
    await ctx.store.open(migrate=True)
    try:
        return await ctx.store.schema_version()
    finally:
        await ctx.store.close()


def serve(
    data: DataDir,
    host: str | None = None,
    port: int | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
) -> None:
    """Serve until SIGINT or SIGTERM.  Raises ``ConfigError`` / ``SchemaError`` on start."""
    ctx = build_context(data)
    host = host or ctx.config.server.host
    port = ctx.config.server.port if port is None else port
    # Fail before binding if the schema is wrong, with the store's own message.
    asyncio.run(_check_store(ctx))
    setup_logging(data.logs / "server.log")
    scheme = "https" if tls_cert else "http"
    config = uvicorn.Config(
        create_app(ctx),
        host=host,
        port=port,
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None,
        ws_max_size=2 * 1024 * 1024,
        ws_per_message_deflate=False,  # ciphertext does not compress
        ws_ping_interval=30.0,
        log_level="warning",
        access_log=False,
        lifespan="on",
        loop="auto",
        http="auto",
        ws=StreamProtocol,  # websockets-sansio, corked (see _websocket)
    )
    server = uvicorn.Server(config)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    bound = sock.getsockname()[1]
    url = f"{scheme}://{host if family == socket.AF_INET else f'[{host}]'}:{bound}"
    data.run_file.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    log.info("serving %s on %s", ctx.config.organisation.name, url)
    print(f"strongroom: serving {ctx.config.organisation.name!r} on {url}", flush=True)
    # uvicorn shuts down gracefully on SIGINT/SIGTERM and then re-raises the signal to the
    # handler that was installed before it.  Make that handler a no-op, so a requested stop
    # ends with exit status 0 once everything is closed.
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: None)
    _tune_gc()
    try:
        _run(server.serve(sockets=[sock]))
    finally:
        with contextlib.suppress(FileNotFoundError):
            data.run_file.unlink()
        log.info("stopped")


def _tune_gc() -> None:
    """Keep the cyclic garbage collector off the hot path (docs/decisions/0003-hot-path.md).

    Every envelope in flight is a few dozen container objects (a task, its coroutines,
    a future, closures) that live for the milliseconds of a commit; with CPython's default
    young generation (700 objects) nearly all of them survive a collection or two, get
    promoted, and trigger full collections of the whole heap several times a second:
    measured, close to half of the server's CPU and pauses of a quarter of a second.
    Reference counting frees these objects anyway; the collector is only needed for
    cycles, which are rare here.  So: everything built at start-up is frozen out of every
    collection, and a young collection waits for a net growth of ``_GC_YOUNG`` objects.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(_GC_YOUNG, *gc.get_threshold()[1:])


def _run(main: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is part of uvicorn[standard]
        asyncio.run(main)
    else:
        uvloop.run(main)


async def _check_store(ctx: ServerContext) -> None:
    await ctx.store.open()
    await ctx.store.close()
