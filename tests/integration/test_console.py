"""The admin web console over HTTP, against a real server process: sign-in, sessions,
CSRF, lock-out, and every page's effect seen through the JSON admin API."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from argon2 import PasswordHasher

from _cli import sr
from conftest import Org, arun
from strongroom import client
from strongroom.errors import ConfigError
from strongroom.server import init_data_dir

PASSWORD = "a long console password"
_CSRF = re.compile(r'name="csrf" value="([^"]+)"')
_CODE = re.compile(r'id="activation-code"[^>]*>([^<]+)<')


def running_org(root: Path) -> Org:
    """An organisation whose console password is ``PASSWORD``, its server started."""
    organisation = Org(root)
    organisation.data.set_admin_password(PASSWORD)
    organisation.server.start()
    return organisation


@pytest.fixture(scope="module")
def shared_org(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Org]:
    """One server for the tests that only add to its state (a server start is the
    slow part): each uses its own user names."""
    organisation = running_org(tmp_path_factory.mktemp("console"))
    try:
        yield organisation
    finally:
        organisation.server.stop()


@pytest.fixture
def own_org(tmp_path: Path) -> Iterator[Org]:
    """A server for one test alone."""
    organisation = running_org(tmp_path)
    try:
        yield organisation
    finally:
        organisation.server.stop()


def csrf(page: httpx.Response) -> str:
    found = _CSRF.search(page.text)
    assert found is not None, page.text
    return found.group(1)


def try_sign_in(
    http: httpx.Client, password: str, address: str | None = None
) -> httpx.Response:
    headers = {"x-forwarded-for": address} if address else {}
    page = http.get("/admin/sign-in", headers=headers)
    return http.post(
        "/admin/sign-in",
        data={"csrf": csrf(page), "password": password},
        headers=headers,
    )


def console(org: Org) -> httpx.Client:
    return httpx.Client(base_url=org.url, timeout=20.0)


@contextlib.contextmanager
def signed_in(org: Org) -> Iterator[httpx.Client]:
    with console(org) as http:
        response = try_sign_in(http, PASSWORD)
        assert response.status_code == 303, response.text
        assert response.headers["location"] == "/admin/users"
        yield http


def post(http: httpx.Client, path: str, **fields: str) -> httpx.Response:
    """A console form, submitted with the CSRF token of the page it is on."""
    token = csrf(http.get("/admin/users"))
    return http.post(path, data={"csrf": token, **fields})


def api(org: Org, path: str) -> Any:
    response = org.admin("GET", path)
    assert response.status_code == 200, response.text
    return response.json()


def users_of(org: Org) -> list[str]:
    return [u["user"] for u in api(org, "/v1/admin/users")]


def audit_actions(org: Org) -> list[tuple[str, str, str]]:
    return [
        (e["actor"], e["action"], e["subject"]) for e in api(org, "/v1/admin/audit")
    ]


def test_sign_in_session_cookie_and_headers(shared_org: Org) -> None:
    org = shared_org
    with console(org) as http:
        assert http.get("/admin/users").headers["location"] == "/admin/sign-in"
        assert http.get("/admin/").status_code == 303

        wrong = try_sign_in(http, "not the password")
        assert wrong.status_code == 401 and "Wrong password" in wrong.text
        assert "strongroom_console=" not in wrong.headers.get("set-cookie", "")

        right = try_sign_in(http, PASSWORD)
        assert right.status_code == 303
        cookie = next(
            c
            for c in right.headers.get_list("set-cookie")
            if c.startswith("strongroom_console=")
        )
        flags = {part.strip().lower() for part in cookie.split(";")[1:]}
        assert {"httponly", "samesite=strict", "path=/admin"} <= flags
        assert "secure" not in flags  # plain http on loopback; https adds it

        for path in ("/admin/users", "/admin/static/console.css", "/admin/sign-in"):
            response = http.get(path)
            assert response.status_code in (200, 303), path
            headers = response.headers
            csp = headers["content-security-policy"]
            assert "default-src 'self'" in csp and "script-src 'none'" in csp
            assert headers["x-frame-options"] == "DENY"
            assert headers["referrer-policy"] == "no-referrer"
            assert headers["cache-control"] == "no-store"
        assert "<script" not in http.get("/admin/users").text

        signed_out = post(http, "/admin/sign-out")
        assert signed_out.headers["location"] == "/admin/sign-in"
        assert http.get("/admin/users").headers["location"] == "/admin/sign-in"

    actions = audit_actions(org)
    assert ("console", "console.sign_in_failed", "127.0.0.1") in actions
    assert ("console", "console.sign_in", "127.0.0.1") in actions
    assert ("console", "console.sign_out", "127.0.0.1") in actions


def test_posts_without_the_csrf_token_change_nothing(shared_org: Org) -> None:
    org = shared_org
    with signed_in(org) as http:
        token = csrf(http.get("/admin/users"))
        refused = [
            http.post("/admin/users", data={"user": "mallory"}),
            http.post("/admin/users", data={"user": "mallory", "csrf": "x" * 43}),
            http.post(
                "/admin/users",
                data={"user": "mallory", "csrf": token},
                headers={"origin": "https://evil.example"},
            ),
            http.post(
                "/admin/users",
                data={"user": "mallory", "csrf": token},
                headers={"sec-fetch-site": "cross-site"},
            ),
            http.post(
                "/admin/users",
                content=json.dumps({"user": "mallory", "csrf": token}),
                headers={"content-type": "application/json"},
            ),
        ]
        for response in refused:
            assert response.status_code == 403, response.text
            assert "nothing was changed" in response.text
        assert "mallory" not in users_of(org)

        # the sign-in form has its own token: a forged sign-in is refused too
        with console(org) as other:
            forged = other.post("/admin/sign-in", data={"password": PASSWORD})
            assert forged.status_code == 403
            assert "strongroom_console=" not in forged.headers.get("set-cookie", "")

        added = http.post(
            "/admin/users",
            data={"user": "trent", "name": "Trent T", "csrf": token},
            headers={"origin": org.url, "sec-fetch-site": "same-origin"},
        )
        assert added.status_code == 303
        assert "trent" in users_of(org)

    # without a session a POST goes to sign-in and changes nothing either
    with console(org) as stranger:
        response = stranger.post("/admin/users", data={"user": "eve", "csrf": token})
        assert response.headers["location"] == "/admin/sign-in"
    assert "eve" not in users_of(org)


def test_lock_out_after_five_failures(own_org: Org) -> None:
    """Five failures lock one address out (the overall limit and the expiry are
    tested on the guard itself, with a clock: tests/server/test_console_guard.py)."""
    org = own_org
    with console(org) as http:
        for _ in range(4):
            assert try_sign_in(http, "guess").status_code == 401
        assert try_sign_in(http, "guess").status_code == 429  # the fifth locks
        locked = try_sign_in(http, PASSWORD)  # right, but no longer checked
        assert locked.status_code == 429
        assert "locked for about 15 minutes" in locked.text
        assert "Wrong password" not in locked.text
        assert "strongroom_console=" not in locked.headers.get("set-cookie", "")

        # another address is not locked out by this one (the server trusts the
        # X-Forwarded-For of a proxy on loopback, as uvicorn does by default)
        assert try_sign_in(http, PASSWORD, "203.0.113.1").status_code == 303

    locks = [e for e in api(org, "/v1/admin/audit") if e["action"] == "console.locked"]
    assert [(e["subject"], e["details"]["scope"]) for e in locks] == [
        ("127.0.0.1", "address")
    ]
    failures = [
        e for e in api(org, "/v1/admin/audit") if e["action"].endswith("_failed")
    ]
    assert len(failures) == 5


def test_every_page_and_every_order(shared_org: Org, tmp_path: Path) -> None:
    org = shared_org
    with signed_in(org) as http:
        for path in ("/admin/users", "/admin/devices", "/admin/policy", "/admin/audit"):
            page = http.get(path)
            assert page.status_code == 200, path
            assert 'aria-current="page"' in page.text

        assert post(http, "/admin/users", user="alice", name="Alice").status_code == 303
        assert post(http, "/admin/users", user="bob").status_code == 303
        users = http.get("/admin/users").text
        assert "Added user bob." in users and "Alice" in users
        duplicate = post(http, "/admin/users", user="alice")
        assert duplicate.status_code == 409
        assert "user &#39;alice&#39; exists already" in duplicate.text

        homes = {}
        for user, device in (("alice", "phone"), ("alice", "laptop"), ("bob", "phone")):
            issued = post(http, f"/admin/users/{user}/code")
            assert issued.status_code == 200
            found = _CODE.search(issued.text)
            assert found is not None
            code = found.group(1)
            assert "<svg" in issued.text and "activation QR code" in issued.text
            uri = re.search(r"strongroom-activate:\?[^<\s]+", issued.text)
            assert uri is not None
            query = parse_qs(urlsplit(uri.group(0).replace("&amp;", "&")).query)
            assert query == {"server": [org.url], "user": [user], "code": [code]}
            homes[user, device] = tmp_path / f"{user}-{device}"
            arun(client.activate(homes[user, device], org.url, user, code, device))

        ids = {key: org.device_id(home) for key, home in homes.items()}
        devices = http.get("/admin/devices").text
        for device_id in ids.values():
            assert device_id in devices
        assert "compliant (no policy)" in devices
        only_bob = http.get("/admin/devices", params={"user": "bob"}).text
        assert ids["bob", "phone"] in only_bob
        assert ids["alice", "phone"] not in only_bob

        # revoke: a confirmation page, then the order
        lost = ids["alice", "phone"]
        confirm = http.get(f"/admin/devices/{lost}/revoke")
        assert confirm.status_code == 200 and "Revoke this device" in confirm.text
        assert post(http, f"/admin/devices/{lost}/revoke").status_code == 303
        assert f"Revoked {lost} of alice." in http.get("/admin/devices").text
        again = post(http, f"/admin/devices/{lost}/revoke")
        assert again.status_code == 409 and "revoked already" in again.text

        stolen = ids["alice", "laptop"]
        assert "Wipe this device" in http.get(f"/admin/devices/{stolen}/wipe").text
        assert post(http, f"/admin/devices/{stolen}/wipe").status_code == 303
        assert "wipe pending" in http.get("/admin/devices").text

        assert "Disable bob" in http.get("/admin/users/bob/disable").text
        assert post(http, "/admin/users/bob/disable").status_code == 303
        refused = post(http, "/admin/users/bob/code")
        assert refused.status_code == 403 and "is disabled" in refused.text
        missing = http.get("/admin/devices/ffffffffffffffff/wipe")
        assert missing.status_code == 404 and "no device" in missing.text

    state = {d["device_id"]: d for d in api(org, "/v1/admin/devices")}
    assert state[lost]["revoked_at"] and not state[lost]["wipe_ordered_at"]
    assert state[stolen]["revoked_at"] and state[stolen]["wipe_ordered_at"]
    assert state[ids["bob", "phone"]]["revoked_at"]
    disabled = {u["user"]: u["disabled_at"] for u in api(org, "/v1/admin/users")}
    assert disabled["bob"] and disabled["alice"] is None
    console_actions = {
        (a, s) for actor, a, s in audit_actions(org) if actor == "console"
    }
    assert {
        ("user.add", "alice"),
        ("code.issue", "alice"),
        ("device.revoke", lost),
        ("device.wipe_order", stolen),
        ("user.disable", "bob"),
    } <= console_actions


def test_policy_edits_are_what_the_admin_api_serves(shared_org: Org) -> None:
    org = shared_org
    org.add_user("olivia")
    with signed_in(org) as http:
        done = post(http, "/admin/policy", key="retention_days", value="30")
        assert done.status_code == 303
        page = http.get("/admin/policy").text
        assert "retention_days set for the organisation: policy v1," in page

        bad = post(http, "/admin/policy", key="retention_days", value="soon")
        assert bad.status_code == 400
        assert "retention_days takes a whole number" in bad.text
        unknown = post(http, "/admin/policy", key="self_destruct", value="true")
        assert unknown.status_code == 400 and "is not a policy setting" in unknown.text

        override = post(
            http, "/admin/policy", key="passcode_required", value="true", user="olivia"
        )
        assert override.headers["location"] == "/admin/policy?user=olivia"
        mine = http.get("/admin/policy", params={"user": "olivia"}).text
        assert "Clear override" in mine

        view = api(org, "/v1/admin/policy?user=olivia")
        assert view["version"] == 2 and view["overrides"] == ["passcode_required"]
        assert view["rules"]["retention_days"] == 30
        assert view["rules"]["passcode_required"] is True
        assert api(org, "/v1/admin/policy")["rules"]["passcode_required"] is False

        cleared = post(
            http, "/admin/policy", key="passcode_required", user="olivia", clear="1"
        )
        assert cleared.status_code == 303
        assert api(org, "/v1/admin/policy?user=olivia")["overrides"] == []
        history = http.get("/admin/policy").text
        assert "override cleared" in history and "user:olivia" in history

    assert [(c["actor"], c["key"]) for c in api(org, "/v1/admin/policy/history")] == [
        ("console", "retention_days"),
        ("console", "passcode_required"),
        ("console", "passcode_required"),
    ]


def test_audit_page_filters_and_verifies(shared_org: Org) -> None:
    org = shared_org
    with signed_in(org) as http:
        post(http, "/admin/users", user="carol")
        page = http.get("/admin/audit").text
        assert "console.sign_in" in page and "user.add" in page

        only = http.get(
            "/admin/audit", params={"action": "user.add", "subject": "CAROL"}
        ).text
        assert "user.add" in only and "console.sign_in" not in only
        assert "1 matching entry" in only
        future = http.get("/admin/audit", params={"since": "2999-01-01"}).text
        assert "0 matching entries" in future
        bad = http.get("/admin/audit", params={"since": "yesterday"})
        assert bad.status_code == 400 and "is not a date" in bad.text

        verified = post(http, "/admin/audit")
        assert verified.status_code == 200
        assert "Verified OK" in verified.text

        # an edited row is named (and put back, for the tests that follow)
        ((entry,),) = org.sql("SELECT entry FROM audit_log WHERE seq = 1")
        org.sql("UPDATE audit_log SET entry = ? WHERE seq = 1", b"\x00not signed")
        try:
            broken = post(http, "/admin/audit")
        finally:
            org.sql("UPDATE audit_log SET entry = ? WHERE seq = 1", entry)
        assert "Verification FAILED" in broken.text
        assert "entry 1: its signature does not verify" in broken.text
        assert "Verified OK" in post(http, "/admin/audit").text


def test_init_and_reset_the_password_from_the_command_line(tmp_path: Path) -> None:
    generated = tmp_path / "generated"
    out = sr("init", "--data", generated).stdout
    found = re.search(r"console password (\S+)", out)
    assert found is not None, out
    config = (generated / "strongroom.toml").read_text()
    stored = re.search(r'password_argon2 = "(\$argon2id\$[^"]+)"', config)
    assert stored is not None and found.group(1) not in config
    assert PasswordHasher().verify(stored.group(1), found.group(1))

    given = tmp_path / "given"
    secret = tmp_path / "password.txt"
    secret.write_text("from a file, long enough\n")
    sr("init", "--data", given, "--admin-password-file", secret)
    stored = re.search(
        r'password_argon2 = "([^"]+)"', (given / "strongroom.toml").read_text()
    )
    assert stored is not None
    assert PasswordHasher().verify(stored.group(1), "from a file, long enough")
    with pytest.raises(ConfigError, match="at least 12 characters"):
        init_data_dir(tmp_path / "short", "Short", admin_password="short")

    # a data directory from before the console had a password: no sign-in at all
    old = Org(tmp_path / "old")
    with old.server, console(old) as http:
        page = http.get("/admin/sign-in")
        assert "No console password set" in page.text
        assert "strongroom admin password set" in page.text
        refused = http.post(
            "/admin/sign-in", data={"csrf": "x", "password": "anything at all"}
        )
        assert refused.status_code == 403

    sr(
        "admin",
        "password",
        "set",
        "--data",
        old.data.path,
        env={"STRONGROOM_ADMIN_PASSWORD": PASSWORD},
    )
    with old.server, console(old) as http:  # servers read the config at start
        assert try_sign_in(http, "anything at all").status_code == 401
        assert try_sign_in(http, PASSWORD).status_code == 303
        assert ("cli", "console.password_set", "console") in audit_actions(old)
