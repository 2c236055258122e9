"""Service URLs as they may be shown: in messages, logs and benchmark reports."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

__all__ = ["redacted_url"]


def redacted_url(url: str) -> str:
    """``url`` without its user and password (``***@`` in their place)."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]))
