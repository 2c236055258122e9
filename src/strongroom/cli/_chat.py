"""``strongroom chat``: open the full-screen messenger for a device home."""

from __future__ import annotations

from strongroom.errors import StrongroomError

from ._common import fail
from ._device import HomeOpt
from ._passcode import passcode_for

__all__ = ["chat"]


def chat(home: HomeOpt) -> None:
    """Open the full-screen messenger (conversations, files, groups, verification)."""
    try:
        # Textual is imported here, not at start-up: the other commands never need it.
        from strongroom.app import ChatApp
    except ImportError as exc:
        fail(f"the chat app needs Textual, which is missing: {exc.name}")
    try:
        app = ChatApp(home, passcode=passcode_for(home))
    except StrongroomError as exc:
        fail(str(exc))
    app.run()
