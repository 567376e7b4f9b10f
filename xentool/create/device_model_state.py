"""A restored HVM guest's QEMU gets its device state once the guest's memory is in place.

The QEMU was started before the memory arrived (xentool.create.device_model_launch, with
``-incoming defer``), so its seconds of start-up overlap the copy of the memory instead of adding
to the time a migrated guest is down; QEMU's state follows Xen's stream, so it is read only now
(xentool.devicemodel.state).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from hypercalls.interface import GuestType, Hypervisor, XenStore
from xentool.config import GuestConfig
from xentool.create.build import RestoreSource
from xentool.create.plan import Bindings, Op, Step
from xentool.devicemodel.paths import device_model_log_path
from xentool.devicemodel.state import DeviceStateNotLoaded, load_device_state
from xentool.errors import DeviceError


@dataclass(frozen=True)
class LoadDeviceState(Op):
    """QEMU reads its state; undoing the launch ends QEMU, so this has nothing of its own to undo."""

    config: GuestConfig
    uuid: str
    source: RestoreSource

    def describe(self) -> str:
        return (f"the device model of {{domid}} loads its device state, which follows Xen's stream in {self.source.describe()} "
                "(QMP getfd, migrate-incoming)")

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        state_fd = self.source.open_device_state()
        if state_fd is None:
            raise DeviceError(self.config.name, "device model", f"{self.source.describe()} holds no device model state "
                              "for this HVM guest: it cannot be restored")
        try:
            load_device_state(bound.domid, bound.dm_pid, state_fd, device_model_log_path(self.uuid))
        except DeviceStateNotLoaded as e:
            raise DeviceError(self.config.name, "device model", str(e)) from e
        finally:
            os.close(state_fd)


def plan_device_model_state(config: GuestConfig, uuid: str, restore: RestoreSource | None) -> Step | None:
    if config.type == GuestType.HVM and restore is not None:
        return Step("device model state", (LoadDeviceState(config, uuid, restore),))
    return None
