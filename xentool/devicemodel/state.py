"""An HVM guest's device state in QEMU (its emulated devices, not the guest's memory): saved for
`xentool save`, loaded by the QEMU that `xentool restore` starts.

As libxl does for a restricted QEMU (dm_state_save_to_fdset): QEMU, chrooted in an empty
directory, cannot open a file of ours, so it is handed one over QMP (add-fd, then
xen-save-devices-state into /dev/fdset/N), after ``stop``.  Here the file is a memfd, read back
into the save file.  A restored guest's QEMU reads the state from an inherited descriptor
(``-incoming fd:N``, libxl's way too).
"""

from __future__ import annotations

import os

from xentool.devicemodel.qmp import qmp_execute

FDSET = 1
SAVE_TIMEOUT = 60.0  # seconds: a few MiB through a slow dom0
INCOMING_FD = 200  # the descriptor number a restored QEMU reads its state from


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


__all__ = ["INCOMING_FD", "save_device_state"]
