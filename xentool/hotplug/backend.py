"""Watching dom0's kernel backends (blkback, netback) through sysfs and xenstore.

A kernel backend registers one device on the xen-backend bus per backend directory in xenstore,
named TYPE-DOMID-DEVID, and unregisters it (letting go of the block device, the network interface,
the guest's granted pages) once that directory is gone.  A backend that fails writes why under
/local/domain/BACKEND/error/ (xenbus_dev_fatal) and moves to Closing.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from hypercalls.interface import XenStore
from pvdrivers.xenbus import XenbusState, dom_path

XEN_BACKEND_BUS = "/sys/bus/xen-backend/devices"
POLL_SECONDS = 0.05
RELEASE_TIMEOUT = 15.0  # seconds for the backends to let go once a domain's devices are removed


def sysfs_device(kind: str, domid: int, devid: int) -> str:
    return f"{XEN_BACKEND_BUS}/{kind}-{domid}-{devid}"


def backend_state(xs: XenStore, backend: str) -> XenbusState | None:
    text = xs.read_or(f"{backend}/state")
    try:
        return XenbusState(int(text)) if text is not None else None
    except ValueError:
        return None


def backend_error(xs: XenStore, backend_domid: int, backend: str) -> str | None:
    """What the backend said when it failed ("2 creating vbd structure": errno, then the words)."""
    relative = backend.removeprefix(dom_path(backend_domid) + "/")
    return xs.read_or(f"{dom_path(backend_domid)}/error/{relative}/error")


def wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(POLL_SECONDS)


def domain_backend_devices(domid: int) -> list[str]:
    """The kernel backend devices still registered for ``domid`` (vbd-5-51712, vif-5-0, ...)."""
    try:
        names = os.listdir(XEN_BACKEND_BUS)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.split("-")[1:2] == [str(domid)])


def wait_until_released(domid: int, timeout: float) -> list[str]:
    """Wait until the kernel backends have let go of every device of ``domid`` (after its backend
    directories were removed); returns those still held when ``timeout`` ran out."""
    wait_for(lambda: not domain_backend_devices(domid), timeout)
    return domain_backend_devices(domid)
