"""The admin console in a real browser: headless Chromium driven by Playwright signs in,
adds a user, issues a code, and sees the device activated with it.

It uses the system's Chromium (Debian: ``apt-get install -y chromium``).  Outside CI the
test is skipped when Chromium or Playwright is missing; in CI (``CI=true``) it fails.
The screenshots in docs/admin/ come from this test: they are written there when missing
or when ``STRONGROOM_UPDATE_SCREENSHOTS`` is set, else into the test's temporary folder.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from conftest import Org, arun
from strongroom import client

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
DOCS = Path(__file__).resolve().parents[2] / "docs" / "admin"
PASSWORD = "a long console password"
SHOTS = ("sign-in", "users", "code", "devices", "policy", "audit")


def _require_browser() -> None:
    in_ci = os.environ.get("CI") == "true"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        if in_ci:
            pytest.fail("CI needs playwright: pip install -e '.[test]'")
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists():
        if in_ci:
            pytest.fail(f"CI needs {CHROMIUM}: apt-get install -y chromium")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")


def _shot_dir(tmp_path: Path) -> Path:
    missing = any(not (DOCS / f"{name}.png").exists() for name in SHOTS)
    if os.environ.get("STRONGROOM_UPDATE_SCREENSHOTS") or missing:
        DOCS.mkdir(parents=True, exist_ok=True)
        return DOCS
    return tmp_path / "shots"


def _shot(page: Page, folder: Path, name: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def activate(home: Path, url: str, code: str) -> None:
    """Alice's phone activates with the code; in its own thread, because Playwright's
    synchronous API keeps an event loop running in this one."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(
            lambda: arun(client.activate(home, url, "alice", code, "Alice's phone"))
        ).result()


def test_an_admin_enrols_a_device_in_a_real_browser(tmp_path: Path) -> None:
    _require_browser()
    from playwright.sync_api import expect, sync_playwright

    org = Org(tmp_path)
    org.data.set_admin_password(PASSWORD)
    shots = _shot_dir(tmp_path)
    with org.server, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 800})
            page.set_default_timeout(15_000)

            page.goto(org.url + "/admin/")
            expect(page).to_have_url(re.compile(r"/admin/sign-in$"))
            _shot(page, shots, "sign-in")
            page.get_by_label("Console password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page).to_have_url(re.compile(r"/admin/users$"))

            for user, name in (("alice", "Alice Archer"), ("bob", "Bob Baker")):
                page.get_by_label("User id").fill(user)
                page.get_by_label("Full name").fill(name)
                page.get_by_role("button", name="Add user").click()
                expect(page.get_by_role("status")).to_have_text(f"Added user {user}.")

            page.get_by_role("button", name="Issue activation code for alice").click()
            expect(page.get_by_role("heading", level=1)).to_have_text(
                "Activation code for alice"
            )
            code = page.locator("#activation-code").inner_text().strip()
            assert re.fullmatch(r"[A-Z0-9]{4}(-[A-Z0-9]{4})+", code), code
            expect(page.locator("figure.qr svg")).to_be_visible()
            _shot(page, shots, "code")

            home = tmp_path / "alice-phone"
            activate(home, org.url, code)
            device_id = org.device_id(home)

            page.get_by_role("link", name="Devices").click()
            row = page.get_by_role("row").filter(has_text=device_id)
            expect(row).to_contain_text("alice")
            expect(row).to_contain_text("Alice's phone")
            expect(row).to_contain_text("active")
            _shot(page, shots, "devices")

            page.get_by_role("link", name="Users").click()
            expect(
                page.get_by_role("row").filter(has_text="Alice Archer")
            ).to_contain_text("1")
            _shot(page, shots, "users")

            page.get_by_role("link", name="Policy").click()
            page.get_by_label("New value of retention_days").fill("90")
            page.get_by_role("button", name="Set retention_days").click()
            expect(page.get_by_role("status")).to_contain_text("policy v1")
            _shot(page, shots, "policy")

            page.get_by_role("link", name="Audit log").click()
            page.get_by_role("button", name="Verify the whole log").click()
            expect(page.get_by_role("status")).to_contain_text("Verified OK")
            _shot(page, shots, "audit")

            page.get_by_role("button", name="Sign out").click()
            expect(page).to_have_url(re.compile(r"/admin/sign-in$"))
        finally:
            browser.close()

    for name in SHOTS:
        assert (shots / f"{name}.png").stat().st_size > 10_000, name
