"""Domains as dom0 sees them: their state, a wait for a state, and the summary `xentool list`
shows.  The bottom of the toolstack's own layers (hypercalls and xenstore only), so that the
console service, creation and the lifecycle commands share one reading of a domain."""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypercalls.errors import XenError
from hypercalls.interface import DomainInfo, Hypervisor, RunState, XenStore
from xentool.errors import WaitTimeout

DOMAIN_GONE = "gone"  # the state a wait reports once the domain no longer exists
DOM0_NAME = "Domain-0"


def dom_path(domid: int) -> str:
    return f"/local/domain/{domid}"


def state_of(hv: Hypervisor, domid: int) -> DomainInfo | None:
    """The domain's info, or None once it no longer exists."""
    try:
        return hv.domain_getinfo(domid)
    except XenError as e:
        if e.errno == errno.ESRCH:
            return None
        raise


def wait_until(
    hv: Hypervisor,
    domid: int,
    done: Callable[[DomainInfo | None], bool],
    what: str,
    timeout: float,
    hint: str = "",
) -> DomainInfo | None:
    """Wait for ``done(info)`` (info None once the domain is gone), waking on @releaseDomain.

    xenstored fires @releaseDomain whenever a domain shuts down or dies, so watching it is how a
    toolstack hears about state changes without polling the hypervisor in a tight loop; a slow
    poll stays underneath in case an event is missed.
    """
    xs = hv.xenstore()
    token = f"xentool-wait-{domid}-{time.monotonic_ns()}"
    xs.watch("@releaseDomain", token)
    try:
        deadline = time.monotonic() + timeout
        while True:
            info = state_of(hv, domid)
            if done(info):
                return info
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WaitTimeout(what, timeout, hint)
            xs.read_watch(min(remaining, 0.25))
    finally:
        xs.unwatch("@releaseDomain", token)


def is_shut_down(info: DomainInfo | None) -> bool:
    return info is None or info.state in (RunState.SHUTDOWN, RunState.CRASHED)


def name_taken_by(xs: XenStore, name: str, txn: object = None, but: int | None = None) -> int | None:
    """The domid of the domain called ``name`` (other than ``but``), read inside ``txn`` when
    given, so that claiming a name in the same transaction is atomic (libxl__domain_rename)."""
    for entry in xs.list_or_empty("/local/domain", txn):
        if not entry.isdigit() or int(entry) == but:
            continue
        if xs.read_or(f"/local/domain/{entry}/name", None, txn) == name:
            return int(entry)
    return None


# libxl adds this much to maxmem for the pages Xen itself charges to the domain (the grant table
# frames, the shared info page, ...): LIBXL_MAXMEM_CONSTANT in libxl_internal.h.
MAXMEM_SLACK_KIB = 1024

@dataclass(frozen=True)
class DomainSummary:
    """One row of `xentool list` (the same figures `xl list` shows)."""

    domid: int
    name: str
    uuid: str
    type: str
    state: str
    memory_mib: int
    max_memory_mib: int
    vcpus: int
    cpu_time_s: float
    shutdown_reason: str | None

    def to_json(self) -> dict[str, Any]:
        # Its fields as they are (a details' config is JSON already): dataclasses.asdict copies
        # deeply, 15 ms of a 30-guest `list --json` in the lab's dom0.
        return dict(vars(self))


@dataclass(frozen=True)
class DomainDetails(DomainSummary):
    """`xentool info`: the summary plus the balloon target, vcpu limit and the config, if known."""

    target_memory_mib: int | None
    max_vcpus: int
    config: dict[str, Any] | None
    # Those below are None from a daemon older than them.
    paging: str | None = None  # "hap" or "shadow" for HVM and PVH guests, None for PV ones
    scheduler: str | None = None  # the scheduler of the domain's cpupool
    weight: int | None = None  # under credit and credit2
    cap: int | None = None
    pool: str | None = None  # the cpupool's name


def name_of(hv: Hypervisor, domid: int) -> str:
    name = hv.xenstore().read_or(f"{dom_path(domid)}/name")
    if name is None:
        return DOM0_NAME if domid == 0 else f"(domain {domid})"
    return name


def summarize(hv: Hypervisor, info: DomainInfo) -> DomainSummary:
    return DomainSummary(
        domid=info.domid,
        name=name_of(hv, info.domid),
        uuid=info.uuid,
        type=info.guest_type.value,
        state=info.state.value,
        memory_mib=info.memory_kib // 1024,
        max_memory_mib=info.max_memory_kib // 1024,
        vcpus=info.online_vcpus,
        cpu_time_s=round(info.cpu_time_ns / 1e9, 1),
        shutdown_reason=info.shutdown_reason.name.lower() if info.shutdown and info.shutdown_reason is not None else None,
    )
