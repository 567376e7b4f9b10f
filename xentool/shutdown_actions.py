"""What happens once a guest has gone down: its config's on_poweroff, on_reboot, on_crash and
on_watchdog (xl's handle_domain_death).

Two parties may see a guest go down at the same moment: the supervisor (xentool.supervisor), and a
command that asked for it and waited (`shutdown -w`, `reboot`).  Whoever gets the record's lock
first acts; the other then finds the domain gone, or no longer shut down, and does nothing.

- destroy: the domain and its record go.
- restart: the domain is destroyed and built again from the record's config, with the same uuid.
  A guest that keeps going down (a crash at boot) is restarted at most ``restart_tries`` times in
  ``restart_window`` seconds; then it is destroyed, and `xentool info NAME` says why.
- rename-restart: the domain stays as it is under the name NAME--DOMID (for inspection), and a new
  one is built from the same config under the old name, with a new uuid (two domains with one uuid
  would be ambiguous to every tool).
- preserve: the domain stays shut down until somebody destroys it.
- coredump-destroy, coredump-restart: first its memory goes to /var/lib/xentool/dump/NAME-UUID-TIME.core
  (xc_domain_dumpcore, an ELF core that `crash` or gdb read), then destroy or restart.

Domains without a record (xl's) are left to their own toolstack by the supervisor; a command that
asks xentool to handle one uses xl's defaults: restart on reboot, destroy otherwise.
"""

from __future__ import annotations

import time
import uuid as uuid_module
from pathlib import Path

from hypercalls.errors import XenError
from hypercalls.interface import DomainInfo, Hypervisor, ShutdownReason
from xentool import lifecycle, obituaries
from xentool.config import GuestConfig
from xentool.config.model import Action
from xentool.create import create_guest
from xentool.domains import DOMAIN_GONE, DomainSummary, state_of
from xentool.errors import DomainOperationError
from xentool.records import DomainRecord, RecordStore

CORE_DIR_NAME = "dump"  # beside the records: /var/lib/xentool/dump on a real host


def action_for(config: GuestConfig | None, reason: ShutdownReason) -> Action:
    if config is None:
        return Action.RESTART if reason == ShutdownReason.REBOOT else Action.DESTROY
    return {
        ShutdownReason.POWEROFF: config.on_poweroff,
        ShutdownReason.REBOOT: config.on_reboot,
        ShutdownReason.CRASH: config.on_crash,
        ShutdownReason.WATCHDOG: config.on_watchdog,
    }.get(reason, Action.DESTROY)


def apply_shutdown_action(hv: Hypervisor, records: RecordStore, domain: DomainSummary) -> str:
    """Act on ``domain`` if it is (still) shut down; returns its state afterwards ("gone",
    "running" for a restarted guest, "shutdown" for a preserved one)."""
    with records.lock(domain.uuid):
        info = state_of(hv, domain.domid)
        if info is None or info.uuid != domain.uuid:
            return DOMAIN_GONE
        if not info.shutdown or info.dying:
            return info.state.value  # not down, or somebody acted on it already
        if info.shutdown_reason == ShutdownReason.SUSPEND:
            return info.state.value  # being saved (xentool.saving): the save decides what comes next
        return _act(hv, records, domain, info)


def _act(hv: Hypervisor, records: RecordStore, domain: DomainSummary, info: DomainInfo) -> str:
    reason = info.shutdown_reason or ShutdownReason.POWEROFF
    record = records.load(domain.uuid)
    config = record.guest_config() if record else None
    action = action_for(config, reason)
    if action == Action.PRESERVE:
        return info.state.value
    if action in (Action.COREDUMP_DESTROY, Action.COREDUMP_RESTART):
        dump_core(hv, records, domain)
        action = Action.RESTART if action == Action.COREDUMP_RESTART else Action.DESTROY
    if record is not None and config is not None:
        if action == Action.RESTART:
            return _restart(hv, records, domain, record, config, reason)
        if action == Action.RENAME_RESTART:
            return _rename_restart(hv, records, domain, config)
    lifecycle.destroy(hv, domain.domid)
    records.remove(domain.uuid)
    return DOMAIN_GONE


def _restart(hv: Hypervisor, records: RecordStore, domain: DomainSummary, record: DomainRecord, config: GuestConfig,
             reason: ShutdownReason) -> str:
    now = time.time()
    recent = tuple(t for t in record.restarts if now - t < config.restart_window)
    if len(recent) >= config.restart_tries:
        why = (f"it went down ({reason.name.lower()}) again after {len(recent)} restarts within "
               f"{config.restart_window} s (restart_tries {config.restart_tries}), so xentool stopped restarting it; "
               "look at its console log (xentool console --log) and create it again once it is fixed")
        lifecycle.destroy(hv, domain.domid)
        records.remove(domain.uuid)
        if hv.needs_console_backend:  # the notes are the real host's; the simulator has its own state
            obituaries.record(domain.uuid, domain.name, domain.domid, why)
        return DOMAIN_GONE
    lifecycle.destroy(hv, domain.domid)
    return create_guest(hv, records, config, domain.uuid, restarts=recent + (now,)).state


def _rename_restart(hv: Hypervisor, records: RecordStore, domain: DomainSummary, config: GuestConfig) -> str:
    kept_as = f"{domain.name}--{domain.domid}"
    lifecycle.rename(hv, domain.domid, kept_as)
    records.renamed(domain.uuid, kept_as)
    return create_guest(hv, records, config, str(uuid_module.uuid4())).state


def dump_core(hv: Hypervisor, records: RecordStore, domain: DomainSummary) -> Path:
    core_dir = records.directory.parent / CORE_DIR_NAME
    core_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # a guest's memory: root's eyes only
    path = core_dir / f"{domain.name}-{domain.uuid}-{time.strftime('%Y%m%d-%H%M%S')}.core"
    try:
        hv.domain_dumpcore(domain.domid, str(path))
    except XenError as e:
        path.unlink(missing_ok=True)
        raise DomainOperationError("core dump", domain.name, e) from e
    path.chmod(0o600)
    return path
