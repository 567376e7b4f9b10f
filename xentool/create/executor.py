"""Running a build plan: each operation in order; on a failure, every completed one undone in reverse.

A failure at any step leaves nothing behind: no domain, no xenstore node, no event channel, no memory.
Undo is best effort (one undo failing must not stop the others) and what could not be undone is
attached to the raised error so the user is told, never left guessing.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from hypercalls.interface import Hypervisor
from xentool.create.plan import Bindings, BuildPlan, Op
from xentool.errors import CreationError, XentoolError

log = logging.getLogger(__name__)


class FailedUndo(XentoolError):
    def __init__(self, op: Op, cause: BaseException) -> None:
        self.op = op
        self.__cause__ = cause
        super().__init__(f"could not undo {op.describe().splitlines()[0]}: {cause}")


@dataclass(frozen=True)
class OpTiming:
    """How long one operation took (`create --timings`): where a create's time goes."""

    step: str
    op: str  # the first line of its description, with the domid filled in
    seconds: float


def execute(plan: BuildPlan, hv: Hypervisor, timings: list[OpTiming] | None = None) -> Bindings:
    """Run ``plan``; return the bindings (domid, ports, frames).  Raises :class:`CreationError`.
    Each completed operation's time is appended to ``timings`` if given."""
    xs = hv.xenstore()
    bound = Bindings(name=plan.name, uuid=plan.uuid)
    done: list[Op] = []
    for step in plan.steps:
        for op in step.ops:
            started = time.monotonic()
            try:
                op.apply(hv, xs, bound)
            except BaseException as cause:
                leftovers = _undo(op, done, hv, bound)
                if not isinstance(cause, Exception):
                    raise  # KeyboardInterrupt, SystemExit: undone, and passed on as they are
                raise CreationError(plan.name, step.name, cause, [str(f) for f in leftovers]) from cause
            done.append(op)
            if timings is not None:
                timings.append(OpTiming(step.name, _first_line(op, bound), time.monotonic() - started))
    return bound


def _first_line(op: Op, bound: Bindings) -> str:
    line = op.describe().splitlines()[0]
    try:
        return bound.fill(line)
    except (KeyError, ValueError, IndexError):  # a placeholder no operation bound (or literal braces)
        return line


def _undo(failed: Op, done: list[Op], hv: Hypervisor, bound: Bindings) -> list[FailedUndo]:
    """The failed operation's partial work first (a QEMU it started), then the completed ones in
    reverse; one undo failing does not stop the others, and all failures are reported."""
    xs = hv.xenstore()
    undos = [(failed, failed.undo_failed)] + [(op, op.undo) for op in reversed(done)]
    failures: list[FailedUndo] = []
    for op, undo in undos:
        try:
            undo(hv, xs, bound)
        except Exception as cause:  # noqa: BLE001 - reported with the creation's own error
            log.warning("undo failed: %s", cause)
            failures.append(FailedUndo(op, cause))
    return failures
