"""A vif's backend interface wired up: what Xen's vif-bridge script does on "online", in-process.

netback creates the interface (vifDOMID.DEVID) as soon as it sees the backend directory, and holds
the vif back from Connected until ``hotplug-status`` says "connected".  Before that, xentool gives
the interface its configured name, the bridge's MTU, a port on the bridge, and brings it up.
netback removes the interface (and with it the bridge port) when the backend directory goes.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypercalls.interface import XenStore
from pvdrivers.xenbus import XenbusState
from xentool.errors import DeviceError
from xentool.hotplug import netdev
from xentool.hotplug.backend import backend_error, backend_state, wait_for

NETBACK_TIMEOUT = 20.0  # seconds for netback to create the interface


@dataclass(frozen=True)
class VifTarget:
    domain: str  # the guest's name, for messages
    domid: int
    devid: int
    backend: str  # the backend directory
    backend_domid: int
    bridge: str
    vifname: str | None  # the configured interface name, else netback's vifDOMID.DEVID

    @property
    def netback_name(self) -> str:
        return f"vif{self.domid}.{self.devid}"


def check_bridge(domain: str, devid: int, bridge: str) -> None:
    if not netdev.is_bridge(bridge):
        raise DeviceError(domain, f"vif {devid}", f"bridge {bridge} does not exist in dom0; "
                          f"create it (ip link add {bridge} type bridge) or set the vif's bridge")


def attach_vif(xs: XenStore, vif: VifTarget, timeout: float = NETBACK_TIMEOUT) -> str:
    """Wire up the vif's backend interface; returns its name."""
    device = f"vif {vif.devid}"
    name = vif.netback_name

    def settled() -> bool:
        return netdev.exists(name) or (backend_state(xs, vif.backend) or 0) >= XenbusState.CLOSING

    if not wait_for(settled, timeout):
        raise DeviceError(vif.domain, device, f"netback did not create {name} within {timeout:g} s; "
                          f"is xen-netback loaded in domain {vif.backend_domid}?")
    if not netdev.exists(name):
        why = backend_error(xs, vif.backend_domid, vif.backend) or "no reason given"
        raise DeviceError(vif.domain, device, f"netback failed: {why}")
    try:
        if vif.vifname and vif.vifname != name:
            netdev.rename(name, vif.vifname)
            name = vif.vifname
            xs.write(f"{vif.backend}/vifname", name)
        check_bridge(vif.domain, vif.devid, vif.bridge)
        netdev.set_mtu(name, netdev.get_mtu(vif.bridge))
        netdev.add_to_bridge(vif.bridge, name)
        netdev.set_up(name)
    except OSError as e:
        raise DeviceError(vif.domain, device, f"wiring {name} to bridge {vif.bridge} failed: {e.strerror or e}") from e
    xs.write(f"{vif.backend}/hotplug-status", "connected")
    return name
