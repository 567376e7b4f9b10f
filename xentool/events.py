"""What happens to guests, as events: what the daemon streams (`xentool events`, ``xt.events()``).

Most events are seen, not told: the daemon looks at the host (:func:`look`) whenever xenstored
says something changed (@introduceDomain, @releaseDomain, a backend's nodes) and every few
seconds, and :func:`changes` turns the difference between two looks into events.  So guests made by
xl show up as xentool's do, and a daemon started again misses nothing that is still visible.
What cannot be seen afterwards (a guest saved, restored, or a device model that died, a restart by
an on_* action) is told by the process that did it: :func:`publish`, a datagram to the daemon.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from hypercalls.errors import XenError
from hypercalls.interface import DomainInfo, Hypervisor, RunState
from xentool.domains import dom_path
from xentool.wire import PUBLISH_SOCKET

# The kinds of event, with what each one's detail holds.
DEFINED = "defined"  # a config kept to start by name (detail: source)
UNDEFINED = "undefined"
STARTED = "started"  # a defined guest was started (its domain's "created" comes too)
CREATED = "created"  # a domain appeared (detail: type)
DESTROYED = "destroyed"  # it is gone
SHUTDOWN = "shutdown"  # it shut down (detail: reason: poweroff, reboot, suspend, watchdog)
CRASHED = "crashed"
PAUSED = "paused"
UNPAUSED = "unpaused"
RENAMED = "renamed"  # detail: old
DEVICE_ATTACHED = "device-attached"  # detail: kind (vbd, qdisk, vif), devid
DEVICE_DETACHED = "device-detached"
RESTARTED = "restarted"  # by an on_* action (detail: reason, action)
SAVED = "saved"  # detail: path, kept_running
RESTORED = "restored"  # detail: path
DEVICE_MODEL_DIED = "device-model-died"  # detail: pid, what was done
MIGRATED_OUT = "migrated-out"  # moved to another host (detail: to, live)
MIGRATED_IN = "migrated-in"  # came from another host (detail: from, live)
DAEMON_STARTED = "daemon-started"  # the daemon took over the host (detail: pid, guests)
KINDS = (DEFINED, UNDEFINED, STARTED, CREATED, DESTROYED, SHUTDOWN, CRASHED, PAUSED, UNPAUSED, RENAMED, DEVICE_ATTACHED, DEVICE_DETACHED,
         RESTARTED, SAVED, RESTORED, DEVICE_MODEL_DIED, MIGRATED_OUT, MIGRATED_IN, DAEMON_STARTED)

# The devices reported, by their backend's kind; consoles are not: every PV guest has one from its
# creation to its end.
DEVICE_KINDS = ("vbd", "qdisk", "vif", "vkbd", "vfb")
BACKENDS = "/local/domain/0/backend"  # the daemon watches it: a device added or removed changes it


@dataclass(frozen=True)
class Event:
    kind: str
    name: str | None = None
    uuid: str | None = None
    domid: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)
    seq: int = 0  # given by the daemon's log: the order events happened in, per daemon run

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        known = {key: data[key] for key in ("kind", "name", "uuid", "domid", "detail", "time", "seq") if key in data}
        if not isinstance(known.get("kind"), str):
            raise ValueError(f"an event has a kind: {data!r}")
        return cls(**known)

    def line(self) -> str:
        """The event as `xentool events` prints it."""
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time))
        who = self.name or "-"
        if self.domid is not None:
            who += f" (id {self.domid})"
        detail = " ".join(f"{key}={value}" for key, value in self.detail.items())
        return f"{stamp} {self.kind:<17} {who}{'  ' + detail if detail else ''}"


@dataclass(frozen=True)
class GuestView:
    """One domain as the daemon last saw it: what an event is made from."""

    domid: int
    uuid: str
    name: str | None
    type: str
    state: str  # running (running or blocked), paused, shutdown, crashed, dying
    reason: str | None
    devices: frozenset[tuple[str, int]]  # (backend kind, devid)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["devices"] = sorted([kind, devid] for kind, devid in self.devices)
        return data


def state_name(info: DomainInfo) -> str:
    """The state events speak of: running and blocked are one (a guest flips between them all the time)."""
    state = info.state
    return "running" if state in (RunState.RUNNING, RunState.BLOCKED) else state.value


def _devices(hv: Hypervisor) -> dict[int, set[tuple[str, int]]]:
    """The devices dom0's backends serve, by guest: read from the backend side, which is dom0's own
    (a guest may write into its front-end directory, not into these)."""
    xs = hv.xenstore()
    found: dict[int, set[tuple[str, int]]] = {}
    for kind in DEVICE_KINDS:
        for domid in xs.list_or_empty(f"{BACKENDS}/{kind}"):
            if domid.isdigit():
                for devid in xs.list_or_empty(f"{BACKENDS}/{kind}/{domid}"):
                    if devid.isdigit():
                        found.setdefault(int(domid), set()).add((kind, int(devid)))
    return found


def look(hv: Hypervisor) -> dict[int, GuestView]:
    """Every domain but dom0, now."""
    xs = hv.xenstore()
    seen: dict[int, GuestView] = {}
    try:
        infos = hv.domain_list()
    except XenError:
        return seen
    devices = _devices(hv)
    for info in infos:
        if info.domid == 0:
            continue
        seen[info.domid] = GuestView(
            domid=info.domid, uuid=info.uuid, name=xs.read_or(f"{dom_path(info.domid)}/name"),
            type=info.guest_type.value, state=state_name(info),
            reason=info.shutdown_reason.name.lower() if info.shutdown and info.shutdown_reason is not None else None,
            devices=frozenset(devices.get(info.domid, ())),
        )
    return seen


def with_known_names(before: dict[int, GuestView], after: dict[int, GuestView]) -> dict[int, GuestView]:
    """``after``, where a domain's name is gone (its xenstore directory removed as it is destroyed)
    but ``before`` knew it: events then still say whose they are."""
    return {domid: replace(view, name=before[domid].name)
            if view.name is None and domid in before and before[domid].uuid == view.uuid else view
            for domid, view in after.items()}


def changes(before: dict[int, GuestView], after: dict[int, GuestView]) -> list[Event]:
    """The events that turn the look ``before`` into ``after``."""
    events: list[Event] = []
    for domid, old in before.items():
        new = after.get(domid)
        if new is None or new.uuid != old.uuid:
            events.append(Event(DESTROYED, old.name, old.uuid, domid))
    for domid, new in after.items():
        seen = before.get(domid)
        # New: not seen before, or seen only while still being made (nameless, not yet reported).
        if seen is None or seen.uuid != new.uuid or seen.name is None:
            if new.name is None:
                continue  # still being made: its name is its first node; reported once it has one
            # Its state when first seen is where it starts from (a domain is made paused, and
            # unpaused once built): "created" says it, a later change is an event of its own.
            events.append(Event(CREATED, new.name, new.uuid, domid, {"type": new.type, "state": new.state}))
            seen = GuestView(domid, new.uuid, new.name, new.type, new.state, new.reason, frozenset())
        events += _guest_changes(seen, new)
    return events


def _guest_changes(old: GuestView, new: GuestView) -> list[Event]:
    events: list[Event] = []

    def event(what: str, **detail: Any) -> None:
        events.append(Event(what, new.name, new.uuid, new.domid, detail))

    if old.name is not None and new.name is not None and old.name != new.name:
        event(RENAMED, old=old.name)
    if old.state != new.state:
        if new.state == "crashed":
            event(CRASHED)
        elif new.state == "shutdown":
            event(SHUTDOWN, reason=new.reason or "unknown")
        elif new.state == "paused" and old.state == "running":
            event(PAUSED)
        elif new.state == "running" and old.state == "paused":
            event(UNPAUSED)
    for kind, devid in sorted(new.devices - old.devices):
        event(DEVICE_ATTACHED, kind=kind, devid=devid)
    for kind, devid in sorted(old.devices - new.devices):
        event(DEVICE_DETACHED, kind=kind, devid=devid)
    return events


def publish(event: Event) -> None:
    """Tell the daemon, if one runs here, of something it cannot see for itself.  Never fails:
    without a daemon nobody listens, and the command that did it has its own output."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            sock.sendto(json.dumps(event.to_json()).encode(), os.fspath(PUBLISH_SOCKET))
    except OSError:
        pass


__all__ = ["KINDS", "Event", "GuestView", "changes", "look", "publish", "state_name", "with_known_names"]
