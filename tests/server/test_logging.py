"""The server's log: JSON lines for machines, plain lines for a person at a terminal."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from strongroom.server._logging import setup_logging


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def strongroom_logger() -> Iterator[logging.Logger]:
    """The ``strongroom`` logger, with what ``setup_logging`` adds to it taken off again
    afterwards (it is process-wide)."""
    logger = logging.getLogger("strongroom")
    handlers, level = list(logger.handlers), logger.level
    yield logger
    for handler in logger.handlers:
        if handler not in handlers:
            logger.removeHandler(handler)
            handler.close()
    logger.setLevel(level)


def _log_a_start_and_a_failure() -> None:
    log = logging.getLogger("strongroom.server")
    log.info("serving %s on %s", "Embassy", "http://127.0.0.1:8700")
    try:
        raise ConnectionResetError("the peer went away")
    except ConnectionResetError:
        log.exception("stream handler failed")


def test_a_stream_that_is_no_terminal_gets_json_lines_like_the_file(
    tmp_path: Path, strongroom_logger: logging.Logger
) -> None:
    stream = io.StringIO()
    setup_logging(tmp_path / "logs" / "server.log", stream)
    _log_a_start_and_a_failure()
    for handler in strongroom_logger.handlers:
        handler.flush()

    lines = stream.getvalue().splitlines()
    assert lines == (tmp_path / "logs" / "server.log").read_text().splitlines()
    started, failed = (json.loads(line) for line in lines)  # one object per line
    assert set(started) == {"time", "level", "logger", "message"}
    assert started["level"] == "info" and started["logger"] == "strongroom.server"
    assert started["message"] == "serving Embassy on http://127.0.0.1:8700"
    assert started["time"].endswith("Z") and "T" in started["time"]
    assert failed["level"] == "error" and failed["message"] == "stream handler failed"
    assert failed["error"] == "ConnectionResetError"
    assert "the peer went away" in failed["traceback"]


def test_a_terminal_gets_plain_lines_and_the_file_stays_json(
    tmp_path: Path, strongroom_logger: logging.Logger
) -> None:
    stream = Terminal()
    setup_logging(tmp_path / "logs" / "server.log", stream)
    _log_a_start_and_a_failure()
    for handler in strongroom_logger.handlers:
        handler.flush()

    first = stream.getvalue().splitlines()[0]
    assert first.endswith(
        " INFO strongroom.server: serving Embassy on http://127.0.0.1:8700"
    )
    with pytest.raises(json.JSONDecodeError):
        json.loads(first)
    in_file = (tmp_path / "logs" / "server.log").read_text().splitlines()
    assert [json.loads(line)["level"] for line in in_file] == ["info", "error"]
