"""Where the lab keeps things: a per-user cache of Debian packages and built images, and one state
directory per running lab (pid file, sockets, lock, serial log)."""

from __future__ import annotations

import os
import re
from pathlib import Path

from xentool.errors import UsageError

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise UsageError(f"lab name {name!r}: use 1-32 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/xentool/lab, or ~/.cache/xentool/lab."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "xentool" / "lab"


def labs_dir() -> Path:
    """$XDG_RUNTIME_DIR/xentool/labs, or ~/.local/state/xentool/labs."""
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and Path(runtime).is_dir():
        return Path(runtime) / "xentool" / "labs"
    return Path.home() / ".local" / "state" / "xentool" / "labs"


def state_dir(name: str) -> Path:
    return labs_dir() / check_name(name)
