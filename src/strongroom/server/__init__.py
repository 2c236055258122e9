"""The Strongroom server: HTTP API and WebSocket stream over a ``Store`` and a ``Bus``.

Names are imported on first use (PEP 562), so that a command that only reads the data
directory (``DataDir``) does not load the whole server.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import create_app
    from ._config import Config, DataDir, init_data_dir
    from ._context import ServerContext
    from ._serve import build_context, migrate, serve

__all__ = [
    "Config",
    "DataDir",
    "ServerContext",
    "build_context",
    "create_app",
    "init_data_dir",
    "migrate",
    "serve",
]

_WHERE = {
    "create_app": "._app",
    "Config": "._config",
    "DataDir": "._config",
    "init_data_dir": "._config",
    "ServerContext": "._context",
    "build_context": "._serve",
    "migrate": "._serve",
    "serve": "._serve",
}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value
