"""An HVM guest's device state in QEMU (its emulated devices, not the guest's memory): saved for
`xentool save` and a migration, loaded by the QEMU that a restore or a migration's target starts.

As libxl does for a restricted QEMU (dm_state_save_to_fdset): QEMU, chrooted in an empty
directory, cannot open a file of ours, so it is handed one over QMP (add-fd, then
xen-save-devices-state into /dev/fdset/N), after ``stop``.  Here the file is a memfd, read back
into the save file.

A restored guest's QEMU is started with ``-incoming defer`` before the guest's memory arrives (it
takes seconds to start, which a migration's target would otherwise add to the time the guest is
down; libxl starts it after the memory, with ``-incoming fd:N``), and is handed its state once the
memory is in place: a descriptor over QMP (getfd), read with migrate-incoming.
"""

from __future__ import annotations

import os
import select
import time
from pathlib import Path

from xentool.devicemodel.paths import qmp_socket_path
from xentool.devicemodel.process import last_log_line
from xentool.devicemodel.qmp import QmpFailed, qmp_execute, qmp_execute_until

FDSET = 1
SAVE_TIMEOUT = 60.0  # seconds: a few MiB through a slow dom0
LOAD_TIMEOUT = 60.0
INCOMING_FDNAME = "xentool-device-state"


class DeviceStateNotLoaded(Exception):
    """QEMU did not load the guest's device state; the message says what QEMU said or did."""


def save_device_state(domid: int) -> bytes:
    """Stop ``domid``'s QEMU and return its device state (QEMU's migration format)."""
    memfd = os.memfd_create("xentool-dm-state", os.MFD_CLOEXEC)
    try:
        # QEMU opens /dev/fdset/N write-only and takes only an fd whose access mode matches.
        writer = os.open(f"/proc/self/fd/{memfd}", os.O_WRONLY | os.O_CLOEXEC)
        try:
            qmp_execute(domid, [
                ("stop", None),
                ("add-fd", {"fdset-id": FDSET}),
                ("xen-save-devices-state", {"filename": f"/dev/fdset/{FDSET}", "live": False}),
                ("remove-fd", {"fdset-id": FDSET}),
            ], timeout=SAVE_TIMEOUT, pass_fd=writer)
        finally:
            os.close(writer)
        size = os.fstat(memfd).st_size
        return os.pread(memfd, size, 0)
    finally:
        os.close(memfd)


def load_device_state(domid: int, pid: int, state_fd: int, log_path: Path, timeout: float = LOAD_TIMEOUT) -> None:
    """Have ``domid``'s QEMU (started with ``-incoming defer`` and ``-S``) read its device state
    from ``state_fd``, and wait until it has: QEMU then stays paused until ``cont``.  A QEMU whose
    load fails exits, and its log says why."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(qmp_socket_path(domid)):  # made early in QEMU's start; it answers once ready
        exited = _exited(pid)
        if exited or time.monotonic() > deadline:
            raise DeviceStateNotLoaded(f"QEMU (pid {pid}) {'exited' if exited else 'did not start'} before "
                                       f"it could load the device state: {last_log_line(log_path)}")
        time.sleep(0.02)
    try:
        status = qmp_execute_until(
            domid, [("getfd", {"fdname": INCOMING_FDNAME}), ("migrate-incoming", {"uri": f"fd:{INCOMING_FDNAME}"})],
            "query-status", lambda result: result.get("status") != "inmigrate", max(deadline - time.monotonic(), 1.0),
            pass_fd=state_fd,
        ).get("status")
    except QmpFailed as e:
        if _exited(pid):
            raise DeviceStateNotLoaded(f"QEMU (pid {pid}) exited while loading the device state: "
                                       f"{last_log_line(log_path)}") from e
        raise DeviceStateNotLoaded(str(e)) from e
    if status not in ("paused", "prelaunch"):
        raise DeviceStateNotLoaded(f"QEMU (pid {pid}) reports status {status!r} after loading the device state")


def _exited(pid: int) -> bool:
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        return bool(select.select([pidfd], [], [], 0)[0])
    finally:
        os.close(pidfd)


__all__ = ["DeviceStateNotLoaded", "load_device_state", "save_device_state"]
