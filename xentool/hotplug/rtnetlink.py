"""The two rtnetlink requests a routed vif needs (what Xen's vif-route script does with ip(8)):
an IPv4 address on an interface, and a host route through it.  One request per socket, answered by
the kernel's acknowledgement; no shell, no tool's output to parse.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct

NETLINK_ROUTE = 0
RTM_NEWADDR = 20
RTM_NEWROUTE = 24
NLMSG_ERROR = 2
NLM_F_REQUEST = 0x1
NLM_F_ACK = 0x4
NLM_F_EXCL = 0x200
NLM_F_CREATE = 0x400
IFA_ADDRESS = 1
IFA_LOCAL = 2
RTA_DST = 1
RTA_OIF = 4
RTA_PREFSRC = 7
RT_TABLE_MAIN = 254
RTPROT_BOOT = 3  # what `ip route add` marks its routes with
RT_SCOPE_UNIVERSE = 0
RT_SCOPE_LINK = 253
RTN_UNICAST = 1

_NLMSGHDR = struct.Struct("=IHHII")
_IFADDRMSG = struct.Struct("=BBBBI")
_RTMSG = struct.Struct("=BBBBBBBBI")


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def _request(kind: int, body: bytes) -> None:
    """Send one request and wait for its acknowledgement; raise OSError with the kernel's errno."""
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(body), kind, flags, 1, 0) + body)
        reply = sock.recv(65536)
    _length, reply_kind, _flags, _seq, _pid = _NLMSGHDR.unpack_from(reply)
    if reply_kind != NLMSG_ERROR:
        raise OSError(errno.EPROTO, f"unexpected rtnetlink reply type {reply_kind}")
    (code,) = struct.unpack_from("=i", reply, _NLMSGHDR.size)
    if code:
        raise OSError(-code, os.strerror(-code))


def add_address(ifname: str, address: str, prefixlen: int = 32) -> None:
    """``ip addr add ADDRESS/PREFIXLEN dev IFNAME`` (IPv4)."""
    packed = ipaddress.IPv4Address(address).packed
    body = _IFADDRMSG.pack(socket.AF_INET, prefixlen, 0, RT_SCOPE_UNIVERSE, socket.if_nametoindex(ifname))
    _request(RTM_NEWADDR, body + _attr(IFA_LOCAL, packed) + _attr(IFA_ADDRESS, packed))


def add_host_route(destination: str, ifname: str, source: str | None = None) -> None:
    """``ip route add DESTINATION dev IFNAME [src SOURCE]`` (an IPv4 host route in the main table)."""
    body = _RTMSG.pack(socket.AF_INET, 32, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, RT_SCOPE_LINK, RTN_UNICAST, 0)
    attrs = _attr(RTA_DST, ipaddress.IPv4Address(destination).packed)
    attrs += _attr(RTA_OIF, struct.pack("=I", socket.if_nametoindex(ifname)))
    if source:
        attrs += _attr(RTA_PREFSRC, ipaddress.IPv4Address(source).packed)
    _request(RTM_NEWROUTE, body + attrs)


__all__ = ["add_address", "add_host_route"]
