"""The practical ceiling: a bare WebSocket echo on the server's own stack.

The same uvicorn settings as ``strongroom serve`` (uvloop, httptools, the
``websockets-sansio`` implementation, the same frame limit and ping interval) and the same
Starlette ``WebSocket``; no authentication, no store, no state.  Every binary message is
sent straight back.  ``EchoServer`` runs it in a child process; the settings are
kept in step with ``server._serve.serve`` by hand (that module builds its uvicorn config
inline, so there is nothing to import).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

__all__ = ["EchoServer", "echo_app"]


async def _echo(ws: WebSocket) -> None:
    await ws.accept()
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            data = message.get("bytes")
            if data is not None:
                await ws.send_bytes(data)
    except WebSocketDisconnect:
        return


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def echo_app() -> Starlette:
    return Starlette(
        routes=[Route("/healthz", _healthz), WebSocketRoute("/echo", _echo)]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="strongroom.bench._echo")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    config = uvicorn.Config(
        echo_app(),
        host="127.0.0.1",
        port=args.port,
        ws_max_size=2 * 1024 * 1024,
        ws_ping_interval=30.0,
        log_level="warning",
        access_log=False,
        lifespan="off",
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
    )
    uvicorn.Server(config).run()


# Not ``-m strongroom.bench._echo``: the package imports this module, and runpy warns.
_ENTRY = "from strongroom.bench._echo import main; main()"


class EchoServer:
    """The echo in a child process on a free loopback port, stopped on exit."""

    def __init__(self) -> None:
        # Imported here: the CLI package imports this one for `strongroom bench`.
        from strongroom.cli._local import free_port

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}/echo"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> EchoServer:
        self.process = subprocess.Popen(
            [sys.executable, "-c", _ENTRY, "--port", str(self.port)],
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("the echo server exited at start")
            try:
                if httpx.get(self.url + "/healthz", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.__exit__()
        raise RuntimeError("the echo server did not start in 20s")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
