"""Load-generator worker processes: one job each, connected first, then started together.

Rules:

1. Workers are forked, so that they share the conductor's pre-encrypted traffic without
   copying it, and each runs its own uvloop.
2. The conductor (``Workers``) lets every worker connect, then starts them together
   (``go``) and collects one ``Result`` from each.  A job with several ``phases`` keeps
   its connections and is started and collected once per phase; a job that ``hold``s
   keeps them until the conductor says stop.
3. A worker waits for the conductor in a thread, so that its loop keeps answering the
   server's pings meanwhile, and gives up at anything but ``go``.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
from multiprocessing.connection import Connection
from typing import Any

from ._drive import Job, Result
from ._machine import raise_open_files

__all__ = ["Workers"]


def _worker_main(job: Job, conn: Connection) -> None:
    raise_open_files()
    try:
        import uvloop

        uvloop.run(_worker(job, conn))
    except ImportError:  # pragma: no cover - uvloop comes with uvicorn[standard]
        asyncio.run(_worker(job, conn))


async def _worker(job: Job, conn: Connection) -> None:
    loop = asyncio.get_running_loop()
    try:
        await job.connect()
    except Exception as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        job.close()
        return
    conn.send(("ready", None))
    for _ in range(job.phases):
        # Wait in a thread, so that the loop keeps answering the server's pings meanwhile.
        if await loop.run_in_executor(None, conn.recv) != "go":
            job.close()
            return  # the conductor gave up before this phase
        try:
            result = await job.run()
        except Exception as exc:
            result = Result(errors=[f"{type(exc).__name__}: {exc}"])
        conn.send(("result", result))
    if job.hold:
        await loop.run_in_executor(None, conn.recv)
    job.close()
    await asyncio.sleep(0.05)


class Workers:
    """Load-generator processes, forked so that they share the pre-encrypted traffic."""

    def __init__(self, jobs: list[Job]) -> None:
        context = multiprocessing.get_context("fork")
        self._conns: list[Connection] = []
        self._procs: list[multiprocessing.process.BaseProcess] = []
        for job in jobs:
            ours, theirs = context.Pipe()
            process = context.Process(target=_worker_main, args=(job, theirs))
            process.start()
            theirs.close()
            self._conns.append(ours)
            self._procs.append(process)

    def _receive(self, conn: Connection, timeout: float) -> tuple[str, Any]:
        if not conn.poll(timeout):
            raise RuntimeError(f"a load-generator worker did not answer in {timeout}s")
        message: tuple[str, Any] = conn.recv()
        return message

    def wait_ready(self, timeout: float = 300.0) -> None:
        """Raises ``RuntimeError`` if a worker could not connect."""
        for conn in self._conns:
            kind, detail = self._receive(conn, timeout)
            if kind != "ready":
                raise RuntimeError(f"a load-generator worker failed: {detail}")

    def go(self) -> None:
        for conn in self._conns:
            conn.send("go")

    def results(self, timeout: float = 900.0) -> list[Result]:
        out: list[Result] = []
        for conn in self._conns:
            kind, result = self._receive(conn, timeout)
            assert kind == "result" and isinstance(result, Result)
            out.append(result)
        return out

    def stop(self) -> None:
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.send("stop")
        for process in self._procs:
            process.join(30)
            if process.is_alive():
                process.kill()
                process.join()
        for conn in self._conns:
            conn.close()

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
