"""QEMU's PV disk backend (qdisk): the disks blkback cannot serve, such as qcow2 images.

A QEMU started with ``-machine xenpv -xen-attach`` for a PV or PVH guest (xentool.create.pv_backend)
watches dom0's backend/qdisk/DOMID directory and takes up each disk whose backend is online and in
state Initialising: it opens the image, then moves the backend to InitWait for the guest's blkfront.
If it cannot open the image it says why in its log and leaves the state as it was (trying again at
the next change), so "still Initialising" plus QEMU's last log line is the error.
"""

from __future__ import annotations

from pathlib import Path

from hypercalls.interface import XenStore
from pvdrivers.xenbus import XenbusState
from xentool.config.model import Disk
from xentool.devicemodel.process import last_log_line
from xentool.errors import DeviceError
from xentool.hotplug.backend import backend_state, wait_for

READY_TIMEOUT = 10.0  # seconds for a running QEMU to take up a qdisk


def wait_until_taken_up(xs: XenStore, name: str, disk: Disk, backend: str, log_path: Path,
                        timeout: float = READY_TIMEOUT) -> None:
    """Return once QEMU has the disk open (backend past Initialising); else raise with QEMU's words."""
    wait_for(lambda: (backend_state(xs, backend) or XenbusState.INITIALISING) != XenbusState.INITIALISING, timeout)
    state = backend_state(xs, backend)
    if state is None or state in (XenbusState.INITIALISING, XenbusState.CLOSING, XenbusState.CLOSED):
        seen = state.name.lower() if state is not None else "missing"
        raise DeviceError(name, f"disk {disk.vdev}", f"QEMU did not take up the {disk.format.value} image {disk.target} "
                          f"within {timeout:g} s (backend {seen}): {last_log_line(log_path)}")
