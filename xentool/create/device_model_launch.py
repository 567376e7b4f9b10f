"""An HVM guest's QEMU, started right after the build: it takes seconds to become ready (in the
lab's dom0, longer than all the rest of a create), so the devices and the console backend are set
up meanwhile and the device-model-ready step (xentool.create.device_model_ready) waits for it.

libxl__spawn_local_dm in order: the nodes hvmloader and QEMU read (xentool.create.xenstore_layout),
QEMU's xenstore directory, the process (xentool.devicemodel.process), its pid where xl looks for
it.  A restored HVM guest's QEMU is started earlier, before the guest's memory arrives, with
``-incoming defer``: it loads its device state once the memory is in place
(xentool.create.device_model_state).  Undo stops QEMU and removes all of it; destroying the domain
does the same (xentool.lifecycle).
"""

from __future__ import annotations

from dataclasses import dataclass

from hypercalls.interface import GuestType, Hypervisor, XenStore
from xentool.config import GuestConfig
from xentool.console.paths import RUN_DIR, serial_socket_path
from xentool.create.plan import Bindings, Op, Step
from xentool.devicemodel.argv import DeviceModelSetup, device_model_argv, qemu_binary, serial_to_console
from xentool.devicemodel.paths import device_model_log_path
from xentool.devicemodel.privilege import choose_privilege
from xentool.devicemodel.process import start_device_model, stop_device_model
from xentool.devicemodel.vnc import choose_vnc_display


@dataclass(frozen=True)
class LaunchDeviceModel(Op):
    config: GuestConfig
    uuid: str
    # A restored guest's QEMU waits for its device state (-incoming defer), given later.
    incoming: bool = False

    def describe(self) -> str:
        incoming = ", to load its device state later (-incoming defer)" if self.incoming else ""
        return (f"start the device model {qemu_binary(self.config)} for {{domid}}{incoming} "
                f"(QMP /var/run/xen/qmp-libxl-{{domid}}, log {device_model_log_path(self.uuid)}); "
                "device-model/{domid} in xenstore, its pid in image/device-model-pid")

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        domid = bound.domid
        config = self.config
        serial = str(serial_socket_path(domid)) if serial_to_console(config) else None
        privilege = choose_privilege(config, domid)
        setup = DeviceModelSetup(domid=domid, serial_socket=serial, vnc_display=choose_vnc_display(config),
                                 uuid=self.uuid, privilege=privilege, incoming=self.incoming)
        argv = device_model_argv(config, setup)
        if serial:
            RUN_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        started = start_device_model(xs, domid, self.uuid, argv, privilege)
        bound.dm_pid = started.pid
        bound.dm_restricted = privilege.restricted
        bound.vnc_display = setup.vnc_display
        bound.serial_socket = serial

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if bound.has("domid"):
            stop_device_model(xs, bound.domid)  # whatever part of it was made


def plan_device_model_launch(config: GuestConfig, uuid: str, restore: bool = False) -> Step | None:
    if config.type == GuestType.HVM:
        return Step("device model", (LaunchDeviceModel(config, uuid, restore),))
    return None
