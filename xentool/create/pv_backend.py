"""A PV or PVH guest's QEMU, which serves its qdisk disks (images blkback cannot read, such as
qcow2): started after the disks' nodes are written, as libxl starts it, then each qdisk must
reach InitWait (QEMU opened the image and waits for the guest) before the guest runs.  It runs as
root, as libxl runs it: Xen's restricted QEMU cannot serve qdisk
(docs/features/qemu-deprivilege.pandoc)."""

from __future__ import annotations

from dataclasses import dataclass

from hypercalls.interface import GuestType, Hypervisor, XenStore
from xentool.config import GuestConfig
from xentool.create.plan import Bindings, Op, Step
from xentool.devicemodel.argv import pv_backend_argv, qemu_binary
from xentool.devicemodel.privilege import Privilege
from xentool.devicemodel.process import DeviceModelFailed, start_device_model, stop_device_model, wait_until_running
from xentool.devicemodel.qdisk import wait_until_taken_up
from xentool.devices.disk import disk_backend_path, qdisk_disks
from xentool.errors import DeviceError


@dataclass(frozen=True)
class StartPvBackend(Op):
    config: GuestConfig
    uuid: str

    def describe(self) -> str:
        disks = ", ".join(d.vdev for d in qdisk_disks(self.config))
        return (f"start {qemu_binary(self.config)} -machine xenpv for {{domid}} as the qdisk backend of {disks}; "
                "wait for device-model/{domid}/state = running, then for each qdisk's backend state InitWait")

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        domid = bound.domid
        started = start_device_model(xs, domid, self.uuid, pv_backend_argv(self.config, domid), Privilege(restricted=False))
        bound.dm_pid = started.pid
        try:
            wait_until_running(xs, domid, started.pid, started.log_path)
        except DeviceModelFailed as e:
            raise DeviceError(self.config.name, "qdisk backend (QEMU)", str(e)) from e
        for disk in qdisk_disks(self.config):
            wait_until_taken_up(xs, self.config.name, disk, bound.fill(disk_backend_path(disk)), started.log_path)

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if bound.has("domid"):
            stop_device_model(xs, bound.domid)  # whatever part of it was made


def plan_pv_backend(config: GuestConfig, uuid: str) -> Step | None:
    if config.type == GuestType.HVM or not qdisk_disks(config):
        return None
    return Step("device model (qdisk backend)", (StartPvBackend(config, uuid),))
