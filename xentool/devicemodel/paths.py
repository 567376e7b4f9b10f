"""Where a guest's QEMU is found, in libxl's places so that xl finds xentool's QEMU and the
reverse.  Free of the config model: destroying a guest needs these and nothing else of it."""

from __future__ import annotations

from pathlib import Path

LOG_DIR = Path("/var/log/xentool/device-model")


def qmp_socket_path(domid: int) -> str:
    """libxl's QMP socket for ``domid`` (libxl__qemu_qmp_path), where xl also connects."""
    return f"/var/run/xen/qmp-libxl-{domid}"


def device_model_log_path(uuid: str) -> Path:
    return LOG_DIR / f"{uuid}.log"


def dm_state_path(domid: int) -> str:
    """QEMU's xenstore directory, dom0's only; QEMU writes ``state`` there (``running``)."""
    return f"/local/domain/0/device-model/{domid}"


def dm_pid_path(domid: int) -> str:
    """libxl's node for QEMU's pid (libxl__dm_active reads it)."""
    return f"/local/domain/{domid}/image/device-model-pid"
