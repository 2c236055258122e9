"""Running the ``strongroom`` command as a user would: a separate process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

__all__ = ["sr"]


def sr(
    *args: str | Path, check: bool = True, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``strongroom ARGS``; with ``check``, fail the test if it exits non-zero."""
    result = subprocess.run(
        [sys.executable, "-m", "strongroom", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200", "NO_COLOR": "1", **(env or {})},
    )
    if check:
        assert result.returncode == 0, result.stderr
    return result
