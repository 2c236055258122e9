"""What every console request and response passes through: the security headers, form
bodies, the same-site and CSRF checks; and the activation QR code.

Nothing here keeps state: sessions and the lock-out are in ``_console_guard``, the pages
in ``_console``.
"""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit

import segno
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "MAX_FORM_BYTES",
    "FormRefusedError",
    "SecurityHeaders",
    "activation_uri",
    "client_address",
    "qr_svg",
    "read_form",
    "same_site",
    "show",
    "tokens_match",
]

MAX_FORM_BYTES = 16 * 1024

_SECURITY_HEADERS: list[tuple[bytes, bytes]] = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
        b"form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
_REPLACED = {name for name, _ in _SECURITY_HEADERS} | {b"pragma", b"expires"}


class FormRefusedError(Exception):
    """A POST that is not a form from this console (no or a wrong CSRF token, another
    site, not urlencoded, too large): the console answers 403 and changes nothing."""


class SecurityHeaders:
    """The headers of ``_SECURITY_HEADERS`` on every response of the wrapped app; the
    same names from the app are dropped."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [
                    (k, v)
                    for k, v in message.get("headers", [])
                    if k.lower() not in _REPLACED
                ]
                message = {**message, "headers": headers + _SECURITY_HEADERS}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def client_address(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def same_site(request: Request) -> bool:
    """False if the browser says the request came from another site.  ``Origin: null``
    (what ``Referrer-Policy: no-referrer`` makes browsers send) says nothing."""
    fetch_site = request.headers.get("sec-fetch-site")
    if fetch_site is not None and fetch_site not in ("same-origin", "none"):
        return False
    host = request.headers.get("host", "")
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        return urlsplit(origin).netloc == host
    referer = request.headers.get("referer")
    if referer:
        return urlsplit(referer).netloc == host
    return True


async def read_form(request: Request) -> dict[str, str]:
    """The urlencoded body (at most ``MAX_FORM_BYTES``); anything else is refused."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormRefusedError("not a form")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise FormRefusedError("form too large")
    try:
        pairs = parse_qsl(body.decode(), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormRefusedError("malformed form") from exc
    return dict(pairs)


def tokens_match(offered: str | None, expected: str | None) -> bool:
    if not offered or not expected:
        return False
    return hmac.compare_digest(offered.encode(), expected.encode())


def activation_uri(server_url: str, user: str, code: str) -> str:
    """What the QR code carries: everything a device needs to activate."""
    query = urlencode(
        {"server": server_url, "user": user, "code": code}, quote_via=quote
    )
    return f"strongroom-activate:?{query}"


def qr_svg(text: str) -> str:
    qr = segno.make(text, error="m")
    svg: str = qr.svg_inline(
        scale=5, border=4, dark="#000", light="#fff", title="activation QR code"
    )
    return svg


def show(value: Any) -> str:
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
