"""Creating a domain: the steps in order, each in its own module.

    create domain -> xenstore skeleton -> build -> xenstore layout -> device model launch (HVM) -> devices
    -> console backend -> device model ready (HVM; a PV guest's qdisk QEMU) -> unpause

An HVM guest's QEMU is started as soon as the domain is built and waited for only after the
devices and the console are set up: it takes seconds to get ready, and those steps fit in them.

:func:`plan_creation` turns a validated :class:`GuestConfig` into a :class:`BuildPlan` (what
``--dry-run`` prints); :func:`xentool.create.executor.execute` runs it, undoing every completed
operation if one fails.
"""

from __future__ import annotations

from xentool.config import GuestConfig
from xentool.create.build import RestoreSource, plan_build
from xentool.create.console import plan_console
from xentool.create.device_model import plan_device_model, plan_device_model_launch
from xentool.create.devices import plan_devices
from xentool.create.domain import plan_domain
from xentool.create.plan import BuildPlan
from xentool.create.unpause import plan_unpause
from xentool.create.xenstore_layout import plan_domain_skeleton, plan_xenstore_layout


def plan_creation(config: GuestConfig, uuid: str, paused: bool = False, restore: RestoreSource | None = None) -> BuildPlan:
    """``restore``: the guest's memory comes from a save file's stream instead of the builder."""
    steps = [
        plan_domain(config, uuid),
        plan_domain_skeleton(config),
        plan_build(config, restore=restore),
        plan_xenstore_layout(config),
        plan_device_model_launch(config, uuid, restore),
        plan_devices(config, uuid),
        plan_console(config.name, uuid),
        plan_device_model(config, uuid, paused),
    ]
    if not paused:
        steps.append(plan_unpause())
    return BuildPlan(name=config.name, uuid=uuid, steps=tuple(step for step in steps if step is not None))


__all__ = ["BuildPlan", "RestoreSource", "plan_creation"]
