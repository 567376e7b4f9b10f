"""The domain's xenstore skeleton, written right after the domain exists, as libxl__domain_make
does: the name is claimed before the build (seconds for a big kernel), so xl and `xentool list`
show it meanwhile and a second create of the same name fails before it builds anything.

Paths and permissions follow libxl (libxl__domain_make in libxl_create.c) so that xl and other
tools see xentool's domains as their own:

- ``/local/domain/N`` and ``/vm/UUID``: owned by dom0, readable by the guest ("roperm");
- the guest's own writable nodes (control/shutdown, feature flags, data, drivers, ...): owned by the
  guest, invisible to other guests ("rwperm");
- ``/libxl/N``: dom0 only ("noperm").

The name is claimed inside the same transaction that writes it, after checking every other
domain's name, so two concurrent creates of one name cannot both commit.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypercalls.interface import GuestType, XenStore, XsPerm, perms
from xentool.config import GuestConfig
from xentool.create.plan import Bindings, NameGuard, Step, XenstoreTransaction
from xentool.devices.nodes import GUEST, XsNode
from xentool.domains import name_taken_by
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
        holder = name_taken_by(xs, self.name, txn, but=bound.domid if bound.has("domid") else None)
        if holder is not None:
            raise NameInUse(self.name, holder)


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


def plan_domain_skeleton(config: GuestConfig) -> Step:
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
