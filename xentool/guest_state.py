"""One guest brought to a named state: what Ansible's ``xentool_guest`` module asks of a host.

The states, as Ansible users know them from other virtualisation modules:

- ``present``: defined as the config says (a running guest also takes, live, what it can take, as
  `xentool apply` does; one that does not run is not started);
- ``running``: defined and running as the config says (`xentool apply` for one guest);
- ``stopped``: defined, and not running (asked to power off, and waited for; destroyed only with
  ``force`` when it does not act on the request in time);
- ``absent``: neither defined nor running (whatever runs under the name is destroyed: the name
  is the guest, as with ``apply --prune``).

A plan is made first, with what the guest is and what it will be (Ansible's diff), and done only
when asked (check mode makes the plan and stops).  Its steps are xentool.desired's, so a failure
undoes the steps done before it, and the same call made twice changes nothing the second time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from xentool.api import Toolstack
from xentool.config import GuestConfig
from xentool.desired import GuestPlan, Outcome, Step, execute, plan_guest
from xentool.domains import DomainSummary
from xentool.errors import UsageError, WaitTimeout, XentoolError

STATES = ("present", "running", "stopped", "absent")
SHUTDOWN_SECONDS = 120.0


@dataclass(frozen=True)
class Seen:
    """A guest as a diff shows it: ``absent``, ``stopped`` (defined, not running) or ``running``
    (a domain of that name exists, in whatever Xen state), and its definition's config."""

    state: str
    definition: dict[str, Any] | None

    def to_json(self) -> dict[str, Any]:
        return {"state": self.state, "definition": self.definition}


@dataclass
class StatePlan:
    name: str
    wanted: str  # one of STATES
    before: Seen
    after: Seen
    guest: GuestPlan  # the steps (or why the guest is left alone), from xentool.desired

    @property
    def changes(self) -> list[str]:
        return [step.says for step in self.guest.steps]


class StateError(XentoolError):
    """The guest cannot be brought to the state asked for (another domain holds its name, say)."""


def seen(xt: Toolstack, name: str, domain: DomainSummary | None) -> Seen:
    definition = xt.definitions.load(name)
    state = "running" if domain is not None else "stopped" if definition is not None else "absent"
    return Seen(state, dict(definition.resolved) if definition is not None else None)


def plan_state(xt: Toolstack, wanted: str, config: GuestConfig | None = None, name: str | None = None,
               restart: bool = False, shutdown_timeout: float = SHUTDOWN_SECONDS, force: bool = False) -> StatePlan:
    """What bringing the guest (``config``'s, or ``name`` for ``absent``) to ``wanted`` takes."""
    if wanted not in STATES:
        raise UsageError(f"state {wanted!r}: use one of {', '.join(STATES)}")
    if config is not None and name is not None and name != config.name:
        raise UsageError(f"name {name!r} is not the config's name ({config.name!r}): give one, or make them agree")
    name = config.name if config is not None else name
    if name is None or (config is None and wanted != "absent"):
        raise UsageError(f"state {wanted}: give the guest's config" + ("" if wanted != "absent" else " or its name"))
    domain = next((d for d in xt.list_domains() if d.name == name), None)
    before = seen(xt, name, domain)
    if wanted == "absent":
        return StatePlan(name, wanted, before, Seen("absent", None), _removal(xt, name, domain))
    assert config is not None
    guest = plan_guest(xt, config, domain, restart=restart, start=wanted == "running", live=wanted != "stopped")
    if guest.problem is not None:
        raise StateError(guest.problem)
    if wanted == "stopped" and domain is not None:
        guest.steps.append(Step(f"stop (power off{', destroy if it does not' if force else ''})",
                                lambda: _stop(xt, name, shutdown_timeout, force), None))
    definition = {**config.as_data(), "uuid": "(new)" if guest.uuid_is_new else guest.uuid}
    state = "running" if wanted == "running" or (wanted == "present" and domain is not None) else "stopped"
    return StatePlan(name, wanted, before, Seen(state, definition), guest)


def reach(plan: StatePlan) -> Outcome:
    """Do the plan's steps (a failed step undoes the ones before it: xentool.desired.execute)."""
    return execute(plan.guest)


def _removal(xt: Toolstack, name: str, domain: DomainSummary | None) -> GuestPlan:
    guest = GuestPlan(name)
    definition = xt.definitions.load(name)
    if definition is not None:
        guest.steps.append(Step("undefine", lambda: xt.undefine(name), lambda: xt.definitions.save(definition)))
    if domain is not None:  # last: a destroy cannot be undone
        guest.steps.append(Step(f"destroy (domain {domain.domid})", lambda: xt.destroy(name), None))
    return guest


def _stop(xt: Toolstack, name: str, timeout: float, force: bool) -> None:
    try:
        xt.shutdown(name, wait=True, timeout=timeout)
    except WaitTimeout:
        if not force:
            raise
        xt.destroy(name)
        return
    if any(d.name == name for d in xt.list_domains()):
        # Its on_poweroff kept it (preserve) or started it again (restart): stopped means no domain.
        if not force:
            raise StateError(f"{name} powered off but its on_poweroff action kept it as a domain; "
                             "force: true destroys it, or set on_poweroff: destroy")
        xt.destroy(name)


__all__ = ["STATES", "Seen", "StateError", "StatePlan", "plan_state", "reach", "seen"]
