"""Running a build plan: each operation in order; on a failure, every completed one undone in reverse.

A failure at any step leaves nothing behind: no domain, no xenstore node, no event channel, no memory.
Undo is best effort (one undo failing must not stop the others) and what could not be undone is
attached to the raised error so the user is told, never left guessing.
"""

from __future__ import annotations

import logging

from hypercalls.interface import Hypervisor
from xentool.create.plan import Bindings, BuildPlan, Op
from xentool.errors import CreationError, XentoolError

log = logging.getLogger(__name__)


class FailedUndo(XentoolError):
    def __init__(self, op: Op, cause: BaseException) -> None:
        self.op = op
        self.__cause__ = cause
        super().__init__(f"could not undo {op.describe().splitlines()[0]}: {cause}")


def execute(plan: BuildPlan, hv: Hypervisor) -> Bindings:
    """Run ``plan``; return the bindings (domid, ports, frames).  Raises :class:`CreationError`."""
    xs = hv.xenstore()
    bound = Bindings(name=plan.name, uuid=plan.uuid)
    done: list[Op] = []
    for step in plan.steps:
        for op in step.ops:
            try:
                op.apply(hv, xs, bound)
            except Exception as cause:
                leftovers = _undo(done, hv, bound)
                raise CreationError(plan.name, step.name, cause, [str(f) for f in leftovers]) from cause
            done.append(op)
    return bound


def _undo(done: list[Op], hv: Hypervisor, bound: Bindings) -> list[FailedUndo]:
    xs = hv.xenstore()
    failures: list[FailedUndo] = []
    for op in reversed(done):
        try:
            op.undo(hv, xs, bound)
        except Exception as cause:  # keep undoing the rest; report all of it
            log.warning("undo failed: %s", cause)
            failures.append(FailedUndo(op, cause))
    return failures
