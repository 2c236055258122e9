"""How refusals leave the HTTP API: a status, a stable code, a sentence for the user."""

from __future__ import annotations

from strongroom import proto

__all__ = ["ApiRefusal"]


class ApiRefusal(Exception):
    """Raised by a handler to answer with an error body; never escapes the app."""

    def __init__(
        self,
        status: int,
        code: proto.ErrorCode,
        detail: str,
        tries_left: int | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.body = proto.ErrorBody(
            code=code.value, detail=detail, tries_left=tries_left
        )
