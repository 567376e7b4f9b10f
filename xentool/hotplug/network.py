"""A vif's backend interface wired up: what Xen's vif-bridge and vif-route scripts do on "online",
in-process.

netback creates the interface (vifDOMID.DEVID) as soon as it sees the backend directory, and holds
the vif back from Connected until ``hotplug-status`` says "connected".  Before that, xentool gives
the interface its configured name and then, bridged: the bridge's MTU, a port on the bridge, up;
routed: up, dom0's address (from ``gatewaydev``) as a /32, proxy ARP, and a host route to each of
the guest's addresses.  netback removes the interface when the backend directory goes, and with it
the bridge port, or the address and routes.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypercalls.interface import XenStore
from pvdrivers.xenbus import XenbusState
from xentool.config.model import Vif, VifMode
from xentool.errors import DeviceError
from xentool.hotplug import netdev, rtnetlink
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
    mode: VifMode = VifMode.BRIDGE
    ip: tuple[str, ...] = ()  # route mode: the guest's addresses
    gatewaydev: str | None = None  # route mode: the dom0 interface whose address the vif takes

    @classmethod
    def of(cls, domain: str, domid: int, devid: int, backend: str, vif: Vif) -> VifTarget:
        return cls(domain, domid, devid, backend, int(vif.backend), vif.bridge, vif.vifname, vif.mode,
                   tuple((vif.ip or "").split()), vif.gatewaydev)

    @property
    def netback_name(self) -> str:
        return f"vif{self.domid}.{self.devid}"


def check_bridge(domain: str, devid: int, bridge: str) -> None:
    if not netdev.is_bridge(bridge):
        raise DeviceError(domain, f"vif {devid}", f"bridge {bridge} does not exist in dom0; "
                          f"create it (ip link add {bridge} type bridge) or set the vif's bridge")


def check_network(domain: str, devid: int, vif: Vif) -> None:
    """What the vif will be wired to exists in dom0: its bridge, or for a routed vif an address."""
    if vif.mode == VifMode.ROUTE:
        dom0_address(domain, devid, vif.gatewaydev)
    else:
        check_bridge(domain, devid, vif.bridge)


def dom0_address(domain: str, devid: int, gatewaydev: str | None) -> str:
    """The address a routed vif takes: dom0's on ``gatewaydev``, else on its default route's
    interface (vif-route's netdev), which the guest then uses as its gateway."""
    device = gatewaydev or netdev.default_route_interface()
    if device is None:
        raise DeviceError(domain, f"vif {devid}", "dom0 has no default route to take a routed vif's address from; "
                          "set the vif's gatewaydev to a dom0 interface with an IPv4 address")
    address = netdev.ipv4_address(device) if netdev.exists(device) else None
    if address is None:
        raise DeviceError(
            domain,
            f"vif {devid}",
            f"gatewaydev {device} {'has no IPv4 address' if netdev.exists(device) else 'does not exist'} "
            "in dom0; a routed vif takes dom0's address from it: give it one, or name another gatewaydev",
        )
    return address


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
        if vif.mode == VifMode.ROUTE:
            _route(vif, name)
        else:
            check_bridge(vif.domain, vif.devid, vif.bridge)
            netdev.set_mtu(name, netdev.get_mtu(vif.bridge))
            netdev.add_to_bridge(vif.bridge, name)
            netdev.set_up(name)
    except OSError as e:
        to = f"routes to {' '.join(vif.ip)}" if vif.mode == VifMode.ROUTE else f"bridge {vif.bridge}"
        raise DeviceError(vif.domain, device, f"wiring {name} to {to} failed: {e.strerror or e}") from e
    xs.write(f"{vif.backend}/hotplug-status", "connected")
    return name


def _route(vif: VifTarget, name: str) -> None:
    """vif-route's "online": the interface up with dom0's address (/32, so it claims no subnet),
    proxy ARP, and a host route to each guest address with dom0's address as the source."""
    address = dom0_address(vif.domain, vif.devid, vif.gatewaydev)
    netdev.set_up(name)
    rtnetlink.add_address(name, address, 32)
    netdev.set_proxy_arp(name)
    for guest_address in vif.ip:
        try:
            rtnetlink.add_host_route(guest_address, name, address)
        except FileExistsError:
            raise DeviceError(vif.domain, f"vif {vif.devid}", f"dom0 already has a route to {guest_address} "
                              "(another guest's vif, or the host's own); give this guest another address") from None
