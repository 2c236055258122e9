"""The device side of attachments that needs no server: file names (the transfers
themselves are tested against a real server in ``tests/integration/test_attachments``)."""

from __future__ import annotations

import pytest

from strongroom import client


@pytest.mark.parametrize(
    ("sent", "saved"),
    [
        ("report.pdf", "report.pdf"),
        ("../../etc/passwd", "_.._etc_passwd"),
        ("/etc/shadow", "_etc_shadow"),
        ("..", "attachment"),
        (".", "attachment"),
        (".bashrc", "bashrc"),
        ("-rf", "rf"),
        ("  spaced  ", "spaced"),
        ("trailing.", "trailing"),
        ("a\\b\x00c\nd", "a_bcd"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),  # a right-to-left override
        ("zero\u200bwidth", "zerowidth"),
        ("line\u2028break", "linebreak"),
        ("", "attachment"),
        ("\x00\x01", "attachment"),
        ("Ünïcödé 文件.txt", "Ünïcödé 文件.txt"),
    ],
)
def test_file_names_are_made_safe(sent: str, saved: str) -> None:
    assert client.safe_file_name(sent) == saved


def test_long_names_keep_their_extension_within_200_bytes() -> None:
    long = client.safe_file_name("x" * 300 + ".tar.gz")
    assert long.endswith("x.gz") and len(long.encode()) <= 200
    wide = client.safe_file_name("文" * 300 + ".pdf")
    assert wide.endswith(".pdf") and len(wide.encode()) <= 200
    odd = client.safe_file_name("y" * 300 + "." + "z" * 40)  # no real extension
    assert len(odd.encode()) <= 200 and odd.startswith("y")
