"""What a simulated guest does: boot, print on its console, and answer the toolstack through xenstore.

A real PV-aware Linux guest watches three things in its xenstore directory: ``control/shutdown``
(drivers/xen/manage.c: it acknowledges by writing "" back, then powers off, reboots or suspends),
``memory/target`` (the balloon driver gives back or takes memory until it holds that many KiB) and
``cpu/N/availability`` (vcpu hotplug).  The simulated guest does the same, synchronously, inside the
xenstore write that triggers it, in whatever process makes that write; so a toolstack's shutdown
protocol, ``mem-set`` and ``vcpu-set`` behave here as on real Xen.

A guest reacts only while it runs (unpaused, not shut down).  A paused guest finds the requests
when it is unpaused.  A guest whose kernel command line contains ``xentool.sim.unresponsive``
ignores every request, to test what a toolstack does with a guest that never answers.
"""

from __future__ import annotations

import re
import time

from hypercalls.interface import GuestType, ShutdownReason
from hypercalls.sim.state import Domain, HostState
from hypercalls.sim.tree import PRIVILEGED, live_tree

UNRESPONSIVE_FLAG = "xentool.sim.unresponsive"
KERNEL_BANNER = "Linux version 6.1.0 (xentool simulated guest)"

SHUTDOWN_REQUESTS: dict[str, ShutdownReason] = {
    "poweroff": ShutdownReason.POWEROFF,
    "halt": ShutdownReason.POWEROFF,
    "reboot": ShutdownReason.REBOOT,
    "suspend": ShutdownReason.SUSPEND,
}

FAREWELLS: dict[str, tuple[str, ...]] = {
    "poweroff": ("reboot: Power down",),
    "halt": ("reboot: System halted",),
    "reboot": ("reboot: Restarting system",),
    "suspend": ("Freezing user space processes ... (elapsed 0.001 seconds) done.", "xen:manage: suspending"),
}

_WATCHED = re.compile(r"^/local/domain/(\d+)/(control/shutdown|memory/target|cpu/(\d+)/availability)$")


def is_unresponsive(dom: Domain) -> bool:
    return UNRESPONSIVE_FLAG in dom.cmdline


def is_listening(dom: Domain) -> bool:
    return dom.domid != 0 and dom.built and dom.is_running and not is_unresponsive(dom)


def console_print(dom: Domain, line: str, early: bool = False) -> None:
    """A line on the guest's console, with Linux's printk timestamp (seconds since boot; 0 for the
    ``early`` lines printed before the clock runs)."""
    since = 0 if early else max(0, time.time_ns() - (dom.booted_ns or time.time_ns()))
    seconds, rest = divmod(since // 1000, 1_000_000)
    dom.console += f"[{seconds:5d}.{rest:06d}] {line}\n"


def boot(dom: Domain) -> None:
    """The first time the guest runs: its kernel's first words."""
    dom.booted_ns = time.time_ns()
    console_print(dom, KERNEL_BANNER, early=True)
    console_print(dom, f"Command line: {dom.cmdline}", early=True)
    if dom.guest_type == GuestType.HVM:
        console_print(dom, "Hypervisor detected: Xen HVM", early=True)
    else:
        kind = " PVH" if dom.guest_type == GuestType.PVH else ""
        console_print(dom, f"Booting paravirtualized kernel on Xen{kind}", early=True)


def after_xenstore_changes(state: HostState, paths: list[str]) -> None:
    """Let every running guest react to the nodes just changed in its directory."""
    for path in paths:
        match = _WATCHED.match(path)
        if match is None:
            continue
        dom = state.domains.get(int(match.group(1)))
        if dom is None or not is_listening(dom):
            continue
        if match.group(2) == "control/shutdown":
            _answer_shutdown(state, dom)
        elif match.group(2) == "memory/target":
            _follow_memory_target(state, dom)
        else:
            _follow_vcpu_availability(state, dom)


def after_unpause(state: HostState, dom: Domain) -> None:
    """The guest runs again (or for the first time): it boots, then looks at what it was asked."""
    if dom.booted_ns is None:
        boot(dom)
    if not is_listening(dom):
        return
    _follow_memory_target(state, dom)
    _follow_vcpu_availability(state, dom)
    _answer_shutdown(state, dom)


def shut_itself_down(state: HostState, dom: Domain, request: str) -> None:
    """The guest powers off, reboots or suspends (SCHEDOP_shutdown from inside)."""
    for line in FAREWELLS.get(request, ()):
        console_print(dom, line)
    state.shut_down(dom, SHUTDOWN_REQUESTS.get(request, ShutdownReason.CRASH))


def _node_value(state: HostState, path: str) -> str | None:
    node = state.nodes.get(path)
    return None if node is None else node.value


def _answer_shutdown(state: HostState, dom: Domain) -> None:
    path = f"/local/domain/{dom.domid}/control/shutdown"
    request = _node_value(state, path)
    if request not in SHUTDOWN_REQUESTS:
        return  # "", "crash" and anything unknown: Linux's manage.c ignores them too
    live_tree(state).write(path, "", PRIVILEGED)  # acknowledge, as manage.c does
    shut_itself_down(state, dom, request)


def _follow_memory_target(state: HostState, dom: Domain) -> None:
    """The balloon driver: take or give back pages until tot_pages is the target.

    memory/target is in KiB and, for an HVM guest, leaves out the video RAM (memory/videoram),
    which the device model holds in the guest's allocation too (libxl_set_memory_target).
    """
    target_kib = _int_node(state, f"/local/domain/{dom.domid}/memory/target")
    if target_kib is None or target_kib <= 0:
        return
    videoram_kib = _int_node(state, f"/local/domain/{dom.domid}/memory/videoram") or 0
    set_balloon(state, dom, target_kib + max(0, videoram_kib))


def _int_node(state: HostState, path: str) -> int | None:
    value = _node_value(state, path)
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


def set_balloon(state: HostState, dom: Domain, target_kib: int) -> None:
    """Move tot_pages to ``target_kib``, bounded by the maxmem cap and by the host's free memory."""
    wanted = target_kib // 4
    if dom.max_pages:
        wanted = min(wanted, dom.max_pages)
    wanted = min(wanted, dom.tot_pages + state.free_pages())
    dom.tot_pages = max(0, wanted)


def _follow_vcpu_availability(state: HostState, dom: Domain) -> None:
    """vcpu hotplug: a vcpu whose availability node says "online" is up, "offline" down; a vcpu
    without a node keeps its state."""
    online = 0
    for vcpu in range(dom.max_vcpus):
        value = _node_value(state, f"/local/domain/{dom.domid}/cpu/{vcpu}/availability")
        if value is None:
            online += vcpu < dom.online_vcpus
        else:
            online += value == "online"
    if online >= 1:
        dom.online_vcpus = online
