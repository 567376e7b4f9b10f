"""Where a guest's console lives in dom0: the log (per uuid, so it survives rename and restart, as
a guest's identity does) and the backend's socket and pid file (per domid, as the process is)."""

from __future__ import annotations

from pathlib import Path

LOG_DIR = Path("/var/log/xentool/console")
RUN_DIR = Path("/run/xentool/console")


def console_log_path(uuid: str) -> Path:
    return LOG_DIR / f"{uuid}.log"


def console_socket_path(domid: int) -> Path:
    return RUN_DIR / f"{domid}.sock"


def console_pid_path(domid: int) -> Path:
    return RUN_DIR / f"{domid}.pid"


def serial_socket_path(domid: int) -> Path:
    """Where an HVM guest's QEMU serves its serial port, for the console backend to read."""
    return RUN_DIR / f"{domid}.serial"
