"""The admin web console, served under ``/admin``: server-rendered pages over ``Fleet``.

Rules:

1. Every page but sign-in needs a live session (``_console_guard``); without one, a GET
   goes to the sign-in page and a POST changes nothing.
2. Every POST carries the session's CSRF token (sign-in: the token of its sign-in cookie)
   and is refused (403) without it, before anything is read or changed.  A POST whose
   ``Sec-Fetch-Site``, ``Origin`` or ``Referer`` names another site is refused too.
3. Every change goes through ``ctx.fleet`` with actor ``console``, so it is audited like
   the admin API's; sign-ins, failed sign-ins, lock-outs and sign-outs are audited here.
4. Every response carries the security headers of ``_console_web``: no script runs
   (the pages have none), nothing frames them, nothing caches them.
5. ``ApiRefusal`` sentences are shown on the page; internal error text never is.

The password is checked with Argon2id in a worker thread, one check at a time per node, so
a flood of sign-ins neither blocks the event loop nor exhausts memory.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from strongroom import proto
from strongroom.errors import StoreError

from ._console_guard import Lockout, Session, Sessions
from ._console_web import (
    FormRefusedError,
    SecurityHeaders,
    activation_uri,
    client_address,
    qr_svg,
    read_form,
    same_site,
    show,
    tokens_match,
)
from ._context import ServerContext
from ._errors import ApiRefusal

__all__ = ["ACTOR", "COOKIE", "console_mount"]

log = logging.getLogger("strongroom.server.console")

BASE = "/admin"
ACTOR = "console"
COOKIE = "strongroom_console"
SIGN_IN_COOKIE = "strongroom_console_sign_in"
AUDIT_ROWS = 500

_HERE = Path(__file__).parent
POLICY_HELP: Mapping[str, str] = {
    "retention_days": "Delete messages older than this many days from devices.",
    "default_timer_seconds": "Disappearing timer for conversations that set none.",
    "attachments_allowed": "Whether devices may send files.",
    "max_attachment_bytes": "Largest file a device may send, in bytes.",
    "passcode_required": "Whether the device's local store needs a passcode.",
    "passcode_min_length": "Shortest passcode accepted.",
    "passcode_max_attempts": "Wrong passcodes in a row before the device wipes itself.",
    "max_devices_per_user": "How many active devices one person may have.",
    "min_client_version": "Oldest client version allowed to send, like 0.1.0.",
    "read_receipts_allowed": "Whether devices send read receipts.",
    "escrow": "Lawful-access escrow: devices seal a copy per conversation-day.",
}


Page = Callable[[Request, Session], Awaitable[Response]]


class Console:
    """The pages; one instance per app, holding this node's sessions and lock-out."""

    def __init__(
        self, ctx: ServerContext, clock: Callable[[], float] | None = None
    ) -> None:
        self.ctx = ctx
        self.sessions = Sessions(clock) if clock else Sessions()
        self.lockout = Lockout(clock) if clock else Lockout()
        self.templates = Jinja2Templates(directory=_HERE / "templates")
        self._hasher = PasswordHasher()
        self._checking = asyncio.Lock()

    # --- plumbing ------------------------------------------------------------------------

    def _render(
        self,
        request: Request,
        template: str,
        session: Session | None,
        status: int = 200,
        **context: Any,
    ) -> Response:
        notices: list[str] = []
        if session is not None:
            notices, session.notices = session.notices, []
        return self.templates.TemplateResponse(
            request,
            template,
            {
                "base": BASE,
                "org": self.ctx.config.organisation.name,
                "session": session,
                "csrf": session.csrf if session else "",
                "notices": notices,
                "show": show,
                **context,
            },
            status_code=status,
        )

    def _problem(
        self, request: Request, session: Session | None, status: int, message: str
    ) -> Response:
        return self._render(
            request, "problem.html", session, status, title="Not done", error=message
        )

    def page(self, handler: Page) -> Callable[[Request], Awaitable[Response]]:
        """Rule 1, 2 and 5 around a handler that needs a signed-in admin."""

        @functools.wraps(handler)
        async def guarded(request: Request) -> Response:
            session = self.sessions.get(request.cookies.get(COOKIE))
            if session is None:
                return RedirectResponse(f"{BASE}/sign-in", 303)
            try:
                if request.method == "POST":
                    form = await read_form(request)
                    if not same_site(request) or not tokens_match(
                        form.get("csrf"), session.csrf
                    ):
                        raise FormRefusedError("csrf")
                    request.state.form = form
                return await handler(request, session)
            except FormRefusedError:
                return self._problem(
                    request,
                    session,
                    403,
                    "This form did not come from this console, or it has expired: "
                    "nothing was changed. Reload the page and try again.",
                )
            except StoreError:
                log.exception("store error in the console")
                return self._problem(
                    request, session, 503, "Storage is unavailable; try again."
                )

        return guarded

    @staticmethod
    def _form(request: Request) -> dict[str, str]:
        form: dict[str, str] = request.state.form
        return form

    # --- sign-in and sign-out --------------------------------------------------------

    async def index(self, request: Request) -> Response:
        return RedirectResponse(f"{BASE}/users", 303)

    def _sign_in_page(
        self, request: Request, status: int = 200, error: str | None = None
    ) -> Response:
        token = secrets.token_urlsafe(32)
        configured = self.ctx.config.admin.password_argon2 is not None
        response = self._render(
            request,
            "sign_in.html",
            None,
            status,
            title="Sign in",
            sign_in_token=token,
            configured=configured,
            error=error,
        )
        response.set_cookie(
            SIGN_IN_COOKIE,
            token,
            path=BASE,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        return response

    async def sign_in(self, request: Request) -> Response:
        if request.method == "GET":
            if self.sessions.get(request.cookies.get(COOKIE)) is not None:
                return RedirectResponse(f"{BASE}/users", 303)
            return self._sign_in_page(request)
        try:
            form = await read_form(request)
        except FormRefusedError:
            form = {}
        if not same_site(request) or not tokens_match(
            form.get("csrf"), request.cookies.get(SIGN_IN_COOKIE)
        ):
            return self._sign_in_page(
                request, 403, "The sign-in form expired; please try again."
            )
        stored = self.ctx.config.admin.password_argon2
        if stored is None:
            return self._sign_in_page(request, 403)
        address = client_address(request)
        if self._locked_out(address):
            return self._locked_page(request, address)
        async with self._checking:
            if self._locked_out(address):  # others failed while this one waited
                return self._locked_page(request, address)
            good = await asyncio.to_thread(
                self._verify, stored, form.get("password", "")
            )
            # counted before the next waiter looks (rule 3 of _console_guard)
            locked = None if good else self.lockout.failed(address)
        audit = self.ctx.fleet.audit
        if not good:
            await audit.record(
                ACTOR, "console.sign_in_failed", address, {"address": address}
            )
            if locked is not None:
                minutes = "15" if locked == "address" else "5"
                await audit.record(
                    ACTOR,
                    "console.locked",
                    address if locked == "address" else "*",
                    {"address": address, "scope": locked, "minutes": minutes},
                )
                return self._locked_page(request, address)
            return self._sign_in_page(request, 401, "Wrong password.")
        self.lockout.succeeded(address)
        session = self.sessions.create(address)
        await audit.record(ACTOR, "console.sign_in", address, {"address": address})
        response = RedirectResponse(f"{BASE}/users", 303)
        response.set_cookie(
            COOKIE,
            session.id,
            path=BASE,
            secure=request.url.scheme == "https",
            httponly=True,
            samesite="strict",
        )
        response.delete_cookie(SIGN_IN_COOKIE, path=BASE)
        return response

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except VerificationError:
            return False
        except InvalidHashError:
            log.error(
                "[admin] password_argon2 in the config is not an Argon2 hash: "
                "run `strongroom admin password set`"
            )
            return False

    def _locked_out(self, address: str) -> bool:
        return self.lockout.refused_for(address) > 0

    def _locked_page(self, request: Request, address: str) -> Response:
        minutes = max(1, round(self.lockout.refused_for(address) / 60))
        return self._sign_in_page(
            request,
            429,
            "Too many failed sign-ins: sign-in is locked for about "
            f"{minutes} minute{'s' if minutes != 1 else ''}. Try again later.",
        )

    async def sign_out(self, request: Request, session: Session) -> Response:
        self.sessions.end(session.id)
        await self.ctx.fleet.audit.record(
            ACTOR, "console.sign_out", session.address, {"address": session.address}
        )
        response = RedirectResponse(f"{BASE}/sign-in", 303)
        response.delete_cookie(COOKIE, path=BASE)
        return response

    # --- users -----------------------------------------------------------------------

    async def users(self, request: Request, session: Session) -> Response:
        error, status = None, 200
        if request.method == "POST":
            form = self._form(request)
            user = form.get("user", "").strip()
            try:
                await self.ctx.fleet.add_user(user, form.get("name", "").strip(), ACTOR)
            except ApiRefusal as exc:
                error, status = exc.body.detail, exc.status
            else:
                session.notices.append(f"Added user {user}.")
                return RedirectResponse(f"{BASE}/users", 303)
        return self._render(
            request,
            "users.html",
            session,
            status,
            title="Users",
            users=await self.ctx.fleet.users(),
            error=error,
        )

    async def issue_code(self, request: Request, session: Session) -> Response:
        user = request.path_params["user"]
        hours = self._form(request).get("hours", "")
        ttl = int(hours) * 3600 if hours.isdigit() and 0 < int(hours) <= 720 else None
        try:
            issued = await self.ctx.fleet.issue_code(user, ttl, ACTOR)
        except ApiRefusal as exc:
            return self._problem(request, session, exc.status, exc.body.detail)
        # the address this browser reached the server by: the one a device can reach
        server_url = f"{request.url.scheme}://{request.url.netloc}"
        uri = activation_uri(server_url, issued.user, issued.code)
        return self._render(
            request,
            "code.html",
            session,
            title=f"Activation code for {issued.user}",
            issued=issued,
            server_url=server_url,
            uri=uri,
            qr_svg=qr_svg(uri),
        )

    async def disable(self, request: Request, session: Session) -> Response:
        user = request.path_params["user"]
        fleet = self.ctx.fleet
        if request.method == "POST":
            try:
                info = await fleet.disable_user(user, ACTOR)
            except ApiRefusal as exc:
                return self._problem(request, session, exc.status, exc.body.detail)
            session.notices.append(
                f"Disabled {info.user}: every device revoked, out of every group."
            )
            return RedirectResponse(f"{BASE}/users", 303)
        known = {u.user: u for u in await fleet.users()}
        if user not in known:
            return self._problem(request, session, 404, f"no user {user!r}")
        return self._render(
            request,
            "confirm.html",
            session,
            title=f"Disable {user}?",
            action=f"{BASE}/users/{quote(user)}/disable",
            button=f"Disable {user}",
            explain=[
                f"Every device of {user} ({known[user].devices} active) is revoked "
                "at once: nobody encrypts to them and they cannot connect.",
                f"Every group drops {user}; no new activation code can be issued.",
                "This cannot be undone.",
            ],
            back=f"{BASE}/users",
        )

    # --- devices ---------------------------------------------------------------------

    async def devices(self, request: Request, session: Session) -> Response:
        user = request.query_params.get("user") or None
        if user is not None and not proto.valid_user_id(user):
            return self._problem(request, session, 400, f"{user!r} is not a user id")
        return self._render(
            request,
            "devices.html",
            session,
            title="Devices",
            devices=await self.ctx.fleet.devices(user),
            users=[u.user for u in await self.ctx.fleet.users()],
            user=user,
        )

    async def revoke(self, request: Request, session: Session) -> Response:
        return await self._device_order(
            request,
            session,
            "revoke",
            "Revoke",
            [
                "The device can no longer connect, and nobody encrypts to it from now "
                "on. What it already holds stays on it.",
                "Use this for a lost device; for a stolen one, wipe it instead.",
            ],
        )

    async def wipe(self, request: Request, session: Session) -> Response:
        return await self._device_order(
            request,
            session,
            "wipe",
            "Wipe",
            [
                "The device is revoked at once, and the next time it connects it "
                "receives the signed order, deletes everything it holds and confirms.",
                "This cannot be undone.",
            ],
        )

    async def _device_order(
        self,
        request: Request,
        session: Session,
        order: str,
        verb: str,
        explain: list[str],
    ) -> Response:
        device_id = request.path_params["device_id"]
        fleet = self.ctx.fleet
        try:
            if request.method == "POST":
                if order == "revoke":
                    done = await fleet.revoke(device_id, ACTOR)
                    session.notices.append(f"Revoked {done.device_id} of {done.user}.")
                else:
                    done = await fleet.order_wipe(device_id, ACTOR)
                    session.notices.append(
                        f"Wipe ordered for {done.device_id} of {done.user}."
                    )
                return RedirectResponse(f"{BASE}/devices", 303)
            device = await fleet.device(device_id)
        except ApiRefusal as exc:
            return self._problem(request, session, exc.status, exc.body.detail)
        label = f"{device.name or device.device_id} ({device.device_id})"
        return self._render(
            request,
            "confirm.html",
            session,
            title=f"{verb} {device.user}'s device {label}?",
            action=f"{BASE}/devices/{quote(device_id)}/{order}",
            button=f"{verb} this device",
            explain=explain,
            back=f"{BASE}/devices",
        )

    # --- policy ----------------------------------------------------------------------

    async def policy(self, request: Request, session: Session) -> Response:
        fleet = self.ctx.fleet
        error, status = None, 200
        if request.method == "POST":
            form = self._form(request)
            user = form.get("user") or None
            key = form.get("key", "")
            try:
                if form.get("clear"):
                    change = proto.PolicySet(key=key, user=user, clear=True)
                else:
                    value = proto.parse_policy_value(key, form.get("value", ""))
                    change = proto.PolicySet(key=key, value=value, user=user)
                view = await fleet.set_policy(change, ACTOR)
            except ValueError as exc:
                error, status = str(exc), 400
            except ApiRefusal as exc:
                error, status = exc.body.detail, exc.status
            else:
                scope = f"{user}'s override" if user else "the organisation"
                done = "cleared" if change.clear else "set"
                session.notices.append(
                    f"{key} {done} for {scope}: policy v{view.version}, signed and "
                    "sent to the devices."
                )
                where = f"?user={quote(user)}" if user else ""
                return RedirectResponse(f"{BASE}/policy{where}", 303)
        else:
            user = request.query_params.get("user") or None
        users = [u.user for u in await fleet.users()]
        if user is not None and user not in users:
            error, status, user = f"no user {user!r}", 404, None
        view = await fleet.policy_view(user)
        rows = [
            {
                "key": key,
                "help": POLICY_HELP.get(key, ""),
                "value": getattr(view.rules, key),
                "boolean": isinstance(getattr(proto.PolicyRules(), key), bool),
                "overridden": key in view.overrides,
            }
            for key in proto.POLICY_KEYS
        ]
        return self._render(
            request,
            "policy.html",
            session,
            status,
            title="Policy",
            view=view,
            rows=rows,
            users=users,
            user=user,
            history=list(reversed(await fleet.policy_history())),
            error=error,
        )

    # --- audit -----------------------------------------------------------------------

    async def audit(self, request: Request, session: Session) -> Response:
        fleet = self.ctx.fleet
        query = request.query_params
        filters = {k: query.get(k, "").strip() for k in ("action", "actor", "subject")}
        since = query.get("since", "").strip()
        error, status, since_ms = None, 200, None
        if since:
            try:
                day = dt.date.fromisoformat(since)
            except ValueError:
                error, status = f"{since!r} is not a date like 2025-01-31", 400
            else:
                start = dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC)
                since_ms = int(start.timestamp() * 1000)
        verdict: proto.AuditVerdict | None = None
        if request.method == "POST":
            count, problems = await fleet.audit.verify()
            verdict = proto.AuditVerdict(entries=count, problems=problems)
        entries = [
            e
            for e in reversed(await fleet.audit_entries(since_ms, limit=1_000_000))
            if all(
                needle.lower() in getattr(e, k).lower()
                for k, needle in filters.items()
                if needle
            )
        ]
        return self._render(
            request,
            "audit.html",
            session,
            status,
            title="Audit log",
            entries=entries[:AUDIT_ROWS],
            matching=len(entries),
            limit=AUDIT_ROWS,
            filters=filters,
            since=since,
            verdict=verdict,
            error=error,
        )


def console_mount(ctx: ServerContext) -> Mount:
    """The console's routes under ``/admin``, for ``create_app``."""
    c = Console(ctx)
    routes: list[BaseRoute] = [
        Route("/", c.index),
        Route("/sign-in", c.sign_in, methods=["GET", "POST"]),
        Route("/sign-out", c.page(c.sign_out), methods=["POST"]),
        Route("/users", c.page(c.users), methods=["GET", "POST"]),
        Route("/users/{user}/code", c.page(c.issue_code), methods=["POST"]),
        Route("/users/{user}/disable", c.page(c.disable), methods=["GET", "POST"]),
        Route("/devices", c.page(c.devices)),
        Route("/devices/{device_id}/revoke", c.page(c.revoke), methods=["GET", "POST"]),
        Route("/devices/{device_id}/wipe", c.page(c.wipe), methods=["GET", "POST"]),
        Route("/policy", c.page(c.policy), methods=["GET", "POST"]),
        Route("/audit", c.page(c.audit), methods=["GET", "POST"]),
        Mount("/static", StaticFiles(directory=_HERE / "static"), name="static"),
    ]
    return Mount(BASE, routes=routes, middleware=[Middleware(SecurityHeaders)])
