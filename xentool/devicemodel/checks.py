"""The device model's checks against this host, made before anything is created: what QEMU and
hvmloader will open exists, QEMU can be run as the user it must run as, and the disks it is asked
to serve are ones it can.  Used by creation's preflight (xentool.create.preflight)."""

from __future__ import annotations

import os
from pathlib import Path

from hypercalls.interface import GuestType
from xentool.config import GuestConfig
from xentool.config.model import Firmware
from xentool.devicemodel.argv import DeviceModelSetup, device_model_argv, emulated_by_qemu, qemu_binary
from xentool.devicemodel.firmware import HVMLOADER, OVMF, PACKAGES, SEABIOS, firmware_of
from xentool.devicemodel.privilege import choose_privilege
from xentool.devicemodel.vnc import choose_vnc_display
from xentool.devices.disk import disk_kind, qdisk_disks
from xentool.errors import DeviceError


def check_emulated_disks(config: GuestConfig) -> None:
    """An HVM guest's disk that blkback cannot serve must be one its QEMU emulates: its QEMU runs
    restricted, where Xen cannot serve qdisk (docs/features/qemu-deprivilege.pandoc)."""
    if config.type != GuestType.HVM:
        return
    for disk in config.disks:
        if disk_kind(disk) == "qdisk" and not emulated_by_qemu(disk):
            raise DeviceError(config.name, f"disk {disk.vdev}", f"a {disk.format.value} disk past hdd is for PV drivers "
                              "only, and an HVM guest's QEMU runs restricted, where Xen cannot serve it (qdisk); give "
                              "it one of the first four vdevs (emulated), or convert it to raw "
                              "(qemu-img convert -O raw IN OUT)")


def check_pv_backend(config: GuestConfig) -> None:
    """A PV or PVH guest with qdisk disks needs QEMU to serve them."""
    disks = qdisk_disks(config)
    if config.type == GuestType.HVM or not disks:
        return
    binary = qemu_binary(config)
    if not os.access(binary, os.X_OK):
        raise DeviceError(config.name, f"disk {disks[0].vdev}", f"a {disks[0].format.value} disk is served by QEMU "
                          f"(qdisk) and {binary} is not there; install qemu-system-xen, or convert the image to raw")


def check_hvm_device_model(config: GuestConfig) -> None:
    """What an HVM guest's QEMU and firmware need, so that a typo costs nothing to undo."""
    device_model_argv(config, DeviceModelSetup(domid=1, serial_socket=None, vnc_display=None))  # NIC models, IDE slots
    choose_privilege(config, 1)  # an unprivileged user to run QEMU as
    firmware = firmware_of(config)
    bios = OVMF if firmware == Firmware.UEFI else SEABIOS
    for image, what, fix in ((HVMLOADER, "hvmloader", "install xen-utils-4.17"),
                             (bios, firmware.value, f"install {PACKAGES[firmware]}")):
        if not Path(image).is_file():
            raise DeviceError(config.name, "firmware", f"{what} {image} is not there; {fix}")
    for key, path in (("kernel", config.kernel), ("ramdisk", config.ramdisk)):
        if path and not Path(path).is_file():
            raise DeviceError(config.name, key, f"{path} does not exist; QEMU loads it for direct kernel boot")
    choose_vnc_display(config)  # a display in use fails here, before anything exists
