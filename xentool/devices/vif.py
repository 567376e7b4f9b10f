"""Network interfaces (vifs): their MAC, xenstore nodes, and the checks they must pass.

A PV vif is served by dom0's netback; an HVM guest's emulated NIC by a tap of its QEMU.  Either is
wired by xentool itself (xentool.hotplug.network), to a bridge or routed.
"""

from __future__ import annotations

import hashlib

from pvdrivers.xenbus import backend_path
from xentool.config.model import Vif, VifMode
from xentool.devices.disk import INITIALISING, NO_SCRIPT
from xentool.devices.nodes import XsNode, backend_domid, device_nodes
from xentool.errors import DeviceError
from xentool.hotplug import netdev
from xentool.hotplug.network import check_network


def stable_mac(uuid: str, devid: int) -> str:
    """A MAC in Xen's OUI 00:16:3e, derived from the domain's uuid so it survives restarts."""
    digest = hashlib.sha256(f"{uuid}/{devid}".encode()).digest()
    return f"00:16:3e:{digest[0] & 0x7F:02x}:{digest[1]:02x}:{digest[2]:02x}"


def vif_backend_path(vif: Vif, devid: int) -> str:
    return backend_path(backend_domid(vif.backend), "vif", "{domid}", devid)


def vif_nodes(vif: Vif, devid: int, mac: str) -> tuple[XsNode, ...]:
    backend = backend_domid(vif.backend)
    return device_nodes(
        "vif",
        devid,
        backend,
        front={"backend-id": str(backend), "state": INITIALISING, "handle": str(devid), "mac": mac},
        back={
            "frontend-id": "{domid}",
            "online": "1",
            "state": INITIALISING,
            "handle": str(devid),
            "mac": mac,
            **({"bridge": vif.bridge} if vif.mode == VifMode.BRIDGE else {}),
            **({"ip": vif.ip} if vif.ip else {}),
            **({"gatewaydev": vif.gatewaydev} if vif.gatewaydev else {}),
            "type": "vif",
            "script": NO_SCRIPT,
        },
    )


def check_vif_on_host(name: str, devid: int, vif: Vif) -> None:
    """What the vif will be wired to exists in dom0 (its bridge, or a routed vif's address), and
    the interface name it asks for is free.  The same for a PV vif and an emulated NIC's tap."""
    check_network(name, devid, vif)
    if vif.vifname and netdev.exists(vif.vifname):
        raise DeviceError(name, f"vif {devid}", f"an interface named {vif.vifname} already exists in dom0; "
                          "pick another vifname or leave it unset")
