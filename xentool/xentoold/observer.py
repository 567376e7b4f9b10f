"""The daemon's eyes: looks at the host whenever xenstored says something changed, and checks
the domains' states every POLL_SECONDS besides (pausing a domain fires no watch; a rename by xl
neither, and is seen at the next look), and logs what changed as events; and takes in what other
processes publish (xentool.events.publish).
"""

from __future__ import annotations

import json
import os
import queue
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from hypercalls.errors import XenError
from hypercalls.interface import Hypervisor
from xentool.domains import DomainSummary
from xentool.events import (
    BACKENDS,
    CRASHED,
    CREATED,
    PAUSED,
    RENAMED,
    RESTARTED,
    SHUTDOWN,
    UNPAUSED,
    Event,
    GuestView,
    changes,
    look,
    state_name,
    with_known_names,
)
from xentool.wire import PUBLISH_SOCKET
from xentool.xentoold.eventlog import EventLog

POLL_SECONDS = 2.0
SETTLE_SECONDS = 0.05  # a create fires dozens of watches in a burst: one look after it settles
WATCHES = ("@introduceDomain", "@releaseDomain", BACKENDS)
TOKEN = "xentoold-observer"
# Publications of changes the observer would see, if it looked in time: it logs them itself.
TOLD_TO_THE_OBSERVER = frozenset({PAUSED, UNPAUSED, RENAMED})
# Told by the supervisor, which sees a guest go down before it acts: the shutdown comes before
# the destroy that the action may be, the restart after both.
_WENT_DOWN = frozenset({SHUTDOWN, CRASHED})


def observe(hv: Hypervisor, log: EventLog, stopping: threading.Event, wake: threading.Event,
            told: queue.SimpleQueue[Event]) -> None:
    """Look and log until ``stopping`` is set; ``wake`` asks for a look now (a publication came);
    ``told`` brings changes that a command made and told of (a pause, a rename), which a look may
    come too late to see (a pause undone within the poll), logged here once whichever comes first."""
    xs = hv.xenstore()
    for path in WATCHES:
        xs.watch(path, TOKEN)
    try:
        before = look(hv)
        log.add((), before)
        reported: dict[int, tuple[str, float]] = {}  # per domain: the state last reported, and when
        looked = time.monotonic()
        while not stopping.is_set():
            fired = xs.read_watch(0.2)
            if fired is None and not wake.is_set() and time.monotonic() - looked < POLL_SECONDS:
                continue
            if fired is not None:  # let the burst pass
                while xs.read_watch(SETTLE_SECONDS) is not None:
                    pass
            looked = time.monotonic()
            if fired is None and not wake.is_set() and not _states_changed(hv, before):
                continue  # the poll's cheap check: one hypercall, no xenstore reads
            wake.clear()
            after = with_known_names(before, look(hv))
            # Taken after the look: a domain gone from it was destroyed after its going down was told.
            news = _drain(told)
            found = _went_down(news, before)
            found += changes(before, after)
            _note_reported(found, reported)
            found += _take_told(news, after, reported)
            log.add(found, after)
            before = after
    finally:
        for path in WATCHES:
            try:
                xs.unwatch(path, TOKEN)
            except Exception:  # noqa: BLE001 - the connection may be gone; the daemon is stopping anyway
                pass


_STATE_AFTER = {PAUSED: "paused", UNPAUSED: "running"}


def _note_reported(events: list[Event], reported: dict[int, tuple[str, float]]) -> None:
    now = time.time()
    for event in events:
        state = event.detail.get("state") if event.kind == CREATED else _STATE_AFTER.get(event.kind)
        if event.domid is not None and isinstance(state, str):
            reported[event.domid] = (state, now)


def _drain(told: queue.SimpleQueue[Event]) -> list[Event]:
    news: list[Event] = []
    while True:
        try:
            news.append(told.get_nowait())
        except queue.Empty:
            return news


def _went_down(news: list[Event], before: dict[int, GuestView]) -> list[Event]:
    """The told shutdowns and crashes of domains the last look saw up: reported now, ahead of the
    look's own changes (the domain may be gone from it already), and taken into ``before`` so that
    a look that sees the domain down adds nothing."""
    found: list[Event] = []
    for event in news:
        view = before.get(event.domid) if event.domid is not None else None
        if event.kind not in _WENT_DOWN or view is None or view.uuid != event.uuid or view.state in ("shutdown", "crashed"):
            continue  # not a going down, a domain no look has seen (the next reports it whole), or seen down
        state = "crashed" if event.kind == CRASHED else "shutdown"
        before[view.domid] = replace(view, state=state, reason=event.detail.get("reason"))
        found.append(event)
    return found


def _take_told(news: list[Event], before: dict[int, GuestView], reported: dict[int, tuple[str, float]]) -> list[Event]:
    """The told changes that no look reported since they were made; ``before`` (the look just
    made) takes them in, so that the next look does not report them again.  The state a look
    shows is no proof: a pause made just after a create may find the view still paused from the
    create itself, whose unpause no look saw."""
    found: list[Event] = []
    for event in news:
        if event.kind == RESTARTED:
            found.append(event)  # of a domain gone by now: told once, after its going down
            continue
        view = before.get(event.domid) if event.domid is not None else None
        if view is None or view.uuid != event.uuid:
            continue  # a domain no look has seen yet: the next look reports it whole
        if event.kind in _STATE_AFTER:
            state = _STATE_AFTER[event.kind]
            last = reported.get(view.domid)
            if last is not None and last[0] == state and last[1] >= event.time:
                continue  # a look reported it after it was made
            before[view.domid] = replace(view, state=state)
            reported[view.domid] = (state, time.time())
        elif event.kind == RENAMED and event.name and view.name != event.name:
            before[view.domid] = replace(view, name=event.name)
            event = replace(event, detail={"old": view.name})
        else:
            continue  # seen already, or a going down (_went_down)
        found.append(event)
    return found


def _states_changed(hv: Hypervisor, before: dict[int, GuestView]) -> bool:
    try:
        now = {info.domid: (info.uuid, state_name(info)) for info in hv.domain_list() if info.domid != 0}
    except XenError:
        return True
    return now != {domid: (view.uuid, view.state) for domid, view in before.items()}


class SupervisorTells:
    """The supervisor's findings (xentool.supervisor.Report), told to the observer."""

    def __init__(self, told: queue.SimpleQueue[Event], wake: threading.Event) -> None:
        self._told = told
        self._wake = wake

    def went_down(self, domain: DomainSummary, reason: str) -> None:
        crashed = reason == "crash"
        self._tell(Event(CRASHED if crashed else SHUTDOWN, domain.name, domain.uuid, domain.domid,
                         {} if crashed else {"reason": reason}))

    def acted(self, domain: DomainSummary, reason: str, outcome: str) -> None:
        if outcome == "running":
            self._tell(Event(RESTARTED, domain.name, domain.uuid, domain.domid, {"reason": reason}))

    def _tell(self, event: Event) -> None:
        self._told.put(event)
        self._wake.set()


def receive_publications(log: EventLog, stopping: threading.Event, wake: threading.Event,
                         told: queue.SimpleQueue[Event], note: Callable[[str], None]) -> None:
    """Events told by other processes, logged as they come; each one also asks for a look."""
    PUBLISH_SOCKET.unlink(missing_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    old_umask = os.umask(0o177)  # root only: a datagram here becomes an event every client believes
    try:
        sock.bind(os.fspath(PUBLISH_SOCKET))
    finally:
        os.umask(old_umask)
    sock.settimeout(0.5)
    try:
        while not stopping.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            try:
                event = Event.from_json(json.loads(data))
            except (ValueError, TypeError) as e:
                note(f"a publication that is not an event was dropped: {e}")
                continue
            if event.kind in TOLD_TO_THE_OBSERVER:
                told.put(event)
            else:
                log.add([event])
            wake.set()
    finally:
        sock.close()
        PUBLISH_SOCKET.unlink(missing_ok=True)


__all__ = ["SupervisorTells", "observe", "receive_publications"]
