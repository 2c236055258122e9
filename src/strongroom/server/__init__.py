"""The Strongroom server: HTTP API and WebSocket stream over a ``Store`` and a ``Bus``."""

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
