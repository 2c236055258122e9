"""Server logs: JSON lines for machines, plain lines for a person at a terminal.

Rules:

1. What goes in a log record is the caller's format string and arguments; no module of the
   server logs message bodies, keys, codes or tokens (``docs/security.md``).  The tests grep
   the logs for a plaintext marker.
2. The log file is always JSON lines (one object per line: ``time``, ``level``, ``logger``,
   ``message``, and ``error`` with the exception type when there is one); stderr is JSON
   unless it is a terminal.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import TextIO

__all__ = ["JsonFormatter", "setup_logging"]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info and record.exc_info[0] is not None:
            entry["error"] = record.exc_info[0].__name__
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def setup_logging(log_file: Path, stream: TextIO = sys.stderr) -> None:
    log_file.parent.mkdir(exist_ok=True)
    root = logging.getLogger("strongroom")
    root.setLevel(logging.INFO)
    file_handler = logging.FileHandler(log_file)
    file_handler.setFormatter(JsonFormatter())
    stream_handler = logging.StreamHandler(stream)
    stream_handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        if stream.isatty()
        else JsonFormatter()
    )
    for handler in (file_handler, stream_handler):
        root.addHandler(handler)
