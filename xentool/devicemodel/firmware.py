"""The firmware an HVM guest boots: hvmloader, which the domain builder loads, and the BIOS or
UEFI image it hands over to (SeaBIOS or OVMF), where Debian's packages put them."""

from __future__ import annotations

from hypercalls.interface import GuestType
from xentool.config import GuestConfig
from xentool.config.model import Firmware

# Where Debian's xen-utils-4.17 puts the HVM firmware loader, and the SeaBIOS that libxl 4.17 was
# built to hand it (SEABIOS_PATH; package seabios, which qemu-system-xen depends on).
HVMLOADER = "/usr/lib/xen-4.17/boot/hvmloader"
SEABIOS = "/usr/share/seabios/bios-256k.bin"
OVMF = "/usr/share/ovmf/OVMF.fd"  # libxl's OVMF_PATH on Debian (package ovmf)
BIOS_NAMES = {Firmware.BIOS: "seabios", Firmware.UEFI: "ovmf"}  # hvmloader/bios
PACKAGES = {Firmware.BIOS: "seabios", Firmware.UEFI: "ovmf"}  # the Debian package that has the image


def firmware_of(config: GuestConfig) -> Firmware:
    return config.hvm.firmware if config.hvm else Firmware.BIOS


def system_firmware(config: GuestConfig) -> str | None:
    """The image hvmloader hands over to, for an HVM guest."""
    if config.type != GuestType.HVM:
        return None
    return OVMF if firmware_of(config) == Firmware.UEFI else SEABIOS
