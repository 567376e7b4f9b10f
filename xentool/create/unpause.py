"""The last step: let the guest run (left out for `create -p`, which leaves it paused as xl does).

An HVM guest's QEMU is told to continue first, as libxl__domain_unpause does (QMP ``cont``): a
no-op for a QEMU started without -S, but the same path as `xentool unpause` of a paused guest.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypercalls.interface import GuestType, Hypervisor, XenStore
from xentool.config import GuestConfig
from xentool.create.plan import Bindings, Op, Step, UnpauseDomain


@dataclass(frozen=True)
class ResumeDeviceModel(Op):
    def describe(self) -> str:
        return "QMP cont on /var/run/xen/qmp-libxl-{domid}"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if hv.runs_device_models:
            from xentool.lifecycle import resume_device_model

            resume_device_model(bound["domid"])


def plan_unpause(config: GuestConfig) -> Step:
    ops: tuple[Op, ...] = (UnpauseDomain(),)
    if config.type == GuestType.HVM:
        ops = (ResumeDeviceModel(),) + ops
    return Step("unpause", ops)
