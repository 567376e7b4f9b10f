"""What libxl__build_post writes once the builder has run (the domain's memory, its xenstore ring
and port, the vcpus, what hvmloader reads), then xs_introduce_domain, after which the guest can
reach xenstored."""

from __future__ import annotations

import time
from dataclasses import dataclass

from hypercalls.interface import GuestType, Hypervisor, XenStore
from xentool.config import GuestConfig
from xentool.create.bootloader import boot_image, runs_a_bootloader
from xentool.create.plan import Bindings, Op, Step, XenstoreTransaction
from xentool.create.skeleton import DOM, LIBXL, VM
from xentool.devicemodel.firmware import BIOS_NAMES, firmware_of
from xentool.devices.nodes import XsNode

QEMU_XEN_VERSION = "qemu_xen"  # /libxl/N/dm-version and platform/device-model (libxl's names)


def hvm_platform_nodes(config: GuestConfig) -> list[tuple[str, str]]:
    """Relative to /local/domain/N: what hvmloader reads (libxl__build_hvm / libxl__spawn_local_dm)."""
    acpi = "1" if config.hvm is None or config.hvm.acpi else "0"
    return [
        ("hvmloader/bios", BIOS_NAMES[firmware_of(config)]),
        ("hvmloader/allow-memory-relocate", "0"),
        ("platform/acpi", acpi),
        ("platform/acpi_s3", acpi),
        ("platform/acpi_s4", acpi),
        ("platform/acpi_laptop_slate", "0"),
        ("platform/device-model", QEMU_XEN_VERSION),
    ]


def build_nodes(config: GuestConfig) -> tuple[XsNode, ...]:
    """What libxl__build_post writes once the builder has run."""
    # The video RAM of an HVM guest comes out of its memory, so the balloon target excludes it.
    videoram_kib = config.videoram_kib
    nodes = [
        XsNode(f"{DOM}/memory/static-max", str(config.maxmem_kib)),
        XsNode(f"{DOM}/memory/target", str(config.memory_kib - videoram_kib)),
        XsNode(f"{DOM}/memory/videoram", str(videoram_kib)),
        XsNode(f"{DOM}/domid", "{domid}"),
        XsNode(f"{DOM}/store/port", "{store_port}"),
        XsNode(f"{DOM}/store/ring-ref", "{store_mfn}"),
    ]
    nodes += [
        XsNode(f"{DOM}/cpu/{vcpu}/availability", "online" if vcpu < config.vcpus else "offline")
        for vcpu in range(config.max_vcpus)
    ]
    if config.type == GuestType.HVM:
        nodes += [XsNode(f"{DOM}/{key}", value) for key, value in hvm_platform_nodes(config)]
        nodes += [XsNode(f"{VM}/rtc/timeoffset", ""), XsNode(f"{LIBXL}/dm-version", QEMU_XEN_VERSION)]
    nodes.append(XsNode(f"{VM}/start_time", "{start_time}"))
    nodes += [XsNode(f"{VM}/{key}", value) for key, value in _image_entries(config)]
    return tuple(nodes)


def _image_entries(config: GuestConfig) -> list[tuple[str, str]]:
    """/vm/UUID/image/* as libxl__domain_build writes them for each type."""
    if config.type == GuestType.HVM:
        return [("image/ostype", "hvm")]
    if config.type == GuestType.PVH:
        return []
    entries = [("image/ostype", "linux")]
    if not runs_a_bootloader(config):  # pygrub's copies are gone once built; libxl's path to them said nothing
        entries.append(("image/kernel", str(boot_image(config))))
    if config.ramdisk and not runs_a_bootloader(config):
        entries.append(("image/ramdisk", str(config.ramdisk)))
    if config.cmdline:
        entries.append(("image/cmdline", config.cmdline))
    return entries


@dataclass(frozen=True)
class StampStartTime(XenstoreTransaction):
    """The build-post transaction; stamps /vm/UUID/start_time as libxl does ("%jd.%02d").  Its
    nodes lie under the skeleton's roots, which that step's undo removes."""

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        now = time.time()
        bound.start_time = f"{int(now)}.{int((now % 1) * 100):02d}"
        super().apply(hv, xs, bound)


@dataclass(frozen=True)
class IntroduceDomain(Op):
    def describe(self) -> str:
        return "xs_introduce_domain({domid}, {store_mfn}, {store_port})"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        xs.introduce_domain(bound.domid, bound.store_mfn, bound.store_port)

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        xs.release_domain(bound.domid)

    def undo_failed(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        pass  # xenstored took the domain or did not: one call, nothing half done


def plan_xenstore_layout(config: GuestConfig) -> Step:
    return Step(
        "xenstore layout",
        (
            StampStartTime("build results (libxl__build_post)", build_nodes(config)),
            IntroduceDomain(),
        ),
    )
