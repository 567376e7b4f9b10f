"""The domain's xenstore layout, as Xen's own toolstack writes it: its skeleton as soon as the
domain exists, what the builder yields after the build, then xs_introduce_domain.

Paths and permissions follow libxl (libxl__domain_make and libxl__build_post in libxl_create.c and
libxl_dom.c) so that xl and other tools see xentool's domains as their own:

- ``/local/domain/N`` and ``/vm/UUID``: owned by dom0, readable by the guest ("roperm");
- the guest's own writable nodes (control/shutdown, feature flags, data, drivers, ...): owned by the
  guest, invisible to other guests ("rwperm");
- ``/libxl/N``: dom0 only ("noperm").

The name is claimed inside the same transaction that writes it, after checking every other
domain's name, so two concurrent creates of one name cannot both commit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hypercalls.interface import GuestType, XenStore, XsPerm, perms
from xentool.config import GuestConfig
from xentool.create.plan import (
    GUEST,
    Bindings,
    IntroduceDomain,
    NameGuard,
    Step,
    XenstoreTransaction,
    XsNode,
)
from xentool.errors import NameInUse

DOM = "/local/domain/{domid}"
VM = "/vm/{uuid}"
LIBXL = "/libxl/{domid}"

ROPERM = perms(0, (GUEST, XsPerm.READ))
RWPERM = perms(GUEST)
NOPERM = perms(0)

# Nodes the guest itself writes (its PV drivers report features and state there).
_GUEST_WRITABLE = (
    "control/shutdown",
    "control/feature-poweroff",
    "control/feature-reboot",
    "control/feature-suspend",
    "control/sysrq",
    "data",
    "drivers",
    "feature",
    "attr",
    "error",
)


@dataclass(frozen=True)
class UniqueName(NameGuard):
    """Fails the transaction when another domain already has this name (libxl__domain_rename)."""

    name: str

    def check(self, xs: XenStore, txn: object, bound: Bindings) -> None:
        for entry in xs.list_or_empty("/local/domain", txn):
            if entry == str(bound.get("domid")):
                continue
            if xs.read_or(f"/local/domain/{entry}/name", None, txn) == self.name:
                raise NameInUse(self.name, int(entry))


def domain_nodes(config: GuestConfig) -> tuple[XsNode, ...]:
    """What libxl__domain_make writes (the skeleton of the domain's xenstore)."""
    nodes = [
        XsNode(DOM, None, ROPERM),
        XsNode(VM, None, ROPERM),
        XsNode(LIBXL, None, NOPERM),
        XsNode(f"{LIBXL}/device", None, NOPERM),
        XsNode(f"{DOM}/vm", VM),
        XsNode(f"{DOM}/name", config.name),
        XsNode(f"{VM}/name", config.name),
        XsNode(f"{VM}/uuid", "{uuid}"),
        XsNode(f"{DOM}/cpu", None, ROPERM),
        XsNode(f"{DOM}/memory", None, ROPERM),
        XsNode(f"{DOM}/device", None, ROPERM),
        XsNode(f"{DOM}/device/suspend/event-channel", None, RWPERM),
        XsNode(f"{DOM}/control", None, ROPERM),
    ]
    if config.type == GuestType.HVM:
        nodes.append(XsNode(f"{DOM}/hvmloader", None, ROPERM))
    writable = list(_GUEST_WRITABLE)
    if config.type == GuestType.HVM:
        writable[4:4] = ["control/feature-s3", "control/feature-s4"]
    nodes += [XsNode(f"{DOM}/{rel}", None, RWPERM) for rel in writable]
    nodes += [
        XsNode(f"{DOM}/control/platform-feature-multiprocessor-suspend", "1"),
        XsNode(f"{DOM}/control/platform-feature-xs_reset_watches", "1"),
        XsNode(f"{LIBXL}/type", config.type.value),
    ]
    return tuple(nodes)


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
        from xentool.create.device_model import QEMU_XEN_VERSION, hvm_platform_nodes

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
    entries = [("image/ostype", "linux"), ("image/kernel", str(config.kernel))]
    if config.ramdisk:
        entries.append(("image/ramdisk", str(config.ramdisk)))
    if config.cmdline:
        entries.append(("image/cmdline", config.cmdline))
    return entries


@dataclass(frozen=True)
class StampStartTime(XenstoreTransaction):
    """The build-post transaction; stamps /vm/UUID/start_time as libxl does ("%jd.%02d")."""

    def apply(self, hv, xs, bound: Bindings) -> None:  # type: ignore[no-untyped-def]
        now = time.time()
        bound["start_time"] = f"{int(now)}.{int((now % 1) * 100):02d}"
        super().apply(hv, xs, bound)


def plan_domain_skeleton(config: GuestConfig) -> Step:
    """Right after the domain exists, as libxl__domain_make does: the name is claimed before the
    build (seconds for a big kernel), so xl and `xentool list` show it meanwhile and a second
    create of the same name fails before it builds anything."""
    return Step(
        "xenstore skeleton",
        (
            XenstoreTransaction(
                "domain skeleton (libxl__domain_make)",
                domain_nodes(config),
                cleanup=(DOM, VM, LIBXL),
                guard=UniqueName(config.name),
            ),
        ),
    )


def plan_xenstore_layout(config: GuestConfig) -> Step:
    return Step(
        "xenstore layout",
        (
            StampStartTime("build results (libxl__build_post)", build_nodes(config)),
            IntroduceDomain(),
        ),
    )
