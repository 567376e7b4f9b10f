"""The plan's contract: typed bindings between operations, and undo of a failed operation's
partial work by the executor, as of the completed ones."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from hypercalls.interface import Hypervisor, XenStore
from xentool.create.executor import execute
from xentool.create.plan import Bindings, BuildPlan, NameGuard, NotProducedYet, Op, Step, XenstoreTransaction
from xentool.devices.nodes import XsNode
from xentool.errors import CreationError


@dataclass(frozen=True)
class HalfDone(Op):
    """Writes a node, then fails: the way an operation that starts a process and then waits for it
    fails (LaunchDeviceModel), with something to undo."""

    path: str

    def describe(self) -> str:
        return f"write {self.path}, then fail"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        xs.write(self.path, "half")
        raise OSError("failed after writing")

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        xs.rm(self.path)


class Refuse(NameGuard):
    def check(self, xs: XenStore, txn: object, bound: Bindings) -> None:
        raise ValueError("refused inside the transaction")


def plan_of(*ops: Op) -> BuildPlan:
    return BuildPlan("test", "00000000-0000-0000-0000-000000000001", (Step("test", ops),))


def test_a_failed_operations_partial_work_is_undone_with_the_completed_ones(xt):
    xs = xt.hv.xenstore()
    done_first = XenstoreTransaction("first", (XsNode("/tool/first", "1"),), cleanup=("/tool/first",))
    with pytest.raises(CreationError) as e:
        execute(plan_of(done_first, HalfDone("/tool/half")), xt.hv)
    assert e.value.leftovers == []
    assert xs.read_or("/tool/half") is None and xs.read_or("/tool/first") is None


def test_a_transaction_that_failed_is_not_undone(xt):
    # It wrote nothing; its cleanup roots may be somebody else's (the name another domain holds).
    xs = xt.hv.xenstore()
    xs.write("/tool/theirs", "kept")
    refused = XenstoreTransaction("refused", (XsNode("/tool/theirs", "ours"),), cleanup=("/tool/theirs",), guard=Refuse())
    with pytest.raises(CreationError):
        execute(plan_of(refused), xt.hv)
    assert xs.read("/tool/theirs") == "kept"


def test_bindings_are_typed_and_say_what_is_read_before_it_is_produced():
    bound = Bindings(name="web", uuid="u")
    with pytest.raises(NotProducedYet, match="domid"):
        _ = bound.domid
    with pytest.raises(KeyError):
        bound.fill("/local/domain/{domid}")
    assert not bound.has("domid")
    bound.domid = 7
    assert bound.has("domid") and bound.fill("/local/domain/{domid}/name = {name}") == "/local/domain/7/name = web"
    with pytest.raises(TypeError, match="dmid"):
        Bindings(dmid=3)  # a misspelt binding
