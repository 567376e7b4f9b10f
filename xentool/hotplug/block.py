"""A disk for blkback: the block device behind the vbd (a loop device for an image file), written
as ``physical-device`` into the backend directory, then the wait until blkback has opened it.

What Xen's block hotplug script does on "add", in-process.  The loop device detaches itself when
blkback lets go of it (see :mod:`.loop`), so removing a vbd needs no script on the way out.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass

from hypercalls.interface import XenStore
from pvdrivers.xenbus import XenbusState
from xentool.errors import DeviceError
from xentool.hotplug import loop
from xentool.hotplug.backend import backend_error, backend_state, sysfs_device, wait_for

BLKBACK_TIMEOUT = 20.0  # seconds for blkback to open the device; it does so at once when it works


@dataclass(frozen=True)
class VbdTarget:
    """Which vbd of which domain gets which image or device (the parts of a Disk hotplug needs)."""

    domain: str  # the guest's name, for messages
    domid: int
    devid: int
    vdev: str
    backend: str  # the backend directory
    backend_domid: int
    target: str
    read_only: bool


def attach_vbd(xs: XenStore, vbd: VbdTarget, timeout: float = BLKBACK_TIMEOUT) -> str:
    """Give blkback the block device behind ``vbd.target``; returns the device's path."""
    device = f"disk {vbd.vdev}"
    try:
        mode = os.stat(vbd.target).st_mode
    except OSError as e:
        raise DeviceError(vbd.domain, device, f"{vbd.target}: {e.strerror}; fix the disk's target") from e
    held: loop.LoopDevice | None = None
    if stat.S_ISBLK(mode):
        rdev = os.stat(vbd.target).st_rdev
        path, major, minor = vbd.target, os.major(rdev), os.minor(rdev)
    elif stat.S_ISREG(mode):
        try:
            held = loop.attach(vbd.target, vbd.read_only)
        except OSError as e:
            raise DeviceError(vbd.domain, device, f"cannot put {vbd.target} behind a loop device: {e.strerror or e} "
                              "(is the loop module loaded?)") from e
        path, major, minor = held.path, held.major, held.minor
    else:
        raise DeviceError(vbd.domain, device, f"{vbd.target} is neither an image file nor a block device")
    try:
        # As the block script writes them; blkback reads physical-device as "%x:%x".
        xs.write(f"{vbd.backend}/physical-device-path", path)
        xs.write(f"{vbd.backend}/node", path)
        xs.write(f"{vbd.backend}/physical-device", f"{major:x}:{minor:x}")
        _wait_until_opened(xs, vbd, device, timeout)
    finally:
        if held is not None:
            held.release()  # blkback holds it now, or (failure) it detaches here
    return path


def _wait_until_opened(xs: XenStore, vbd: VbdTarget, device: str, timeout: float) -> None:
    """blkback shows the vbd's physical_device in sysfs once it has opened the device, or goes to
    Closing with an error node when it could not."""
    opened = f"{sysfs_device('vbd', vbd.domid, vbd.devid)}/physical_device"

    def settled() -> bool:
        return os.path.exists(opened) or (backend_state(xs, vbd.backend) or 0) >= XenbusState.CLOSING

    if not wait_for(settled, timeout):
        raise DeviceError(vbd.domain, device, f"blkback did not take {vbd.target} within {timeout:g} s "
                          f"(backend state {backend_state(xs, vbd.backend)}); is xen-blkback loaded in domain {vbd.backend_domid}?")
    if not os.path.exists(opened):
        why = backend_error(xs, vbd.backend_domid, vbd.backend) or "no reason given"
        raise DeviceError(vbd.domain, device, f"blkback refused {vbd.target}: {why}")
