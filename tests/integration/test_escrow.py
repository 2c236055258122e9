"""Lawful-access escrow end to end: the ceremony, a request, custodians' approvals, the
export of exactly the requested conversation-days, and what stays closed.

Real server, real devices, the real command line for IT and custodians.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
from pathlib import Path

import httpx
import pytest
import rbcl  # type: ignore[import-untyped]

from _cli import sr
from conftest import Org, arun, receive, send
from strongroom import proto
from strongroom.cli import _escrow as cli_escrow
from strongroom.crypto import _escrow as escrow
from strongroom.errors import CryptoError

CHEAP = {"STRONGROOM_TEST_PASSCODE_KDF": "1,8,1"}
PASSPHRASES = {
    f"STRONGROOM_CUSTODIAN_PASSPHRASE_{i}": f"custodian {i} passphrase"
    for i in (1, 2, 3)
}


def admin(
    org: Org, *args: str | Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return sr(
        "admin",
        "--data",
        org.data.path,
        *args,
        check=check,
        env={**CHEAP, **(env or {})},
    )


def custodian(
    index: int, *args: str | Path, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**CHEAP, "STRONGROOM_CUSTODIAN_PASSPHRASE": f"custodian {index} passphrase"}
    return sr("custodian", *args, check=check, env=env)


def open_share(
    path: Path, index: int, monkeypatch: pytest.MonkeyPatch
) -> tuple[escrow.Share, str]:
    monkeypatch.setenv(
        "STRONGROOM_CUSTODIAN_PASSPHRASE", f"custodian {index} passphrase"
    )
    _, share, token = cli_escrow.open_share(path)
    return share, token


def ceremony(org: Org) -> Path:
    shares = org.root / "shares"
    done = admin(
        org,
        "escrow",
        "init",
        "--custodians",
        "3",
        "--threshold",
        "2",
        "--out",
        shares,
        env=PASSPHRASES,
    )
    assert "2 of 3 custodians" in done.stdout
    return shares


def connect(home: Path) -> None:
    arun(receive(home, 0.3))


def test_a_request_opens_exactly_its_scopes_with_k_custodians(
    org: Org, monkeypatch: pytest.MonkeyPatch
) -> None:
    refused = admin(org, "policy", "set", "escrow", "on", check=False)
    assert "before the custodians' ceremony" in refused.stderr
    shares = ceremony(org)
    for i in (1, 2, 3):
        checked = custodian(i, "check", "--share", shares / f"custodian-{i}.share")
        assert "matches the ceremony's commitments" in checked.stdout
    wrong = sr("custodian", "check", "--share", shares / "custodian-1.share", check=False,
               env={**CHEAP, "STRONGROOM_CUSTODIAN_PASSPHRASE": "not the passphrase"})  # fmt: skip
    assert "does not open this share" in wrong.stderr

    admin(org, "policy", "set", "escrow", "on")
    alice, bob, carol = (org.activate(u) for u in ("alice", "bob", "carol"))
    for home in (alice, bob, carol):
        connect(home)
    shown = json.loads(sr("device", "info", "--home", bob, "--json").stdout)
    assert shown["escrow"] is True
    arun(send(alice, "bob", "escrowed marker 7f3a"))
    arun(send(bob, "alice", "reply marker 91bc"))
    arun(send(alice, "carol", "outside marker 44d0"))
    today = dt.datetime.now(dt.UTC).date().isoformat()

    asked = admin(org, "escrow", "request", "--user", "bob", "--from", today, "--to", today,
                  "--reason", "case 12: fraud inquiry", "--reference", "W-12", "--json")  # fmt: skip
    request = json.loads(asked.stdout)
    assert [(s["conversation"], s["copies"]) for s in request["scopes"]] == [
        ("dm:alice:bob", 2)
    ]
    rid = request["id"]

    custodian(1, "approve", rid, "--share", shares / "custodian-1.share", "--yes")
    early = admin(org, "escrow", "export", rid, org.root / "early", check=False)
    assert "1 of the 2 custodian approvals" in early.stderr
    assert not (org.root / "early").exists()

    # a malicious custodian 2 sends partials that are not s_2·(h·E): refused and named
    share2, token2 = open_share(shares / "custodian-2.share", 2, monkeypatch)
    task = proto.decode_json(
        httpx.get(
            f"{org.url}/v1/escrow/requests/{rid}",
            headers={"authorization": f"Custodian 2 {token2}"},
        ).content,
        proto.CustodianTask,
    )
    stranger = httpx.get(
        f"{org.url}/v1/escrow/requests/{rid}",
        headers={"authorization": "Custodian 2 not-the-token"},
    )
    assert stranger.status_code == 401  # the request and its points: custodians only
    forged = []
    for item in task.items:
        for e in item.ephemerals:
            p = escrow.make_partial(escrow.Share(2, share2.value), item.h, e)
            liar = escrow.make_partial(
                escrow.Share(2, escrow.new_ceremony(1, 1).shares[0].value), item.h, e
            )
            forged.append(
                proto.PartialItem(item.conversation, item.day, e, liar.value, p.c, p.z)
            )
    bad = httpx.post(
        f"{org.url}/v1/escrow/requests/{rid}/partials",
        content=proto.encode_json(proto.PartialsPost(2, forged)),
        headers={"authorization": f"Custodian 2 {token2}"},
    )
    assert bad.status_code == 400
    assert (
        f"custodian 2's partial for dm:alice:bob on {today} does not verify" in bad.text
    )

    custodian(2, "approve", rid, "--share", shares / "custodian-2.share", "--yes")
    out = org.root / "release"
    done = admin(org, "escrow", "export", rid, out)
    assert "released 2 messages" in done.stdout
    lines = [json.loads(x) for x in (out / "messages.jsonl").read_text().splitlines()]
    assert sorted(m["text"] for m in lines) == [
        "escrowed marker 7f3a",
        "reply marker 91bc",
    ]
    report = (out / "report.html").read_text()
    assert "escrowed marker 7f3a" in report and "case 12: fraud inquiry" in report
    assert "outside marker 44d0" not in report + (out / "messages.jsonl").read_text()

    # the server holds the copies sealed: no marker text anywhere in its database
    stored = org.database_contents()
    for marker in (
        b"escrowed marker 7f3a",
        b"reply marker 91bc",
        b"outside marker 44d0",
    ):
        assert marker not in stored
    # every step is in the audit log, and it verifies
    audit = json.loads(admin(org, "audit", "show", "--json").stdout)
    steps = [a["action"] for a in audit if a["action"].startswith("escrow.")]
    assert steps == ["escrow.ceremony", "escrow.request", "escrow.approve",
                     "escrow.partial_rejected", "escrow.approve", "escrow.export"]  # fmt: skip
    assert "verifies" in admin(org, "audit", "verify").stdout

    # the released keys open nothing outside the request: alice and carol stay closed
    share1, _ = open_share(shares / "custodian-1.share", 1, monkeypatch)
    org_name = "Test Ministry"
    copies = org.sql(
        "SELECT sender, message_id, conversation, day, ephemeral, sealed FROM escrow_copies"
    )
    inside = [c for c in copies if c[2] == "dm:alice:bob"]
    outside = [c for c in copies if c[2] == "dm:alice:carol"]
    assert inside and outside

    def key_with(
        shares_: list[escrow.Share], conversation: str, day: str, e: bytes
    ) -> bytes:
        h = escrow.scope_scalar(org_name, conversation, day)
        return escrow.combine([escrow.make_partial(s, h, e) for s in shares_], h)

    sender, mid, conv, day, e, sealed = inside[0]
    opened = escrow.open_copy(key_with([share1, share2], conv, day, bytes(e)),
                              escrow.copy_aad(sender, bytes(mid)), bytes(sealed))  # fmt: skip
    assert b"marker" in opened
    for sender, mid, _conv, day, e, sealed in outside:
        released = key_with([share1, share2], "dm:alice:bob", day, bytes(e))
        with pytest.raises(CryptoError):
            escrow.open_copy(
                released, escrow.copy_aad(sender, bytes(mid)), bytes(sealed)
            )
    # the database and k-1 shares open nothing
    for sender, mid, conv, day, e, sealed in copies:
        with pytest.raises(CryptoError):
            escrow.open_copy(key_with([share1], conv, day, bytes(e)),
                             escrow.copy_aad(sender, bytes(mid)), bytes(sealed))  # fmt: skip

    # the whole secret is nowhere on disk: not in the data directory, the share files
    # or the devices (s rebuilt here from two shares, only to look for it)
    s = rbcl.crypto_core_ristretto255_scalar_add(
        rbcl.crypto_core_ristretto255_scalar_mul(
            escrow._lagrange_at_zero(1, [1, 2]), share1.value
        ),
        rbcl.crypto_core_ristretto255_scalar_mul(
            escrow._lagrange_at_zero(2, [1, 2]), share2.value
        ),
    )
    status = json.loads(admin(org, "escrow", "status", "--json").stdout)
    assert rbcl.crypto_scalarmult_ristretto255_base(s) == base64.b64decode(
        status["public"]
    )
    needles = [s, s.hex().encode(), base64.b64encode(s), base64.urlsafe_b64encode(s)]
    for path in org.root.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not any(n in data for n in needles), path


def test_turning_escrow_off_stops_new_copies(org: Org) -> None:
    ceremony(org)
    per_user = admin(
        org, "policy", "set", "escrow", "off", "--user", "bob", check=False
    )
    assert "whole organisation only" in per_user.stderr
    admin(org, "policy", "set", "escrow", "on")
    alice = org.activate("alice")
    org.activate("bob")
    connect(alice)
    arun(send(alice, "bob", "while on"))
    ((count,),) = org.sql("SELECT COUNT(*) FROM escrow_copies")
    assert count == 1
    admin(org, "policy", "set", "escrow", "off")
    connect(alice)
    assert (
        json.loads(sr("device", "info", "--home", alice, "--json").stdout)["escrow"]
        is False
    )
    arun(send(alice, "bob", "while off"))
    assert org.sql("SELECT COUNT(*) FROM escrow_copies") == [(1,)]
    again = admin(org, "escrow", "init", "--custodians", "2", "--threshold", "2",
                  "--out", org.root / "again", check=False, env=PASSPHRASES)  # fmt: skip
    assert "a second ceremony is refused" in again.stderr


def test_share_files_in_paper_form_still_work(sqlite_org: Org) -> None:
    org = sqlite_org
    shares = ceremony(org)
    paper = custodian(3, "paper", "--share", shares / "custodian-3.share").stdout
    assert all(len(g) <= 4 for line in paper.splitlines() for g in line.split()[1:])
    (org.root / "paper.txt").write_text(paper)
    checked = custodian(3, "check", "--share", org.root / "paper.txt")
    assert "share 3 of 3" in checked.stdout
    # a share file altered by one letter no longer opens
    text = (shares / "custodian-3.share").read_text()
    doc = json.loads(text)
    doc["header"]["threshold"] = 1
    (org.root / "altered.share").write_text(json.dumps(doc))
    assert (
        "does not open"
        in custodian(
            3, "check", "--share", org.root / "altered.share", check=False
        ).stderr
    )
