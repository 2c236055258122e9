"""``strongroom chat``: the full-screen terminal messenger (Textual) on the device SDK.

The app holds no messaging logic of its own: sending, the outbox and reconnecting,
history and search, verification and trust are ``strongroom.client``'s; this package
draws them and maps keys to them.  See docs/chat.md.
"""

from ._app import ChatApp, run_chat

__all__ = ["ChatApp", "run_chat"]
