"""A TCP relay on loopback, run on its own thread, that a test can record or cut.

Tests use it to stand between a party and a service: to keep every byte a client sent
(``recorded``), to break the connections of a server process to PostgreSQL or NATS the way
a network failure would (``cut``), and to refuse new ones for a while (``refuse``).  Given
several target ports it is a failover load balancer: each new connection goes to the first
target that accepts it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["TcpProxy"]

T = TypeVar("T")


class TcpProxy:
    def __init__(self, *target_ports: int) -> None:
        self.targets = target_ports
        self.sent = bytearray()
        self.returned = 0  # bytes relayed back from the targets
        self._cut_at: tuple[int | None, int | None] = (None, None)
        self.port = 0
        self.connections = 0
        self._refusing = False
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._relay, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def cut(self) -> None:
        """Close every relayed connection now, as a failed network would."""
        self._call(self._close_all())

    def cut_after(self, *, up: int | None = None, down: int | None = None) -> None:
        """Cut every connection, once, when ``up`` more bytes have gone to the target or
        ``down`` more have come back: a network failing in the middle of a transfer."""
        with self._lock:
            self._cut_at = (
                None if up is None else len(self.sent) + up,
                None if down is None else self.returned + down,
            )

    def _due_cut(self) -> bool:
        with self._lock:
            up, down = self._cut_at
            due = (up is not None and len(self.sent) >= up) or (
                down is not None and self.returned >= down
            )
            if due:
                self._cut_at = (None, None)
            return due

    def refuse(self, refusing: bool = True) -> None:
        """While refusing, new connections are closed as soon as they arrive."""
        self._refusing = refusing

    def recorded(self) -> bytes:
        with self._lock:
            return bytes(self.sent)

    # --- on the proxy's own loop ------------------------------------------------------

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _shutdown(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._close_all()
        with contextlib.suppress(Exception):
            await self._server.wait_closed()

    async def _close_all(self) -> None:
        writers = list(self._writers)
        self._writers.clear()
        for writer in writers:
            writer.transport.abort()

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        for port in self.targets:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
                break
            except OSError:
                continue
        else:
            writer.transport.abort()
            return
        self.connections += 1
        self._writers |= {writer, up_writer}

        async def pipe(
            src: asyncio.StreamReader, dst: asyncio.StreamWriter, record: bool
        ) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    with self._lock:
                        if record:
                            self.sent.extend(data)
                        else:
                            self.returned += len(data)
                    dst.write(data)
                    await dst.drain()
                    if self._due_cut():
                        await self._close_all()
            dst.transport.abort()
            self._writers.discard(dst)

        await asyncio.gather(
            pipe(reader, up_writer, True), pipe(up_reader, writer, False)
        )
