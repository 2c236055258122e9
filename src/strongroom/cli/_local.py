"""A server process on loopback, for `strongroom demo`, the benchmark and the tests."""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

import httpx

from strongroom.errors import ConfigError

__all__ = ["LocalServer", "free_port"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class LocalServer:
    """`strongroom serve --data DIR` in a child process, stopped on exit."""

    def __init__(
        self,
        data: Path,
        port: int | None = None,
        log: Path | None = None,
        tls: tuple[Path, Path] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        self.data = data
        self.port = port or free_port()
        self.tls = tls
        self.env = env or {}
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"
        self.log = log or data / "logs" / "stderr.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> LocalServer:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "strongroom",
                    "serve",
                    "--data",
                    str(self.data),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *self._tls_args(),
                ],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ConfigError(f"the server exited: see {self.log}")
            try:
                ready = httpx.get(
                    self.url + "/readyz", timeout=1.0, verify=self._verify()
                )
                if ready.status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise ConfigError(
            f"the server did not become ready in {timeout:.0f}s: see {self.log}"
        )

    def _tls_args(self) -> list[str]:
        if self.tls is None:
            return []
        return ["--tls-cert", str(self.tls[0]), "--tls-key", str(self.tls[1])]

    def _verify(self) -> ssl.SSLContext | bool:
        if self.tls is None:
            return True
        return ssl.create_default_context(cafile=str(self.tls[0]))

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM and wait; returns the exit status."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL: the crash case."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
