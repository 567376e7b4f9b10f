"""The supervisor: keeps the promises of on_poweroff, on_reboot, on_crash and on_watchdog for every
guest xentool created, whether or not the command that created it still runs.

It runs in the host's daemon (xentool.xentoold), one per host.  It holds no state of its own:
the hypervisor says which domains exist and which are down, xentool's records say what each
one's config wants.  So a daemon that was killed and started again takes over where the old one
stopped, handling at once any guest that went down meanwhile, and restarts no guest by mistake (it
acts only on domains that are shut down, under the same per-guest lock the commands take).

It wakes on xenstored's @releaseDomain watch (fired when a domain shuts down or dies) and, in
case a watch event is lost, every POLL_SECONDS.  Domains without a record (xl's) are left alone:
xl's own monitor keeps their promises.  What it does goes to the daemon's log, one line per action.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

from hypercalls.interface import Hypervisor, ShutdownReason
from xentool.domains import DomainSummary, summarize
from xentool.records import RecordStore
from xentool.shutdown_actions import apply_shutdown_action

POLL_SECONDS = 5.0
WATCH_TOKEN = "xentool-supervisor"

WENT_DOWN = "went down"  # the key in ``reported`` of a guest whose going down was told


class Report(Protocol):
    """Who is told what the supervisor finds and does (the daemon's events)."""

    def went_down(self, domain: DomainSummary, reason: str) -> None:
        """A guest is found down, before anything is done to it: the action may destroy it before
        anyone else has looked, and then only this tells that it shut down or crashed."""

    def acted(self, domain: DomainSummary, reason: str, outcome: str) -> None:
        """The action was taken: the domain as it was, why it went down, its state afterwards."""


def sweep(hv: Hypervisor, records: RecordStore, reported: set[tuple[int, str]], log: Callable[[str], None],
          report: Report | None = None) -> None:
    """Act on every xentool guest that is down.  ``reported`` keeps (domid, outcome) pairs already
    logged, so a preserved guest or a failing action is logged once, not every poll."""
    for info in hv.domain_list():
        if info.domid == 0 or not info.shutdown or info.dying or info.shutdown_reason == ShutdownReason.SUSPEND:
            continue  # running, already going, or suspended for a save that decides what comes next
        if records.load(info.uuid) is None:
            continue  # not ours
        domain = summarize(hv, info)
        reason = info.shutdown_reason.name.lower() if info.shutdown_reason is not None else "shutdown"
        if report is not None and (info.domid, WENT_DOWN) not in reported:
            reported.add((info.domid, WENT_DOWN))
            report.went_down(domain, reason)
        try:
            outcome = apply_shutdown_action(hv, records, domain)
        except Exception as e:  # noqa: BLE001 - one guest's failure must not end the others' supervision
            outcome = f"failed: {e}"
        if (info.domid, outcome) not in reported:
            reported.add((info.domid, outcome))
            log(f"domain {domain.name} (id {info.domid}, uuid {info.uuid}) went down ({reason}): {outcome}")
            if report is not None:
                report.acted(domain, reason, outcome)


def supervise(hv: Hypervisor, records: RecordStore, stopping: threading.Event, log: Callable[[str], None],
              report: Report | None = None) -> None:
    """Keep the promises until ``stopping`` is set; the first sweep (at once) is the take-over."""
    reported: set[tuple[int, str]] = set()
    xs = hv.xenstore()
    xs.watch("@releaseDomain", WATCH_TOKEN)  # also fires once now
    swept = 0.0
    try:
        while not stopping.is_set():
            # Woken each second to see ``stopping``; a sweep on a watch, or every POLL_SECONDS.
            if xs.read_watch(1.0) is None and time.monotonic() - swept < POLL_SECONDS:
                continue
            swept = time.monotonic()
            sweep(hv, records, reported, log, report)
            live = {info.domid for info in hv.domain_list()}
            reported = {entry for entry in reported if entry[0] in live}
    finally:
        xs.unwatch("@releaseDomain", WATCH_TOKEN)


__all__ = ["POLL_SECONDS", "Report", "supervise", "sweep"]
