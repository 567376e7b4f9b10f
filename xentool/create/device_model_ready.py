"""After the devices and the console: the wait for an HVM guest's QEMU (started by
xentool.create.device_model_launch), then what libxl's post-configuration does over QMP (the VNC
address and port into xenstore, the VNC password), and the emulated NICs' taps join their bridges
(what vif-bridge's "add type_if=tap" does)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hypercalls.interface import GuestType, Hypervisor, XenStore
from xentool.config import GuestConfig
from xentool.config.model import Vif, VifType
from xentool.create.plan import Bindings, Op, Step
from xentool.devicemodel.argv import tap_ifname
from xentool.devicemodel.paths import device_model_log_path
from xentool.devicemodel.process import DeviceModelFailed, wait_until_prelaunch, wait_until_running
from xentool.devicemodel.qmp import QmpFailed, qmp_execute
from xentool.devicemodel.vnc import VNC_BASE_PORT, vnc_listen
from xentool.errors import DeviceError
from xentool.hotplug import netdev

VNC_NODES = ("vnc-listen", "vnc-port", "vnc-pass")  # under /local/domain/N/console


@dataclass(frozen=True)
class AwaitDeviceModel(Op):
    """Wait until the launched QEMU is ready; then VNC's address and port into xenstore (where
    `xl vncviewer` looks) and its password, and, for a guest that is not to stay paused, QMP cont
    in the same session (the first half of libxl__domain_unpause; a connection costs a third of a
    second in the lab's dom0).  The vCPUs stay paused until the unpause step.  If this fails,
    undoing the launch ends QEMU."""

    config: GuestConfig
    uuid: str
    resume: bool = False

    def describe(self) -> str:
        cont = "; QMP cont" if self.resume else ""
        return ("wait for the device model of {domid} to be ready (QMP, or device-model/{domid}/state = running)"
                f"{cont}; console/vnc-listen, vnc-port (and vnc-pass) in xenstore")

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        domid, pid, display = bound.domid, bound.dm_pid, bound.vnc_display
        log_path = device_model_log_path(self.uuid)
        post_config = self._post_config_commands(display) + ([("cont", None)] if self.resume else [])
        try:
            if bound.dm_restricted:
                results = wait_until_prelaunch(domid, pid, log_path, post_config)
            else:
                wait_until_running(xs, domid, pid, log_path)
                results = qmp_execute(domid, post_config) if post_config else []
        except (DeviceModelFailed, QmpFailed) as e:
            raise DeviceError(self.config.name, "device model", str(e)) from e
        self._post_configure(xs, domid, display, results)

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if bound.has("domid"):
            for node in VNC_NODES:
                xs.rm(f"/local/domain/{bound.domid}/console/{node}")

    def _post_config_commands(self, display: int | None) -> list[tuple[str, dict[str, Any] | None]]:
        """device_model_postconfig_vnc's QMP: where the VNC server listens, and its password."""
        if display is None:
            return []
        password = self.config.vnc.password if self.config.vnc else None
        return [("query-vnc", None)] + ([("change-vnc-password", {"password": password})] if password else [])

    def _post_configure(self, xs: XenStore, domid: int, display: int | None, results: list[Any]) -> None:
        password = self.config.vnc.password if self.config.vnc else None
        if display is not None:
            vnc = results[0]
            xs.write(f"/local/domain/{domid}/console/vnc-listen", str(vnc.get("host", vnc_listen(self.config))))
            xs.write(f"/local/domain/{domid}/console/vnc-port", str(vnc.get("service", VNC_BASE_PORT + display)))
            if password:
                xs.write(f"/local/domain/{domid}/console/vnc-pass", password)


@dataclass(frozen=True)
class BridgeEmulatedNics(Op):
    """Each emulated NIC's tap (made by QEMU, script=no) joins its bridge and goes up; undone by
    taking them off again (the taps themselves go with QEMU)."""

    config: GuestConfig

    def describe(self) -> str:
        taps = ", ".join(f"{tap_ifname(v, '{domid}', devid)} -> {v.bridge}" for devid, v in self._emulated())
        return f"emulated NICs' taps join their bridges, up: {taps}"

    def _emulated(self) -> list[tuple[int, Vif]]:
        return [(devid, vif) for devid, vif in enumerate(self.config.vifs) if vif.type != VifType.VIF]

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        for devid, vif in self._emulated():
            tap = tap_ifname(vif, bound.domid, devid)
            try:
                netdev.add_to_bridge(vif.bridge, tap)
                netdev.set_up(tap)
            except OSError as e:
                raise DeviceError(self.config.name, f"vif {devid}",
                                  f"wiring {tap} to bridge {vif.bridge} failed: {e.strerror or e}") from e

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if not bound.has("domid"):
            return
        for devid, vif in self._emulated():
            tap = tap_ifname(vif, bound.domid, devid)
            if netdev.exists(tap) and netdev.bridge_of(tap) == vif.bridge:
                netdev.remove_from_bridge(vif.bridge, tap)


def plan_device_model_ready(config: GuestConfig, uuid: str, paused: bool = False) -> Step | None:
    """The wait for an HVM guest's QEMU, continued at once unless the guest is to stay paused."""
    if config.type != GuestType.HVM:
        return None
    ops: list[Op] = [AwaitDeviceModel(config, uuid, resume=not paused)]
    if any(vif.type != VifType.VIF for vif in config.vifs):
        ops.append(BridgeEmulatedNics(config))
    return Step("device model ready", tuple(ops))
