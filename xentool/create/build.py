"""The two event channels for xenstored and the console, then the domain builder.

libxl__build_pre allocates both ports before building, because the builder writes them into the
guest's start info (PV) or HVM params (PVH/HVM), where the guest finds them at boot.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

from hypercalls.interface import BuildSpec, FirmwareModule, GuestType, Hypervisor, XenStore
from xentool.config import GuestConfig
from xentool.config.model import Firmware
from xentool.create.plan import AllocUnboundEvtchn, Bindings, BuildDomain, Op, Step

# Where Debian's xen-utils-4.17 puts the HVM firmware loader, and the SeaBIOS that libxl 4.17 was
# built to hand it (SEABIOS_PATH; package seabios, which qemu-system-xen depends on).
HVMLOADER = "/usr/lib/xen-4.17/boot/hvmloader"
SEABIOS = "/usr/share/seabios/bios-256k.bin"
OVMF = "/usr/share/ovmf/OVMF.fd"  # libxl's OVMF_PATH on Debian (package ovmf)


@dataclass(frozen=True)
class RestoreSource:
    """A save file's migration stream, which takes the domain builder's place (xentool.savefile)."""

    path: str
    offset: int
    dm_state_offset: int | None = None  # an HVM guest's QEMU state, which its device model loads


@dataclass(frozen=True)
class RestoreDomain(Op):
    """xc_domain_restore in place of the builder: the guest's memory and vcpus from the stream."""

    spec: BuildSpec
    source: RestoreSource

    def describe(self) -> str:
        return (f"xc_domain_restore({{domid}}, {self.source.path} from byte {self.source.offset}, store evtchn "
                "{store_port}, console evtchn {console_port}) -> {store_mfn}, {console_mfn}")

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        spec = dataclasses.replace(self.spec, store_evtchn=bound["store_port"], console_evtchn=bound["console_port"])
        fd = os.open(self.source.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.lseek(fd, self.source.offset, os.SEEK_SET)
            result = hv.domain_restore(bound["domid"], fd, spec)
        finally:
            os.close(fd)
        bound["store_mfn"] = result.store_mfn
        bound["console_mfn"] = result.console_mfn


def plan_build(config: GuestConfig, store_domid: int = 0, console_domid: int = 0,
               restore: RestoreSource | None = None) -> Step:
    hvm = config.type == GuestType.HVM
    spec = BuildSpec(
        guest_type=config.type,
        memory_kib=config.memory_kib,
        max_memory_kib=config.maxmem_kib,
        vcpus=config.vcpus,
        store_evtchn=-1,  # filled from the bindings when the plan runs
        console_evtchn=-1,
        # An HVM guest's own kernel (direct boot) is QEMU's to load; the builder loads firmware.
        kernel=str(config.kernel) if config.kernel and not hvm else None,
        ramdisk=str(config.ramdisk) if config.ramdisk and not hvm else None,
        cmdline=config.cmdline if not hvm else "",
        firmware=HVMLOADER if hvm else None,
        system_firmware=_system_firmware(config),
        videoram_kib=config.videoram_kib,
        acpi=config.hvm.acpi if config.hvm else True,
        viridian=_viridian(config),
        acpi_modules=_pvh_acpi(config),
    )
    return Step(
        "build",
        (
            AllocUnboundEvtchn("store_port", store_domid),
            AllocUnboundEvtchn("console_port", console_domid),
            BuildDomain(spec) if restore is None else RestoreDomain(spec, restore),
        ),
    )


def _system_firmware(config: GuestConfig) -> str | None:
    if config.type != GuestType.HVM:
        return None
    return OVMF if config.hvm and config.hvm.firmware == Firmware.UEFI else SEABIOS


def _pvh_acpi(config: GuestConfig) -> tuple[FirmwareModule, ...]:
    """libxl__dom_load_acpi: a PVH guest has no firmware, so its ACPI tables come from us.  Without
    them Linux probes an RTC and a keyboard controller that a PVH domain does not have (the FADT's
    boot flags say so) and finds its vcpus nowhere but in Xen's hypercalls."""
    if config.type != GuestType.PVH:
        return ()
    from xentool.create.acpi_tables import build_pvh_acpi  # PVH only: not worth its import elsewhere

    # Every kernel that boots as PVH (Linux since 4.17 with CONFIG_PVH) reads rsdp_paddr from the
    # start info, so the RSDP goes after the tables, where libxl puts it for such kernels.
    tables = build_pvh_acpi(config.vcpus, config.max_vcpus)
    return tuple(FirmwareModule(module.guest_addr, module.data) for module in tables.modules())


def _viridian(config: GuestConfig) -> tuple[str, ...]:
    if not config.hvm or not config.hvm.viridian:
        return ()
    if config.hvm.viridian is True:
        return ("defaults",)
    return tuple(config.hvm.viridian)
