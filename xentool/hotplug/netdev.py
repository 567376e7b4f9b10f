"""The network interface operations of vif hotplug, as ioctls on an AF_INET socket (what Xen's
vif-bridge script does with ip(8): no shell, no parsing of a tool's output).
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from pathlib import Path

# <linux/sockios.h>
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCGIFMTU = 0x8921
SIOCSIFMTU = 0x8922
SIOCSIFNAME = 0x8923
SIOCBRADDIF = 0x89A2
SIOCBRDELIF = 0x89A3
IFF_UP = 0x1
IFNAMSIZ = 16
_IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux: the name, then a 24-byte union


def _ifreq(name: str, payload: bytes = b"") -> bytes:
    return os.fsencode(name).ljust(IFNAMSIZ, b"\0") + payload.ljust(_IFREQ_SIZE - IFNAMSIZ, b"\0")


def _ioctl(request: int, data: bytes) -> bytes:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return fcntl.ioctl(s.fileno(), request, data)


def exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def is_bridge(name: str) -> bool:
    return os.path.isdir(f"/sys/class/net/{name}/bridge")


def bridge_of(name: str) -> str | None:
    """The bridge the interface is a port of, if any."""
    try:
        return os.path.basename(os.readlink(f"/sys/class/net/{name}/master"))
    except OSError:
        return None


def get_mtu(name: str) -> int:
    return struct.unpack_from("i", _ioctl(SIOCGIFMTU, _ifreq(name)), IFNAMSIZ)[0]


def set_mtu(name: str, mtu: int) -> None:
    _ioctl(SIOCSIFMTU, _ifreq(name, struct.pack("i", mtu)))


def set_up(name: str, up: bool = True) -> None:
    flags = struct.unpack_from("H", _ioctl(SIOCGIFFLAGS, _ifreq(name)), IFNAMSIZ)[0]
    flags = flags | IFF_UP if up else flags & ~IFF_UP
    _ioctl(SIOCSIFFLAGS, _ifreq(name, struct.pack("H", flags)))


def rename(name: str, new_name: str) -> None:
    """Rename a (down) interface."""
    _ioctl(SIOCSIFNAME, _ifreq(name, os.fsencode(new_name)))


def add_to_bridge(bridge: str, name: str) -> None:
    _ioctl(SIOCBRADDIF, _ifreq(bridge, struct.pack("i", socket.if_nametoindex(name))))


def remove_from_bridge(bridge: str, name: str) -> None:
    _ioctl(SIOCBRDELIF, _ifreq(bridge, struct.pack("i", socket.if_nametoindex(name))))


SIOCGIFADDR = 0x8915


def ipv4_address(name: str) -> str | None:
    """The interface's (primary) IPv4 address, or None if it has none."""
    try:
        reply = _ioctl(SIOCGIFADDR, _ifreq(name))
    except OSError:
        return None
    # struct sockaddr_in in the union: family (2), port (2), then the address.
    return socket.inet_ntoa(reply[IFNAMSIZ + 4:IFNAMSIZ + 8])


def default_route_interface() -> str | None:
    """The interface of dom0's IPv4 default route (/proc/net/route: destination and mask 0)."""
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) >= 8 and fields[1] == "00000000" and fields[7] == "00000000":
            return fields[0]
    return None


def set_proxy_arp(name: str) -> None:
    """Answer ARP on ``name`` for addresses dom0 routes elsewhere (vif-route does it)."""
    with open(f"/proc/sys/net/ipv4/conf/{name}/proxy_arp", "w") as knob:
        knob.write("1")
