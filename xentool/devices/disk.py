"""Disks: which backend serves each one, its xenstore nodes, and the checks it must pass.

A disk reaches the guest's blkfront through dom0's kernel blkback (raw images behind a loop
device, block devices) or through QEMU's PV disk backend, qdisk (the formats blkback cannot read,
such as qcow2), as libxl__device_disk_set_backend chooses.  An HVM guest's QEMU also emulates its
first disks (xentool.devicemodel.argv), and :mod:`xentool.devicemodel.checks` checks those.
"""

from __future__ import annotations

import os

from hypercalls.interface import GuestType
from pvdrivers.blkif import vdev_to_devid
from pvdrivers.xenbus import XenbusState, backend_path
from xentool.config import GuestConfig
from xentool.config.model import Access, BackendType, Disk, DiskFormat
from xentool.devices.nodes import XsNode, backend_domid, device_nodes
from xentool.errors import DeviceError

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


def disk_kind(disk: Disk) -> str:
    """Which backend serves the disk to the guest's blkfront: "vbd" (dom0's kernel blkback) for a
    raw image or block device, "qdisk" (QEMU's PV disk backend) for the other formats, which
    blkback cannot read, or when the config asks for it (libxl__device_disk_set_backend's choice)."""
    if disk.backendtype == BackendType.QDISK:
        return "qdisk"
    if disk.backendtype is None and disk.format not in (DiskFormat.RAW, DiskFormat.EMPTY):
        return "qdisk"
    return "vbd"


def served_by_blkback(disk: Disk) -> bool:
    return disk_kind(disk) == "vbd"


def disk_backend_path(disk: Disk) -> str:
    return backend_path(backend_domid(disk.backend), disk_kind(disk), "{domid}", vdev_to_devid(disk.vdev))


def pv_disks(config: GuestConfig) -> list[Disk]:
    """The disks the guest's blkfront is offered.  A PV or PVH guest gets all of them, the qdisk
    ones from a QEMU of their own (xentool.create.pv_backend).  An HVM guest gets blkback's only:
    its QEMU runs restricted, and Xen's restricted QEMU cannot serve qdisk
    (docs/features/qemu-deprivilege.pandoc), so it emulates the other formats instead."""
    if config.type == GuestType.HVM:
        return [disk for disk in config.disks if served_by_blkback(disk)]
    return list(config.disks)


def qdisk_disks(config: GuestConfig) -> list[Disk]:
    return [disk for disk in pv_disks(config) if disk_kind(disk) == "qdisk"]


def disk_nodes(disk: Disk) -> tuple[XsNode, ...]:
    devid = vdev_to_devid(disk.vdev)
    backend = backend_domid(disk.backend)
    devtype = disk.devtype.value
    kind = disk_kind(disk)
    return device_nodes(
        "vbd",
        devid,
        backend,
        front={
            "backend-id": str(backend),
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
            "mode": "w" if disk.access == Access.RW else "r",
            "device-type": devtype,
            "removable": "1" if devtype == "cdrom" else "0",
            "bootable": "1",
            "dev": disk.vdev,
            # QEMU runs no hotplug script, so libxl gives a qdisk none.
            **({"script": NO_SCRIPT} if kind == "vbd" else {}),
        },
        backend_kind=kind,
    )


# -- checks ------------------------------------------------------------------------------------------


def check_disk_config(name: str, guest_type: GuestType, disk: Disk) -> None:
    """What no host can do for this disk (the config's own mistakes)."""
    where = f"disk {disk.vdev}"
    if disk.backendtype == BackendType.TAP:
        raise DeviceError(name, where, "backendtype tap needs blktap, which Xen 4.17 no longer has; "
                          "use phy for raw images and devices, qdisk for the others, or leave backendtype unset")
    # Measured in the lab (QEMU 7.2, Debian bookworm): a read-only qdisk fails with "failed to
    # create drive: Block node is read-only" (xen-block marks only the file layer read-only, and
    # the format layer above it asks for write access).
    if guest_type != GuestType.HVM and disk_kind(disk) == "qdisk" and disk.access == Access.RO:
        raise DeviceError(name, where, f"QEMU 7.2's qdisk cannot open a {disk.format.value} image read-only "
                          "(\"Block node is read-only\"); make it rw, or convert it to raw "
                          "(qemu-img convert -O raw IN OUT) for a read-only blkback disk")


def check_disk_target(name: str, vdev: str, target: str, writable: bool) -> None:
    """The image or block device exists and dom0 may open it as the guest will use it."""
    mode = os.R_OK | (os.W_OK if writable else 0)
    if not os.path.exists(target):
        raise DeviceError(name, f"disk {vdev}", f"{target} does not exist; create the image or fix the disk's target")
    if not os.access(target, mode):
        raise DeviceError(name, f"disk {vdev}", f"{target} is not {'writable' if writable else 'readable'}")


def check_disk_on_host(name: str, disk: Disk) -> None:
    """What this dom0 must have for the disk: its target (an empty CD-ROM drive has none)."""
    if disk.target:
        check_disk_target(name, disk.vdev, disk.target, writable=disk.access == Access.RW)


def check_disk(name: str, guest_type: GuestType, disk: Disk) -> None:
    """Both halves, for a disk given to a running guest (creation runs them apart: every device's
    config before any host check)."""
    check_disk_config(name, guest_type, disk)
    check_disk_on_host(name, disk)
