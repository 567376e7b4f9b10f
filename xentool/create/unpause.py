"""The last step: let the guest run (left out for `create -p`, which leaves it paused as xl does).

An HVM guest's QEMU was told to continue (QMP ``cont``, the first half of libxl__domain_unpause)
by the device model step, in the QMP session that saw it ready.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypercalls.interface import Hypervisor, XenStore
from xentool.create.plan import Bindings, Op, Step


@dataclass(frozen=True)
class UnpauseDomain(Op):
    def describe(self) -> str:
        return "xc_domain_unpause({domid})"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        hv.domain_unpause(bound.domid)


def plan_unpause() -> Step:
    return Step("unpause", (UnpauseDomain(),))
