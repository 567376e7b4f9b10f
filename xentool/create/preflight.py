"""Checks made before anything is created, so that the common mistakes cost nothing to undo.

They are not the last word: the name is claimed again inside the xenstore transaction (another
create may race us), and the builder fails with ENOMEM if memory went meanwhile.
"""

from __future__ import annotations

import os

from hypercalls.interface import GuestType, Hypervisor
from xentool.config import GuestConfig
from xentool.config.model import Access, BackendType, Disk
from xentool.errors import DeviceError, InsufficientMemory, NameInUse
from xentool.hotplug import netdev

# What Xen charges a guest beyond its RAM (page tables, grant frames, the p2m): a margin so that a
# guest accepted here does not fail in the builder for want of a few pages.
BUILD_OVERHEAD_KIB = 2048


def check_name_free(hv: Hypervisor, name: str) -> None:
    xs = hv.xenstore()
    for info in hv.domain_list():
        if xs.read_or(f"/local/domain/{info.domid}/name") == name:
            raise NameInUse(name, info.domid)


def check_memory_fits(hv: Hypervisor, config: GuestConfig) -> None:
    free_kib = hv.physinfo().free_kib
    needed_kib = config.memory_kib + BUILD_OVERHEAD_KIB
    if needed_kib > free_kib:
        raise InsufficientMemory(config.name, needed_kib // 1024, free_kib // 1024)


def check_disk_formats(config: GuestConfig) -> None:
    """Every disk has a backend that can serve it: blkback raw images and devices, QEMU the rest
    (a PV guest's through qdisk, an HVM guest's by emulation)."""
    from xentool.create.devices import disk_kind
    from xentool.devicemodel.argv import emulated_by_qemu
    from xentool.hotplug.qdisk import check_qdisk_supported

    for disk in config.disks:
        where = f"disk {disk.vdev}"
        check_not_tap(config.name, disk)
        if config.type != GuestType.HVM and disk_kind(disk) == "qdisk":
            check_qdisk_supported(config.name, disk)
        if config.type == GuestType.HVM and disk_kind(disk) == "qdisk" and not emulated_by_qemu(disk):
            raise DeviceError(config.name, where, f"a {disk.format.value} disk past hdd is for PV drivers only, and an "
                              "HVM guest's QEMU runs restricted, where Xen cannot serve it (qdisk); give it one of "
                              "the first four vdevs (emulated), or convert it to raw (qemu-img convert -O raw IN OUT)")


def check_not_tap(name: str, disk: Disk) -> None:
    if disk.backendtype == BackendType.TAP:
        raise DeviceError(name, f"disk {disk.vdev}", "backendtype tap needs blktap, which Xen 4.17 no longer has; "
                          "use phy for raw images and devices, qdisk for the others, or leave backendtype unset")


def check_pv_backend(config: GuestConfig) -> None:
    """A PV or PVH guest with qdisk disks needs QEMU to serve them."""
    from xentool.create.devices import qdisk_disks
    from xentool.devicemodel.argv import qemu_binary

    disks = qdisk_disks(config)
    if config.type == GuestType.HVM or not disks:
        return
    binary = qemu_binary(config)
    if not os.access(binary, os.X_OK):
        raise DeviceError(config.name, f"disk {disks[0].vdev}", f"a {disks[0].format.value} disk is served by QEMU "
                          f"(qdisk) and {binary} is not there; install qemu-system-xen, or convert the image to raw")


def check_devices(config: GuestConfig) -> None:
    """What dom0's backends will open: disk images and block devices, and the vifs' bridges (the
    PV vif's, and an HVM guest's emulated NIC's tap)."""
    from xentool.create.devices import check_disk_target
    from xentool.hotplug.network import check_network

    for disk in config.disks:
        if disk.target:
            check_disk_target(config.name, disk.vdev, disk.target, writable=disk.access == Access.RW)
    for devid, vif in enumerate(config.vifs):
        check_network(config.name, devid, vif)
        if vif.vifname and netdev.exists(vif.vifname):
            raise DeviceError(config.name, f"vif {devid}", f"an interface named {vif.vifname} already exists in dom0; "
                              "pick another vifname or leave it unset")


def preflight(hv: Hypervisor, config: GuestConfig) -> None:
    check_name_free(hv, config.name)
    check_memory_fits(hv, config)
    check_disk_formats(config)
    if hv.runs_device_models:
        check_pv_backend(config)
    # The config's own mistakes (a NIC model QEMU lacks) before the host's (a missing bridge).
    if config.type == GuestType.HVM and hv.runs_device_models:
        from xentool.create.device_model import check_device_model_inputs

        check_device_model_inputs(config)
    if hv.has_kernel_backends:
        check_devices(config)
