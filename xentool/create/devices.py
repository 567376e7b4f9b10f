"""The guest's devices in xenstore: the primary console, disks (vbd) and network (vif).

Each device is a frontend directory (the guest's, readable by the backend domain) and a backend
directory (the backend domain's, readable by the guest), both in state Initialising, as
libxl__device_generic_add writes them; a backend driver then takes the device from there.  The
primary console is the exception Xen keeps for history: its frontend is /local/domain/N/console.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from hypercalls.interface import GuestType, Hypervisor, XenStore, XsPerm, XsPermission, perms
from pvdrivers.blkif import vdev_to_devid
from pvdrivers.xenbus import XenbusState
from xentool.config import GuestConfig
from xentool.config.model import Access, BackendType, Disk, DiskFormat, Vif, VifMode
from xentool.create.plan import GUEST, Bindings, Op, Step, XenstoreTransaction, XsNode
from xentool.errors import DeviceError

# Which daemon serves the primary console.  xenconsoled serves only type "xenconsoled" (it skips the
# "ioemu" consoles QEMU serves, and so ours), so both can run in one dom0 without fighting over a ring.
CONSOLE_TYPE = "xentool"
CONSOLE_LIMIT = 1048576  # LIBXL_XENCONSOLE_LIMIT
INITIALISING = str(int(XenbusState.INITIALISING))
# The backend's "script" node names the hotplug script a toolstack runs for the device.  xentool
# does that work itself (xentool.hotplug) and its devices need nothing run on removal (the loop
# device detaches itself, netback takes the interface off the bridge), so the script is one that
# does nothing: netback refuses a vif without the node, and xl, destroying a xentool guest, runs
# it (Xen's own block script took 10 s to time out on our loop devices in the lab).
NO_SCRIPT = "/bin/true"
# A qdisk's params is FORMAT:PATH in libxl's words (libxl__device_disk_string_of_format), which
# QEMU's xen-block reads back ("aio" is raw).
QDISK_FORMATS = {
    DiskFormat.RAW: "aio",
    DiskFormat.QCOW: "qcow",
    DiskFormat.QCOW2: "qcow2",
    DiskFormat.VHD: "vhd",
    DiskFormat.QED: "qed",
    DiskFormat.EMPTY: "aio",
}


def _frontend_perms(backend_domid: int) -> tuple[XsPermission, ...]:
    """The guest owns its frontend nodes; the backend may read them."""
    return perms(GUEST, (backend_domid, XsPerm.READ))


def _backend_perms(backend_domid: int) -> tuple[XsPermission, ...]:
    """The backend domain owns its nodes; the guest may read them.  Also used for frontend nodes
    the guest must not change (console 0's port and ring-ref, which the backend trusts)."""
    return perms(backend_domid, (GUEST, XsPerm.READ))


def device_nodes(
    kind: str,
    devid: int,
    backend_domid: int,
    front: dict[str, str],
    back: dict[str, str],
    ro_front: dict[str, str] | None = None,
    frontend_path: str | None = None,
    backend_kind: str | None = None,
) -> tuple[XsNode, ...]:
    """A split device's xenstore nodes, as libxl__device_generic_add writes them.

    ``front`` entries are the guest's, ``ro_front`` ones it may only read, ``back`` the backend's;
    a copy of the backend entries goes under /libxl/N/device so the toolstack need not trust what a
    backend later writes in its own directory.  ``backend_kind`` names the backend's directory when
    it is not ``kind``'s: a disk is a vbd to the guest whichever backend serves it (qdisk: QEMU).
    """
    frontend = frontend_path or f"/local/domain/{{domid}}/device/{kind}/{devid}"
    backend = f"/local/domain/{backend_domid}/backend/{backend_kind or kind}/{{domid}}/{devid}"
    libxl = f"/libxl/{{domid}}/device/{kind}/{devid}"
    # Console 0 keeps other information in its frontend directory that the guest must not fiddle
    # with, so libxl gives the directory itself the read-only permissions.
    is_console0 = kind == "console" and devid == 0
    front_dir_perms = _backend_perms(backend_domid) if is_console0 else _frontend_perms(backend_domid)
    nodes = [
        XsNode(f"{libxl}/frontend", frontend),
        XsNode(f"{libxl}/backend", backend),
        XsNode(frontend, None, front_dir_perms),
        XsNode(f"{frontend}/backend", backend),
    ]
    nodes += [XsNode(f"{frontend}/{k}", v, _frontend_perms(backend_domid)) for k, v in front.items()]
    nodes += [XsNode(f"{frontend}/{k}", v, _backend_perms(backend_domid)) for k, v in (ro_front or {}).items()]
    nodes += [XsNode(backend, None, _backend_perms(backend_domid)), XsNode(f"{backend}/frontend", frontend)]
    nodes += [XsNode(f"{backend}/{k}", v) for k, v in back.items()]
    nodes += [XsNode(f"{libxl}/{k}", v) for k, v in back.items()]
    return tuple(nodes)


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
        check_disk_target(self.name, self.vdev, self.target, self.writable)


def check_disk_target(name: str, vdev: str, target: str, writable: bool) -> None:
    mode = os.R_OK | (os.W_OK if writable else 0)
    if not os.path.exists(target):
        raise DeviceError(name, f"disk {vdev}", f"{target} does not exist; create the image or fix the disk's target")
    if not os.access(target, mode):
        raise DeviceError(name, f"disk {vdev}", f"{target} is not {'writable' if writable else 'readable'}")


@dataclass(frozen=True)
class AwaitBackendRelease(Op):
    """Nothing on the way in; on undo (after the backend directories are gone) the wait until
    blkback and netback have let go of the devices, so a failed create returns with no loop
    device or vif interface left."""

    name: str

    def describe(self) -> str:
        return "(on undo: wait until blkback and netback have released the domain's devices)"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        pass

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if not hv.has_kernel_backends or "domid" not in bound:
            return
        from xentool.hotplug.backend import RELEASE_TIMEOUT, wait_until_released

        held = wait_until_released(bound["domid"], RELEASE_TIMEOUT)
        if held:
            raise DeviceError(self.name, ", ".join(held), f"the kernel backends still hold them {RELEASE_TIMEOUT:g} s after removal")


@dataclass(frozen=True)
class AttachDiskBackend(Op):
    """The block hotplug work: the disk's device (a loop device for a file) handed to blkback."""

    name: str
    disk: Disk

    def describe(self) -> str:
        d = self.disk
        return (f"hotplug vbd {d.vdev}: {d.target} (a loop device if a file, {d.access.value}) -> "
                f"{disk_backend_path(d)}/physical-device; wait for blkback to open it")

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if not hv.has_kernel_backends:
            return
        from xentool.hotplug.block import VbdTarget, attach_vbd

        d = self.disk
        attach_vbd(xs, VbdTarget(self.name, bound["domid"], vdev_to_devid(d.vdev), d.vdev, bound.fill(disk_backend_path(d)),
                                 _backend_domid(d.backend), d.target, d.access == Access.RO))


@dataclass(frozen=True)
class AttachVifBackend(Op):
    """The vif hotplug work: netback's interface renamed, on its bridge, up; then hotplug-status."""

    name: str
    devid: int
    vif: Vif

    def describe(self) -> str:
        v = self.vif
        wiring = (f"up with dom0's address on {v.gatewaydev or 'the default route interface'}, proxy ARP, routes to {v.ip}"
                  if v.mode == VifMode.ROUTE else f"joins bridge {v.bridge}, up")
        return (f"hotplug vif {self.devid}: vif{{domid}}.{self.devid}{f' as {v.vifname}' if v.vifname else ''} "
                f"{wiring}; {vif_backend_path(v, self.devid)}/hotplug-status = 'connected'")

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if not hv.has_kernel_backends:
            return
        from xentool.hotplug.network import VifTarget, attach_vif

        backend = bound.fill(vif_backend_path(self.vif, self.devid))
        attach_vif(xs, VifTarget.of(self.name, bound["domid"], self.devid, backend, self.vif))


def _backend_domid(backend: str) -> int:
    # Driver domains by name come later; the config model accepts only ids we can use today.
    return int(backend)


def console_nodes(name: str, backend_domid: int = 0) -> tuple[XsNode, ...]:
    """The primary console; its frontend is /local/domain/N/console, not under device/."""
    return device_nodes(
        "console",
        0,
        backend_domid,
        front={"backend-id": str(backend_domid)},
        ro_front={
            "limit": str(CONSOLE_LIMIT),
            "type": CONSOLE_TYPE,
            "output": "pty",
            "tty": "",
            "port": "{console_port}",
            "ring-ref": "{console_mfn}",
        },
        back={"frontend-id": "{domid}", "online": "1", "state": INITIALISING, "domain": name, "protocol": "vt100"},
        frontend_path="/local/domain/{domid}/console",
    )


def disk_nodes(disk: Disk) -> tuple[XsNode, ...]:
    devid = vdev_to_devid(disk.vdev)
    backend_domid = _backend_domid(disk.backend)
    devtype = disk.devtype.value
    kind = disk_kind(disk)
    return device_nodes(
        "vbd",
        devid,
        backend_domid,
        front={
            "backend-id": str(backend_domid),
            "state": INITIALISING,
            "virtual-device": str(devid),
            "device-type": devtype,
        },
        back={
            "frontend-id": "{domid}",
            "online": "1",
            "state": INITIALISING,
            "params": disk.target if kind == "vbd" else f"{QDISK_FORMATS[disk.format]}:{disk.target}",
            "type": "phy" if kind == "vbd" else "qdisk",
            "mode": "w" if disk.access.value == "rw" else "r",
            "device-type": devtype,
            "removable": "1" if devtype == "cdrom" else "0",
            "bootable": "1",
            "dev": disk.vdev,
            # QEMU runs no hotplug script, so libxl gives a qdisk none.
            **({"script": NO_SCRIPT} if kind == "vbd" else {}),
        },
        backend_kind=kind,
    )


def vif_nodes(vif: Vif, devid: int, mac: str) -> tuple[XsNode, ...]:
    backend_domid = _backend_domid(vif.backend)
    return device_nodes(
        "vif",
        devid,
        backend_domid,
        front={"backend-id": str(backend_domid), "state": INITIALISING, "handle": str(devid), "mac": mac},
        back={
            "frontend-id": "{domid}",
            "online": "1",
            "state": INITIALISING,
            "handle": str(devid),
            "mac": mac,
            **({"bridge": vif.bridge} if vif.mode == VifMode.BRIDGE else {}),
            **({"ip": vif.ip} if vif.ip else {}),
            **({"gatewaydev": vif.gatewaydev} if vif.gatewaydev else {}),
            "type": "vif",
            "script": NO_SCRIPT,
        },
    )


def disk_kind(disk: Disk) -> str:
    """Which backend serves the disk to the guest's blkfront: "vbd" (dom0's kernel blkback) for a
    raw image or block device, "qdisk" (QEMU's PV disk backend) for the other formats, which
    blkback cannot read, or when the config asks for it (libxl__device_disk_set_backend's choice)."""
    if disk.backendtype == BackendType.QDISK:
        return "qdisk"
    if disk.backendtype is None and disk.format not in (DiskFormat.RAW, DiskFormat.EMPTY):
        return "qdisk"
    return "vbd"


def disk_backend_path(disk: Disk) -> str:
    return f"/local/domain/{_backend_domid(disk.backend)}/backend/{disk_kind(disk)}/{{domid}}/{vdev_to_devid(disk.vdev)}"


def vif_backend_path(vif: Vif, devid: int) -> str:
    return f"/local/domain/{_backend_domid(vif.backend)}/backend/vif/{{domid}}/{devid}"


def stable_mac(uuid: str, devid: int) -> str:
    """A MAC in Xen's OUI 00:16:3e, derived from the domain's uuid so it survives restarts."""
    digest = hashlib.sha256(f"{uuid}/{devid}".encode()).digest()
    return "00:16:3e:%02x:%02x:%02x" % (digest[0] & 0x7F, digest[1], digest[2])


def served_by_blkback(disk: Disk) -> bool:
    return disk_kind(disk) == "vbd"


def pv_disks(config: GuestConfig) -> list[Disk]:
    """The disks the guest's blkfront is offered.  A PV or PVH guest gets all of them, the qdisk
    ones from a QEMU of their own (xentool.create.device_model).  An HVM guest gets blkback's only:
    its QEMU runs restricted, and Xen's restricted QEMU cannot serve qdisk
    (docs/features/qemu-deprivilege.pandoc), so it emulates the other formats instead."""
    if config.type == GuestType.HVM:
        return [disk for disk in config.disks if served_by_blkback(disk)]
    return list(config.disks)


def qdisk_disks(config: GuestConfig) -> list[Disk]:
    return [disk for disk in pv_disks(config) if disk_kind(disk) == "qdisk"]


def plan_devices(config: GuestConfig, uuid: str) -> Step:
    ops: list[Op] = []
    disks = pv_disks(config)
    for disk in disks:
        if disk.target:
            ops.append(CheckDiskTarget(config.name, disk.vdev, disk.target, disk.access.value == "rw"))
    nodes: list[XsNode] = list(console_nodes(config.name))
    for disk in disks:
        nodes += disk_nodes(disk)
    for devid, vif in enumerate(config.vifs):
        nodes += vif_nodes(vif, devid, vif.mac or stable_mac(uuid, devid))
    ops.append(AwaitBackendRelease(config.name))
    ops.append(XenstoreTransaction("devices (console, vbd, vif)", tuple(nodes),
                                   cleanup=CONSOLE_RING_NODES + _backend_roots(config)))
    ops += [AttachDiskBackend(config.name, disk) for disk in disks if disk.target and served_by_blkback(disk)]
    ops += [AttachVifBackend(config.name, devid, vif) for devid, vif in enumerate(config.vifs)]
    return Step("devices", tuple(ops))


# Undone first, before the rest of /local/domain/N goes: xenconsoled reads a console's ring-ref and
# port, then its type, and one that found the first two but no type (the directory removed in
# between) took our console for its own in the lab, mapping its ring (the domain stayed dying) and
# writing console/tty back.  Without ring-ref and port it leaves the console alone.
CONSOLE_RING_NODES = ("/local/domain/{domid}/console/ring-ref", "/local/domain/{domid}/console/port")


def _backend_roots(config: GuestConfig) -> tuple[str, ...]:
    """Backend directories to remove on undo; the frontends go with /local/domain/N."""
    roots = {"/local/domain/0/backend/console/{domid}"}
    for disk in pv_disks(config):
        roots.add(f"/local/domain/{_backend_domid(disk.backend)}/backend/{disk_kind(disk)}/{{domid}}")
    for vif in config.vifs:
        roots.add(f"/local/domain/{_backend_domid(vif.backend)}/backend/vif/{{domid}}")
    return tuple(sorted(roots))
