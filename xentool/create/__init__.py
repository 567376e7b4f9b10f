"""Creating a domain: the steps in order, each in its own module with its operations.

    create domain -> xenstore skeleton -> bootloader (pygrub) -> build -> xenstore layout -> device model launch (HVM)
    -> devices -> console -> device model ready (HVM) or qdisk backend (PV, PVH, if it has qdisks)
    -> unpause

An HVM guest's QEMU is started as soon as the domain is built and waited for only after the
devices and the console are set up: it takes seconds to get ready, and those steps fit in them.
A restored (or migrated) HVM guest's QEMU starts before the build, whose memory copy takes longer
than QEMU's start, and loads its device state once the memory is in (device model state).

:func:`plan_creation` turns a validated :class:`GuestConfig` into a :class:`BuildPlan` (what
``--dry-run`` prints); :func:`create_guest` checks the config against the host
(:mod:`xentool.create.preflight`), runs the plan (:func:`xentool.create.executor.execute`, which
undoes every operation if one fails) and records the guest.
"""

from __future__ import annotations

import time

from hypercalls.interface import Hypervisor
from xentool import obituaries
from xentool.config import GuestConfig
from xentool.create.bootloader import plan_bootloader
from xentool.create.build import RestoreSource, SaveFileSource, plan_build
from xentool.create.console import plan_console
from xentool.create.device_model_launch import plan_device_model_launch
from xentool.create.device_model_ready import plan_device_model_ready
from xentool.create.device_model_state import plan_device_model_state
from xentool.create.devices import plan_devices
from xentool.create.domain import plan_domain
from xentool.create.executor import OpTiming, execute
from xentool.create.plan import REAL_XEN, BuildPlan, HostFeatures, Step
from xentool.create.preflight import preflight
from xentool.create.pv_backend import plan_pv_backend
from xentool.create.skeleton import plan_domain_skeleton
from xentool.create.unpause import plan_unpause
from xentool.create.xenstore_layout import plan_xenstore_layout
from xentool.domains import DomainSummary, summarize
from xentool.records import RecordStore


def plan_creation(config: GuestConfig, uuid: str, paused: bool = False, restore: RestoreSource | None = None,
                  host: HostFeatures = REAL_XEN) -> BuildPlan:
    """``restore``: the guest's memory comes from a save file's or a migration's stream instead of the builder.
    ``host``: what the hypervisor has; the steps it lacks are left out (the simulator's)."""
    launch = plan_device_model_launch(config, uuid, restore is not None) if host.runs_device_models else None
    load_state = plan_device_model_state(config, uuid, restore) if host.runs_device_models and restore is not None else None
    steps: list[Step | None] = [
        plan_domain(config, uuid),
        plan_domain_skeleton(config),
        plan_bootloader(config) if restore is None else None,  # a restored guest's kernel is in its memory
        launch if restore is not None else None,  # while the memory arrives
        plan_build(config, restore=restore),
        plan_xenstore_layout(config),
        load_state if restore is not None else launch,
        plan_devices(config, uuid, host),
        plan_console(config.name, uuid, restore) if host.needs_console_backend else None,
        plan_device_model_ready(config, uuid, paused) if host.runs_device_models else None,
        plan_pv_backend(config, uuid) if host.runs_device_models else None,
        None if paused else plan_unpause(),
    ]
    return BuildPlan(name=config.name, uuid=uuid, steps=tuple(step for step in steps if step is not None))


def create_guest(hv: Hypervisor, records: RecordStore, config: GuestConfig, uuid: str, paused: bool = False,
                 restarts: tuple[float, ...] = (), restore: RestoreSource | None = None,
                 timings: list[OpTiming] | None = None) -> DomainSummary:
    """Check, build and record one guest; the creation behind `create`, `restore` and the
    supervisor's restarts.  ``restarts``: when it was restarted lately (its restart-loop limit)."""
    started = time.monotonic()
    preflight(hv, config)
    if timings is not None:
        timings.append(OpTiming("preflight", "check the config against this host", time.monotonic() - started))
    bound = execute(plan_creation(config, uuid, paused, restore, HostFeatures.of(hv)), hv, timings)
    if hv.runs_device_models:
        obituaries.forget(uuid)
    records.save(config, uuid, bound.domid, restarts)
    return summarize(hv, hv.domain_getinfo(bound.domid))


__all__ = ["BuildPlan", "HostFeatures", "OpTiming", "RestoreSource", "SaveFileSource", "create_guest", "plan_creation"]
