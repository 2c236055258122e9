"""`strongroom admin escrow …` and `strongroom custodian …`: the lawful-access ceremony,
requests, the custodians' approvals and the export (docs/lawful-access.md).

A custodian's share file is JSON: the public facts of the ceremony in the clear (org,
server, index, threshold, S, commitments, KDF parameters, salt, nonce) and, sealed with
AES-256-GCM under Argon2id(passphrase) with those facts as associated data, the share and
the custodian's access token.  `custodian paper` prints the same file as groups of
base32 letters for paper; `--share` accepts either form.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import os
import re
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import msgspec
import typer
from argon2.low_level import Type, hash_secret_raw
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from rich.table import Table

from strongroom import proto
from strongroom.client._passcode import kdf_params
from strongroom.crypto import _escrow as escrow
from strongroom.errors import ClientError
from strongroom.server import DataDir

from ._admin import JsonOpt, _State, admin_app, answer, call
from ._common import console, err_console, fail, run

__all__ = ["custodian_app", "escrow_app"]

escrow_app = typer.Typer(help="Lawful-access escrow: custodians, requests, exports.")
custodian_app = typer.Typer(
    help="For escrow custodians: check a share, approve a request."
)
admin_app.add_typer(escrow_app, name="escrow")

PASSPHRASE_ENV = "STRONGROOM_CUSTODIAN_PASSPHRASE"  # noqa: S105 (a variable name)
_FORMAT = "strongroom-custodian-share"


class _Header(msgspec.Struct, frozen=True):
    format: str
    version: int
    org: str
    server: str
    index: int
    custodians: int
    threshold: int
    public: bytes
    commitments: list[bytes]
    time_cost: int
    memory_kib: int
    parallelism: int
    salt: bytes
    nonce: bytes


class _ShareFile(msgspec.Struct, frozen=True):
    header: _Header
    sealed: bytes


class _Secret(msgspec.Struct, frozen=True, array_like=True):
    value: bytes
    token: str


def _kek(passphrase: str, h: _Header) -> bytes:
    return hash_secret_raw(
        passphrase.encode(),
        h.salt,
        time_cost=h.time_cost,
        memory_cost=h.memory_kib,
        parallelism=h.parallelism,
        hash_len=32,
        type=Type.ID,
    )


def seal_share(header: _Header, secret: _Secret, passphrase: str) -> bytes:
    aad = msgspec.json.encode(header)
    sealed = AESGCM(_kek(passphrase, header)).encrypt(
        header.nonce, msgspec.msgpack.encode(secret), aad
    )
    return msgspec.json.encode(_ShareFile(header, sealed))


def _read_share_file(path: Path) -> _ShareFile:
    try:
        data = path.read_bytes()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror}")
    if not data.lstrip().startswith(b"{"):  # the paper form
        words = [
            word
            for line in data.decode(errors="replace").upper().splitlines()
            for word in line.split()[1:]  # each line starts with its number
        ]
        letters = re.sub(r"[^A-Z2-7]", "", "".join(words)).encode()
        try:
            data = base64.b32decode(letters + b"=" * (-len(letters) % 8))
        except ValueError:
            fail(f"{path} is neither a share file nor its paper form")
    try:
        share = msgspec.json.decode(data, type=_ShareFile)
    except msgspec.DecodeError:
        fail(f"{path} is not a Strongroom custodian share file")
    if share.header.format != _FORMAT or share.header.version != 1:
        fail(f"{path} is not a Strongroom custodian share file (version 1)")
    return share


def open_share(path: Path) -> tuple[_Header, escrow.Share, str]:
    share = _read_share_file(path)
    passphrase = os.environ.get(PASSPHRASE_ENV)
    if not passphrase:
        if not sys.stdin.isatty():
            fail(f"no passphrase: set {PASSPHRASE_ENV} or run this at a terminal")
        passphrase = typer.prompt("Custodian passphrase", hide_input=True, err=True)
    try:
        plain = AESGCM(_kek(passphrase, share.header)).decrypt(
            share.header.nonce, share.sealed, msgspec.json.encode(share.header)
        )
    except Exception:
        fail("the passphrase does not open this share (or the file was altered)")
    secret = msgspec.msgpack.decode(plain, type=_Secret)
    return share.header, escrow.Share(share.header.index, secret.value), secret.token


def _ask_passphrase(index: int) -> str:
    given = os.environ.get(f"{PASSPHRASE_ENV}_{index}")
    if given:
        return given
    if not sys.stdin.isatty():
        fail(f"no passphrase for custodian {index}: set {PASSPHRASE_ENV}_{index}")
    return str(
        typer.prompt(
            f"Passphrase for custodian {index}",
            hide_input=True,
            confirmation_prompt=True,
        )
    )


# --- admin ------------------------------------------------------------------------------


@escrow_app.command("init")
def escrow_init(
    custodians: Annotated[int, typer.Option("--custodians", help="n: how many")],
    threshold: Annotated[
        int, typer.Option("--threshold", help="k: how many must agree")
    ],
    out: Annotated[Path, typer.Option("--out", help="directory for the share files")],
) -> None:
    """Run the ceremony: a fresh secret split k-of-n, one sealed share file each.

    The secret exists only in this process's memory; the server receives the public key
    and the commitments.  Passphrases: STRONGROOM_CUSTODIAN_PASSPHRASE_<i> or prompts.
    """
    if not 1 <= threshold <= custodians <= escrow.MAX_CUSTODIANS:
        fail(f"need 1 <= threshold <= custodians <= {escrow.MAX_CUSTODIANS}")
    passphrases = [_ask_passphrase(i) for i in range(1, custodians + 1)]
    for i, p in enumerate(passphrases, 1):
        if len(p) < 12:
            fail(f"custodian {i}'s passphrase is shorter than 12 characters")
    server = DataDir(_State.data).server_url()
    ceremony = escrow.new_ceremony(custodians, threshold)
    tokens = [secrets.token_urlsafe(24) for _ in range(custodians)]
    params = kdf_params()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        fail(f"cannot create {out}: {exc.strerror}")
    files = []
    for share, token, passphrase in zip(
        ceremony.shares, tokens, passphrases, strict=True
    ):
        header = _Header(
            format=_FORMAT,
            version=1,
            org="",
            server=server,
            index=share.index,
            custodians=custodians,
            threshold=threshold,
            public=ceremony.public,
            commitments=ceremony.commitments,
            time_cost=params.time_cost,
            memory_kib=params.memory_kib,
            parallelism=params.parallelism,
            salt=os.urandom(16),
            nonce=os.urandom(12),
        )
        path = out / f"custodian-{share.index}.share"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(seal_share(header, _Secret(share.value, token), passphrase))
        files.append(path)
    status = run(
        call(
            "POST",
            "/v1/admin/escrow",
            proto.EscrowStatus,
            proto.EscrowSetup(
                custodians=custodians,
                threshold=threshold,
                public=ceremony.public,
                commitments=ceremony.commitments,
                token_hashes=[hashlib.sha256(t.encode()).hexdigest() for t in tokens],
            ),
        )
    )
    del ceremony  # the only copy of the shares in memory goes with it
    console.print(
        f"escrow set up: {status.threshold} of {status.custodians} custodians; "
        f"key {(status.public or b'').hex()[:16]}…"
    )
    for path in files:
        console.print(
            f"  share file: {path}  (hand it to its custodian, then delete it)"
        )
    console.print(
        "escrow stays off until policy turns it on: admin policy set escrow on"
    )


@escrow_app.command("status")
def escrow_status(as_json: JsonOpt = False) -> None:
    """Whether escrow is set up, and its custodians."""
    status = run(call("GET", "/v1/admin/escrow", proto.EscrowStatus))
    if as_json:
        print(json.dumps(msgspec.to_builtins(status)))
        return
    if not status.set_up:
        console.print("escrow is not set up")
        return
    console.print(
        f"escrow set up at {status.at}: {status.threshold} of {status.custodians} "
        f"custodians; key {(status.public or b'').hex()}"
    )


def _print_request(view: proto.EscrowRequestView) -> None:
    console.print(
        f"request [bold]{view.id}[/]: {view.user} from {view.start} to {view.end}; "
        f"reason: {view.reason}"
        + (f"; reference {view.reference}" if view.reference else "")
    )
    console.print(
        f"approvals: {len(view.approvals)} of {view.threshold} "
        f"({', '.join(map(str, view.approvals)) or 'none'}); {view.state}"
    )
    table = Table("conversation", "day", "sealed copies")
    for s in view.scopes:
        table.add_row(s.conversation, s.day, str(s.copies))
    console.print(table)


@escrow_app.command("request")
def escrow_request(
    user: Annotated[str, typer.Option("--user")],
    start: Annotated[str, typer.Option("--from", help="first UTC day, YYYY-MM-DD")],
    end: Annotated[str, typer.Option("--to", help="last UTC day, YYYY-MM-DD")],
    reason: Annotated[str, typer.Option("--reason")],
    reference: Annotated[str, typer.Option("--reference")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Record a request and list the scopes it would open.  It opens nothing."""
    for day in (start, end):
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", day):
            fail(f"{day!r} is not a day like 2026-11-28")
    view = run(
        call(
            "POST",
            "/v1/admin/escrow/requests",
            proto.EscrowRequestView,
            proto.EscrowRequestAsk(user, start, end, reason, reference),
        )
    )
    if as_json:
        print(json.dumps(msgspec.to_builtins(view)))
        return
    _print_request(view)


@escrow_app.command("show")
def escrow_show(request: str, as_json: JsonOpt = False) -> None:
    """Show one request and its approvals."""
    view = run(
        call("GET", f"/v1/admin/escrow/requests/{request}", proto.EscrowRequestView)
    )
    if as_json:
        print(json.dumps(msgspec.to_builtins(view)))
        return
    _print_request(view)


@escrow_app.command("export")
def escrow_export(
    request: str,
    out: Annotated[
        Path, typer.Argument(help="directory for report.html and messages.jsonl")
    ],
) -> None:
    """With k approvals: write the released messages of the request's scopes."""
    export = run(
        call("GET", f"/v1/admin/escrow/requests/{request}/export", proto.EscrowExport)
    )
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "messages.jsonl").write_text(
            "".join(json.dumps(msgspec.to_builtins(m)) + "\n" for m in export.messages)
        )
        (out / "report.html").write_text(_report(export))
    except OSError as exc:
        fail(f"cannot write to {out}: {exc.strerror}")
    console.print(
        f"released {len(export.messages)} messages of {len(export.request.scopes)} "
        f"scopes to {out}; authorised by audit entries {export.audit_entries} "
        f"(digest {export.audit_digest[:16]}…)"
    )


def _report(export: proto.EscrowExport) -> str:
    r = export.request
    e = html.escape
    rows = "".join(
        f"<tr><td>{e(m.conversation)}</td><td>{e(m.sent_at)}</td><td>{e(m.from_user)}"
        f"</td><td>{e(m.kind)}</td><td>{e(m.text or m.file_name)}</td></tr>"
        for m in export.messages
    )
    scopes = "".join(
        f"<li>{e(s.conversation)} on {e(s.day)} ({s.copies} copies)</li>"
        for s in r.scopes
    )
    return f"""<!doctype html><html><head><meta charset="utf-8">
<title>Strongroom escrow release {e(r.id)}</title></head><body>
<h1>Escrow release {e(r.id)}</h1>
<p>User: {e(r.user)}; days {e(r.start)} to {e(r.end)}; reason: {e(r.reason)};
reference: {e(r.reference)}; requested {e(r.created_at)}.</p>
<p>Approved by custodians {", ".join(map(str, r.approvals))} (threshold {r.threshold}).
Authorising audit entries {export.audit_entries}, digest
<code>{e(export.audit_digest)}</code>.</p>
<h2>Scopes opened</h2><ul>{scopes}</ul>
<h2>Messages ({len(export.messages)})</h2>
<table border="1"><tr><th>conversation</th><th>sent</th><th>from</th><th>kind</th>
<th>content</th></tr>{rows}</table></body></html>
"""


# --- custodians -------------------------------------------------------------------------

ShareOpt = Annotated[
    Path, typer.Option("--share", help="your share file (or its paper form)")
]


async def _custodian_call(
    header: _Header,
    token: str,
    method: str,
    path: str,
    kind: type[Any],
    body: bytes = b"",
) -> Any:
    async with httpx.AsyncClient(base_url=header.server, timeout=60.0) as http:
        try:
            response = await http.request(
                method,
                path,
                content=body,
                headers={"authorization": f"Custodian {header.index} {token}"},
            )
        except httpx.HTTPError as exc:
            raise ClientError(f"cannot reach the server at {header.server}") from exc
    return answer(response, kind)


@custodian_app.command("check")
def custodian_check(share: ShareOpt) -> None:
    """Open your share with your passphrase and check it against the commitments."""
    header, secret, _ = open_share(share)
    if not escrow.check_share(secret, header.commitments):
        fail(f"share {header.index} does NOT match the ceremony's commitments")
    console.print(
        f"share {header.index} of {header.custodians} (threshold {header.threshold}) "
        "matches the ceremony's commitments"
    )


@custodian_app.command("paper")
def custodian_paper(share: ShareOpt) -> None:
    """Print the (still sealed) share file as letters for paper."""
    data = msgspec.json.encode(_read_share_file(share))
    letters = base64.b32encode(data).decode().rstrip("=")
    groups = [letters[i : i + 4] for i in range(0, len(letters), 4)]
    for n in range(0, len(groups), 8):
        print(f"{n // 8 + 1:3d}  " + " ".join(groups[n : n + 8]))


@custodian_app.command("approve")
def custodian_approve(
    request: str,
    share: ShareOpt,
    yes: Annotated[bool, typer.Option("--yes", help="do not ask to confirm")] = False,
) -> None:
    """Compute your partials for exactly the request's scopes, with proofs, and send them."""
    header, secret, token = open_share(share)
    if not escrow.check_share(secret, header.commitments):
        fail("your share does not match its commitments: do not use it")
    task: proto.CustodianTask = run(
        _custodian_call(
            header, token, "GET", f"/v1/escrow/requests/{request}", proto.CustodianTask
        )
    )
    view = task.request
    _print_request(view)
    if not yes and not typer.confirm("Approve this request?", err=True):
        err_console.print("not approved")
        raise typer.Exit(1)
    partials = []
    for item in task.items:
        h = escrow.scope_scalar(task.org, item.conversation, item.day)
        for e in item.ephemerals:
            p = escrow.make_partial(secret, h, e)
            partials.append(
                proto.PartialItem(item.conversation, item.day, e, p.value, p.c, p.z)
            )
    result: proto.EscrowRequestView = run(
        _custodian_call(
            header,
            token,
            "POST",
            f"/v1/escrow/requests/{request}/partials",
            proto.EscrowRequestView,
            proto.encode_json(proto.PartialsPost(header.index, partials)),
        )
    )
    console.print(
        f"approved: {len(partials)} partials sent; {len(result.approvals)} of "
        f"{result.threshold} custodians have approved"
    )
