"""`xentool apply PATH...`: make the host's defined and running guests what a set of files says.

Every file is read and checked first; any config error in any file stops everything before a
change (all of them are reported).  Then a plan, per guest, in the files' order:

- define (a new definition) or redefine (the config changed), keeping the guest's uuid;
- start, when it does not run;
- change live what a running guest can take (memory target, vcpus online, disks and vifs attached
  or detached, the on_* actions and autostart, which are xentool's own);
- needs restart, for anything else (kernel, type, maxmem, ...): done only with ``--restart``
  (a shutdown, or a destroy when the guest does not act on it, then a start);
- remove (``--prune``): defined guests no file names are destroyed and undefined.

A guest's changes are a transaction: if one step fails, the steps done before it are undone, so
each guest ends either as it was or as the files say, and the report says which.  Applying the
same files again changes nothing.  One apply at a time per host (a lock in /run/xentool): a second
waits for the first.
"""

from __future__ import annotations

import fcntl
import os
import uuid as uuid_module
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from hypercalls.interface import DEFAULT_WEIGHT
from xentool.api import Toolstack
from xentool.config import GuestConfig, config_from_dict, load_config
from xentool.definitions import Definition
from xentool.domains import DomainSummary
from xentool.errors import ConfigError, ConfigIssue, XentoolError
from xentool.wire import RUN_DIR

LOCK_PATH = RUN_DIR / "apply.lock"
RESTART_SHUTDOWN_SECONDS = 120.0
# Keys whose change a running guest takes without a restart (the rest need one).
LIVE_KEYS = frozenset({"memory", "vcpus", "disks", "vifs", "on_poweroff", "on_reboot", "on_crash", "on_watchdog",
                       "restart_tries", "restart_window", "autostart", "autostart_order", "autostart_delay",
                       "cpus", "cpus_soft", "pool", "sched"})


@dataclass
class Step:
    """One change to one guest, with how to undo it."""

    says: str  # what the plan prints: "define", "start", "change live: memory 128 -> 256 MiB", ...
    do: Callable[[], object]
    undo: Callable[[], object] | None = None


@dataclass
class GuestPlan:
    name: str
    steps: list[Step] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)  # the keys, when --restart was not given
    problem: str | None = None  # why this guest is left alone (another domain holds its name, ...)
    # The guest's uuid once the plan is done: the config's, else its definition's, else the running
    # domain's, else a new one (uuid_is_new: none yet, and a check-mode plan does not make it).
    uuid: str | None = None
    uuid_is_new: bool = False


@dataclass(frozen=True)
class Outcome:
    name: str
    done: bool
    says: str  # "as the files say", or what failed and how it was left
    left_changed: bool = False  # failed, and a step done before the failure could not be undone


def read_files(paths: Sequence[str | Path]) -> list[GuestConfig]:
    """Every guest config in ``paths`` (files, or folders of *.yaml / *.yml); every file's errors
    at once as one ConfigError, and no two files naming one guest."""
    files: list[Path] = []
    issues: list[ConfigIssue] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            found = sorted([*path.glob("*.yaml"), *path.glob("*.yml")])
            if not found:
                issues.append(ConfigIssue(str(path), None, None, "", "a folder without guest configs (*.yaml, *.yml)"))
            files += found
        else:
            files.append(path)
    configs: list[GuestConfig] = []
    seen: dict[str, Path] = {}
    for path in files:
        try:
            config = load_config(path)
        except ConfigError as e:
            issues += e.issues
            continue
        if config.name in seen:
            issues.append(ConfigIssue(str(path), None, None, "name", f"{config.name!r} is also the name in {seen[config.name]}"))
            continue
        seen[config.name] = path
        configs.append(config)
    if issues:
        raise ConfigError(issues)
    return configs


@contextmanager
def one_at_a_time(waiting: Callable[[], None]) -> Iterator[None]:
    """The host's apply lock; ``waiting`` is called once if another apply holds it."""
    LOCK_PATH.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            waiting()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def in_todays_terms(dumped: dict[str, Any]) -> dict[str, Any]:
    """A config as an older xentool dumped it (a record, a definition), read as this one dumps it:
    a key added since then, at its default, is not a change that makes a guest need a restart."""
    try:
        return config_from_dict(dict(dumped), source="<record>").as_data()
    except ConfigError:
        return dict(dumped)  # one this xentool would refuse: compared as it is, so every difference shows


def plan(xt: Toolstack, configs: Sequence[GuestConfig], prune: bool = False, restart: bool = False) -> list[GuestPlan]:
    running = {d.name: d for d in xt.list_domains()}
    plans = [plan_guest(xt, config, running.get(config.name), restart) for config in configs]
    if prune:
        named = {config.name for config in configs}
        plans += [_plan_removal(xt, definition, running.get(definition.name))
                  for definition in xt.defined() if definition.name not in named]
    return plans


def plan_guest(xt: Toolstack, config: GuestConfig, domain: DomainSummary | None, restart: bool = False,
               start: bool = True, live: bool = True) -> GuestPlan:
    """One guest's steps to be as ``config`` says (``domain``: the one running under its name).
    Without ``start`` a guest that does not run is only defined; without ``live`` a running one
    is left as it runs (Ansible's ``present`` and ``stopped``: xentool.guest_state)."""
    name = config.name
    guest = GuestPlan(name)
    old = xt.definitions.load(name)
    record = xt.records.load(domain.uuid) if domain is not None else None
    known = str(config.uuid) if config.uuid else (old.uuid if old else record.uuid if record else None)
    uuid = known or str(uuid_module.uuid4())
    guest.uuid, guest.uuid_is_new = uuid, known is None
    if domain is not None and domain.uuid != uuid:
        guest.problem = (f"a domain named {name} runs with uuid {domain.uuid}, not this guest's ({uuid}); "
                         "left alone: rename or destroy it, or give the file its uuid")
        return guest
    wanted = {**config.as_data(), "uuid": uuid}
    defined = in_todays_terms(old.resolved) if old is not None else {}
    if old is None or defined != wanted:
        changed = "new" if old is None else ", ".join(sorted(k for k in {*wanted, *defined} if wanted.get(k) != defined.get(k)))
        guest.steps.append(Step(f"{'define' if old is None else 'redefine'} ({changed})",
                                lambda: xt.define(_with_uuid(config, uuid)),
                                lambda: _restore_definition(xt, name, old)))
    if domain is None:
        if start:
            guest.steps.append(Step("start", lambda: xt.start(name), lambda: xt.destroy(name)))
        return guest
    if not live:
        return guest
    current = in_todays_terms(record.config) if record is not None else {}
    current.pop("uuid", None)
    wanted.pop("uuid", None)
    differ = sorted(key for key in {*current, *wanted} if current.get(key) != wanted.get(key) and not
                    (key == "vifs" and _same_vifs(current.get(key, []), wanted.get(key, []))))
    later = [key for key in differ if key not in LIVE_KEYS or not _live_change_fits(key, current, wanted)]
    if later:
        if restart:
            guest.steps.append(Step(f"restart ({', '.join(later)} changed)", lambda: _restart(xt, name), None))
            return guest
        guest.needs_restart = later
    for key in differ:
        if key not in later:
            guest.steps += _live_steps(xt, name, domain, key, current, wanted)
    if differ and not later:
        guest.steps.append(Step("record the guest's new config", lambda: _record(xt, domain, config),
                                lambda: _record_dict(xt, domain, current)))
    return guest


def _with_uuid(config: GuestConfig, uuid: str) -> GuestConfig:
    """``config`` with the guest's uuid, still naming the file it came from."""
    copy = config.model_copy(update={"uuid": uuid_module.UUID(uuid)})
    copy._source = config.source
    return copy


def _same_vifs(current: list[dict[str, Any]], wanted: list[dict[str, Any]]) -> bool:
    """A vif without a MAC in the file is the one xentool gave a MAC to."""
    return len(current) == len(wanted) and all(
        {k: v for k, v in c.items() if k != "mac" or "mac" in w} == w for c, w in zip(current, wanted, strict=True))


def _live_change_fits(key: str, current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    if key == "memory":
        return int(wanted["memory"]) <= int(current.get("maxmem") or current["memory"])
    if key == "vcpus":
        return int(wanted["vcpus"]) <= int(current.get("maxvcpus") or current["vcpus"])
    if key == "disks":
        return True
    if key == "vifs":
        have, want = current.get("vifs", []), wanted.get("vifs", [])
        shorter = min(len(have), len(want))
        return _same_vifs(have[:shorter], want[:shorter])  # only added or removed at the end
    return True  # xentool's own settings


def _live_steps(xt: Toolstack, name: str, domain: DomainSummary, key: str, current: dict[str, Any],
                wanted: dict[str, Any]) -> list[Step]:
    if key == "memory":
        was, now = current["memory"], wanted["memory"]
        return [Step(f"change live: memory {was} -> {now} MiB", lambda: xt.mem_set(name, now), lambda: xt.mem_set(name, was))]
    if key == "vcpus":
        was, now = current["vcpus"], wanted["vcpus"]
        return [Step(f"change live: vcpus {was} -> {now}", lambda: xt.vcpu_set(name, now), lambda: xt.vcpu_set(name, was))]
    if key == "disks":
        have = {d["vdev"]: d for d in current.get("disks", [])}
        want = {d["vdev"]: d for d in wanted.get("disks", [])}
        steps = [Step(f"change live: detach disk {vdev}", partial(xt.block_detach, name, vdev), partial(xt.block_attach, name, disk))
                 for vdev, disk in have.items() if want.get(vdev) != disk]
        steps += [Step(f"change live: attach disk {vdev} ({disk['target']})", partial(xt.block_attach, name, disk),
                       partial(xt.block_detach, name, vdev, force=True))
                  for vdev, disk in want.items() if have.get(vdev) != disk]
        return steps
    if key == "vifs":
        have, want = current.get("vifs", []), wanted.get("vifs", [])
        steps = [Step(f"change live: detach vif {vif.get('mac', n)}", partial(xt.network_detach, name, vif.get("mac", n)),
                      partial(xt.network_attach, name, vif)) for n, vif in enumerate(have) if n >= len(want)]
        return steps + [_attach_vif(xt, name, vif) for vif in want[len(have):]]
    if key in ("cpus", "cpus_soft"):
        def cpus(config: dict[str, Any]) -> str:
            return ",".join(str(c) for c in config.get(key) or []) or "all"

        hard = key == "cpus"
        was, now = cpus(current), cpus(wanted)
        pin_now = partial(xt.vcpu_pin, name, "all", now, "-") if hard else partial(xt.vcpu_pin, name, "all", "-", now)
        pin_was = partial(xt.vcpu_pin, name, "all", was, "-") if hard else partial(xt.vcpu_pin, name, "all", "-", was)
        return [Step(f"change live: {key} {was} -> {now}", pin_now, pin_was)]
    if key == "pool":
        was, now = current.get("pool") or "Pool-0", wanted.get("pool") or "Pool-0"
        return [Step(f"change live: cpupool {was} -> {now}", partial(xt.cpupool_migrate, name, now),
                     partial(xt.cpupool_migrate, name, was))]
    if key == "sched":
        def share(config: dict[str, Any]) -> tuple[int, int]:
            sched = config.get("sched") or {}
            return (sched.get("weight") or DEFAULT_WEIGHT, sched.get("cap") or 0)

        (old_weight, old_cap), (weight, cap) = share(current), share(wanted)
        return [Step(f"change live: weight {old_weight} -> {weight}, cap {old_cap} -> {cap}",
                     partial(xt.sched_set, name, weight, cap), partial(xt.sched_set, name, old_weight, old_cap))]
    return [Step(f"change live: {key} {current.get(key)} -> {wanted.get(key)}", lambda: None, None)]  # recorded below


def _attach_vif(xt: Toolstack, name: str, vif: dict[str, Any]) -> Step:
    attached: list[str] = []  # its MAC once attached: what the undo detaches

    def attach() -> None:
        attached.append(xt.network_attach(name, vif).details["mac"])

    def detach() -> None:
        for mac in attached:
            xt.network_detach(name, mac, force=True)

    return Step(f"change live: attach vif on {vif.get('bridge', 'the default bridge')}", attach, detach)


def _record(xt: Toolstack, domain: DomainSummary, config: GuestConfig) -> None:
    # The vifs as the record has them now (their MACs), the rest as the file says.
    record = xt.records.load(domain.uuid)
    vifs = record.guest_config().vifs if record is not None else config.vifs
    xt.records.reconfigured(domain.uuid, config.model_copy(update={"vifs": vifs}))


def _record_dict(xt: Toolstack, domain: DomainSummary, data: dict[str, Any]) -> None:
    xt.records.reconfigured(domain.uuid, config_from_dict(data, source=f"<record of {domain.name}>"))


def _restore_definition(xt: Toolstack, name: str, old: Definition | None) -> None:
    if old is None:
        xt.definitions.remove(name)
    else:
        xt.definitions.save(old)


def _restart(xt: Toolstack, name: str) -> None:
    try:
        xt.shutdown(name, wait=True, timeout=RESTART_SHUTDOWN_SECONDS)
    except XentoolError:
        pass  # it did not act on the request: destroyed below
    if name in {d.name for d in xt.list_domains()}:
        xt.destroy(name)
    xt.start(name)


def _plan_removal(xt: Toolstack, definition: Definition, domain: DomainSummary | None) -> GuestPlan:
    guest = GuestPlan(definition.name)
    guest.steps.append(Step("remove: undefine (--prune)", lambda: xt.undefine(definition.name),
                            lambda: xt.definitions.save(definition)))
    if domain is not None and domain.uuid == definition.uuid:
        guest.steps.append(Step("remove: destroy (--prune)", lambda: xt.destroy(definition.name), None))
    return guest


def execute(guest: GuestPlan) -> Outcome:
    """Do the guest's steps; on a failure undo the ones done, newest first."""
    done: list[Step] = []
    for step in guest.steps:
        try:
            step.do()
        except XentoolError as e:
            failures = []
            for earlier in reversed(done):
                if earlier.undo is None:
                    failures.append(f"{earlier.says} cannot be undone")
                    continue
                try:
                    earlier.undo()
                except XentoolError as undo_error:
                    failures.append(f"undoing {earlier.says} failed: {undo_error}")
            left = "left as it was" if not failures else f"left half-changed: {'; '.join(failures)}"
            return Outcome(guest.name, False, f"{step.says} failed: {e}; {left}", left_changed=bool(failures))
        done.append(step)
    return Outcome(guest.name, True, "as the files say")


__all__ = ["LIVE_KEYS", "GuestPlan", "Outcome", "Step", "execute", "one_at_a_time", "plan", "plan_guest", "read_files"]
