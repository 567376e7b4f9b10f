"""The guest's VNC server in QEMU: on or off, where it listens, which display it takes."""

from __future__ import annotations

import errno
import socket

from xentool.config import GuestConfig
from xentool.errors import DeviceError

VNC_BASE_PORT = 5900
VNC_AUTO_DISPLAYS = 100  # libxl's "to=99": the first free display from 0 to 99


def vnc_enabled(config: GuestConfig) -> bool:
    """libxl enables VNC for HVM guests unless told not to (on 127.0.0.1)."""
    return config.vnc is None or config.vnc.enabled


def vnc_listen(config: GuestConfig) -> str:
    return config.vnc.listen if config.vnc else "127.0.0.1"


class AddressNotHere(Exception):
    """The listen address belongs to no interface of dom0 (127.0.0.1 with the loopback down)."""


def port_is_free(listen: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in listen else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((listen, port))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise AddressNotHere(listen) from e
            return False
    return True


def choose_vnc_display(config: GuestConfig) -> int | None:
    """The display QEMU serves on: the config's (which must be free), else the first free one."""
    if not vnc_enabled(config):
        return None
    try:
        return _free_vnc_display(config)
    except AddressNotHere as e:
        hint = "bring the loopback interface up (ip link set lo up)" if str(e).startswith("127.") else "fix vnc.listen"
        raise DeviceError(config.name, "vnc", f"{e} is not an address of dom0; {hint}, or set vnc.enabled: false") from None


def _free_vnc_display(config: GuestConfig) -> int | None:
    listen = vnc_listen(config)
    wanted = config.vnc.display if config.vnc else None
    if wanted is not None:
        if not port_is_free(listen, VNC_BASE_PORT + wanted):
            raise DeviceError(config.name, "vnc", f"display {wanted} (port {VNC_BASE_PORT + wanted} on {listen}) is in use; "
                              "pick another vnc.display or leave it unset for the first free one")
        return wanted
    for display in range(VNC_AUTO_DISPLAYS):
        if port_is_free(listen, VNC_BASE_PORT + display):
            return display
    raise DeviceError(config.name, "vnc", f"ports {VNC_BASE_PORT}-{VNC_BASE_PORT + VNC_AUTO_DISPLAYS - 1} on {listen} "
                      "are all in use; free one or set vnc.enabled: false")
