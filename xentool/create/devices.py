"""Step 4: the guest's devices in xenstore: the primary console, disks (vbd) and network (vif).

Each device is a frontend directory (the guest's, readable by the backend domain) and a backend
directory (the backend domain's, readable by the guest), both in state Initialising, as
libxl__device_generic_add writes them; a backend driver then takes the device from there.  The
primary console is the exception Xen keeps for history: its frontend is /local/domain/N/console.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from hypercalls.interface import XsPerm, perms
from pvdrivers.blkif import vdev_to_devid
from pvdrivers.xenbus import XenbusState
from xentool.config import GuestConfig
from xentool.config.model import Disk, Vif
from xentool.create.plan import GUEST, Bindings, Op, Step, XenstoreTransaction, XsNode
from xentool.errors import DeviceError

# Which daemon serves the primary console: xenconsoled serves type "xenconsoled".
CONSOLE_TYPE = "xenconsoled"
CONSOLE_LIMIT = 1048576  # LIBXL_XENCONSOLE_LIMIT
INITIALISING = str(int(XenbusState.INITIALISING))


def _frontend_perms(backend_domid: int):  # type: ignore[no-untyped-def]
    return perms(GUEST, (backend_domid, XsPerm.READ))


def _backend_perms(backend_domid: int):  # type: ignore[no-untyped-def]
    return perms(backend_domid, (GUEST, XsPerm.READ))


@dataclass(frozen=True)
class CheckDiskTarget(Op):
    """The disk's image or block device must exist and be readable before the guest is given it."""

    name: str
    vdev: str
    target: str
    writable: bool

    def describe(self) -> str:
        return f"check {self.vdev} target {self.target} ({'rw' if self.writable else 'ro'})"

    def apply(self, hv, xs, bound: Bindings) -> None:  # type: ignore[no-untyped-def]
        mode = os.R_OK | (os.W_OK if self.writable else 0)
        if not os.path.exists(self.target):
            raise DeviceError(self.name, self.vdev, f"{self.target} does not exist; create the image or fix the disk's target")
        if not os.access(self.target, mode):
            raise DeviceError(self.name, self.vdev, f"{self.target} is not {'writable' if self.writable else 'readable'}")


def _backend_domid(backend: str) -> int:
    # Driver domains by name come later; the config model accepts only ids we can use today.
    return int(backend)


def console_nodes(backend_domid: int = 0) -> tuple[XsNode, ...]:
    front = "/local/domain/{domid}/console"
    back = f"/local/domain/{backend_domid}/backend/console/{{domid}}/0"
    return (
        XsNode(front, None, _frontend_perms(backend_domid)),
        XsNode(f"{front}/backend", back),
        XsNode(f"{front}/backend-id", str(backend_domid)),
        XsNode(f"{front}/limit", str(CONSOLE_LIMIT)),
        XsNode(f"{front}/type", CONSOLE_TYPE),
        XsNode(f"{front}/output", "pty"),
        XsNode(f"{front}/tty", ""),
        XsNode(f"{front}/port", "{console_port}"),
        XsNode(f"{front}/ring-ref", "{console_mfn}"),
        XsNode(back, None, _backend_perms(backend_domid)),
        XsNode(f"{back}/frontend", front),
        XsNode(f"{back}/frontend-id", "{domid}"),
        XsNode(f"{back}/online", "1"),
        XsNode(f"{back}/state", INITIALISING),
        XsNode(f"{back}/protocol", "vt100"),
    )


def disk_nodes(disk: Disk) -> tuple[XsNode, ...]:
    devid = vdev_to_devid(disk.vdev)
    backend_domid = _backend_domid(disk.backend)
    kind = "qdisk" if disk.backendtype and disk.backendtype.value == "qdisk" else "vbd"
    front = f"/local/domain/{{domid}}/device/vbd/{devid}"
    back = f"/local/domain/{backend_domid}/backend/{kind}/{{domid}}/{devid}"
    return (
        XsNode(front, None, _frontend_perms(backend_domid)),
        XsNode(f"{front}/backend", back),
        XsNode(f"{front}/backend-id", str(backend_domid)),
        XsNode(f"{front}/state", INITIALISING),
        XsNode(f"{front}/virtual-device", str(devid)),
        XsNode(f"{front}/device-type", disk.devtype.value),
        XsNode(back, None, _backend_perms(backend_domid)),
        XsNode(f"{back}/frontend", front),
        XsNode(f"{back}/frontend-id", "{domid}"),
        XsNode(f"{back}/online", "1"),
        XsNode(f"{back}/state", INITIALISING),
        XsNode(f"{back}/params", disk.target),
        XsNode(f"{back}/type", (disk.backendtype.value if disk.backendtype else "phy")),
        XsNode(f"{back}/mode", "w" if disk.access.value == "rw" else "r"),
        XsNode(f"{back}/device-type", disk.devtype.value),
        XsNode(f"{back}/removable", "1" if disk.devtype.value == "cdrom" else "0"),
        XsNode(f"{back}/bootable", "1"),
        XsNode(f"{back}/dev", disk.vdev),
    )


def vif_nodes(vif: Vif, devid: int, mac: str) -> tuple[XsNode, ...]:
    backend_domid = _backend_domid(vif.backend)
    front = f"/local/domain/{{domid}}/device/vif/{devid}"
    back = f"/local/domain/{backend_domid}/backend/vif/{{domid}}/{devid}"
    return (
        XsNode(front, None, _frontend_perms(backend_domid)),
        XsNode(f"{front}/backend", back),
        XsNode(f"{front}/backend-id", str(backend_domid)),
        XsNode(f"{front}/state", INITIALISING),
        XsNode(f"{front}/handle", str(devid)),
        XsNode(f"{front}/mac", mac),
        XsNode(back, None, _backend_perms(backend_domid)),
        XsNode(f"{back}/frontend", front),
        XsNode(f"{back}/frontend-id", "{domid}"),
        XsNode(f"{back}/online", "1"),
        XsNode(f"{back}/state", INITIALISING),
        XsNode(f"{back}/handle", str(devid)),
        XsNode(f"{back}/mac", mac),
        XsNode(f"{back}/bridge", vif.bridge),
        XsNode(f"{back}/type", "vif"),
    )


def stable_mac(uuid: str, devid: int) -> str:
    """A MAC in Xen's OUI 00:16:3e, derived from the domain's uuid so it survives restarts."""
    digest = hashlib.sha256(f"{uuid}/{devid}".encode()).digest()
    return "00:16:3e:%02x:%02x:%02x" % (digest[0] & 0x7F, digest[1], digest[2])


def plan_devices(config: GuestConfig, uuid: str) -> Step:
    ops: list[Op] = []
    for disk in config.disks:
        if disk.target:
            ops.append(CheckDiskTarget(config.name, disk.vdev, disk.target, disk.access.value == "rw"))
    nodes: list[XsNode] = list(console_nodes())
    for disk in config.disks:
        nodes += disk_nodes(disk)
    for devid, vif in enumerate(config.vifs):
        nodes += vif_nodes(vif, devid, vif.mac or stable_mac(uuid, devid))
    ops.append(XenstoreTransaction("devices (console, vbd, vif)", tuple(nodes), cleanup=_backend_roots(config)))
    return Step("devices", tuple(ops))


def _backend_roots(config: GuestConfig) -> tuple[str, ...]:
    """Backend directories to remove on undo; the frontends go with /local/domain/N."""
    roots = {"/local/domain/0/backend/console/{domid}"}
    for disk in config.disks:
        kind = "qdisk" if disk.backendtype and disk.backendtype.value == "qdisk" else "vbd"
        roots.add(f"/local/domain/{_backend_domid(disk.backend)}/backend/{kind}/{{domid}}")
    for vif in config.vifs:
        roots.add(f"/local/domain/{_backend_domid(vif.backend)}/backend/vif/{{domid}}")
    return tuple(sorted(roots))
