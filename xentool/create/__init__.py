"""Creating a domain: the steps in order, each in its own module.

    create domain -> build -> xenstore layout -> devices -> device model (HVM) -> console backend
    -> unpause

:func:`plan_creation` turns a validated :class:`GuestConfig` into a :class:`BuildPlan` (what
``--dry-run`` prints); :func:`xentool.create.executor.execute` runs it, undoing every completed
operation if one fails.
"""

from __future__ import annotations

from xentool.config import GuestConfig
from xentool.create.build import RestoreSource, plan_build
from xentool.create.console import plan_console
from xentool.create.device_model import plan_device_model
from xentool.create.devices import plan_devices
from xentool.create.domain import plan_domain
from xentool.create.plan import BuildPlan
from xentool.create.unpause import plan_unpause
from xentool.create.xenstore_layout import plan_xenstore_layout


def plan_creation(config: GuestConfig, uuid: str, paused: bool = False, restore: RestoreSource | None = None) -> BuildPlan:
    """``restore``: the guest's memory comes from a save file's stream instead of the builder."""
    steps = [
        plan_domain(config, uuid),
        plan_build(config, restore=restore),
        plan_xenstore_layout(config),
        plan_devices(config, uuid),
        plan_device_model(config, uuid, restore, paused),
        plan_console(config.name, uuid),
    ]
    if not paused:
        steps.append(plan_unpause())
    return BuildPlan(name=config.name, uuid=uuid, steps=tuple(step for step in steps if step is not None))


__all__ = ["BuildPlan", "RestoreSource", "plan_creation"]
