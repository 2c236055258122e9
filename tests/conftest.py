"""Fixtures shared by the tests above the unit level: a real server on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from strongroom import client, proto, server
from strongroom.cli._local import LocalServer

T = TypeVar("T")


def arun(coro: Coroutine[Any, Any, T]) -> T:
    """Run one async scenario to completion (the SDK is async-only)."""
    return asyncio.run(coro)


class Org:
    """An organisation with a running server process, and the admin's verbs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = server.init_data_dir(root / "server", "Test Ministry")
        arun(server.migrate(self.data))
        self.server = LocalServer(self.data.path)
        self.token = self.data.read_admin_token()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def db(self) -> Path:
        return self.data.path / "strongroom.db"

    def admin(self, method: str, path: str, body: bytes = b"") -> httpx.Response:
        return httpx.request(
            method,
            self.url + path,
            content=body,
            headers={"authorization": f"Bearer {self.token}"},
            timeout=10.0,
        )

    def add_user(self, user: str, name: str = "") -> None:
        response = self.admin(
            "POST", "/v1/admin/users", proto.encode_json(proto.UserAdd(user, name))
        )
        assert response.status_code == 200, response.text

    def code(self, user: str, ttl_seconds: int = 3600) -> str:
        response = self.admin(
            "POST",
            f"/v1/admin/users/{user}/code",
            proto.encode_json(proto.CodeRequest(ttl_seconds)),
        )
        assert response.status_code == 200, response.text
        return proto.decode_json(response.content, proto.CodeIssued).code

    def activate(self, user: str, device: str = "phone") -> Path:
        """Add the user if needed, issue a code and activate a device home with it."""
        if self.admin("GET", "/v1/admin/users").text.find(f'"{user}"') < 0:
            self.add_user(user)
        home = self.root / f"{user}-{device}"
        arun(client.activate(home, self.url, user, self.code(user), device))
        return home

    def device_id(self, home: Path) -> str:
        store = client.LocalStore.open(home)
        try:
            return store.meta_text("device_id")
        finally:
            store.close()


@pytest.fixture
def org(tmp_path: Path) -> Iterator[Org]:
    organisation = Org(tmp_path)
    organisation.server.start()
    try:
        yield organisation
    finally:
        organisation.server.stop()


async def send(home: Path, to: str, text: str) -> client.SendResult:
    async with client.Client(home) as c:
        return await c.send_text(to, text)


async def receive(
    home: Path, wait: float = 0.2
) -> tuple[list[client.Received], list[str]]:
    async with client.Client(home) as c:
        got = await c.receive(wait)
        return got, list(c.warnings)
