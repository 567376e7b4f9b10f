"""The build plan: the hypercalls and xenstore writes that creating a domain makes, as data.

Each step of creation (``xentool.create.*``, one module a step) contributes a :class:`Step` of
:class:`Op` objects.  The same objects are printed by ``create --dry-run`` and executed by
:mod:`xentool.create.executor`, so what the plan shows is what the real run does.  Values that
exist only once the run is under way (the domid, event channel ports, ring frame numbers) appear as
``{domid}``-style placeholders, filled from :class:`Bindings` as earlier operations produce them.

The contract of an operation: its description says what it changes; its ``undo`` reverses that,
also after an ``apply`` that failed halfway (the executor undoes the failed operation with the
completed ones), so an undo checks what was produced before it removes it.  An operation that does
not apply to the hypervisor at hand is left out of the plan (:class:`HostFeatures`), never skipped
inside ``apply``.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

from hypercalls.interface import Hypervisor, XenStore, XsPermission, retry_transaction
from xentool.bootloader import BootFiles
from xentool.devices.nodes import GUEST, XsNode, perm_text

T = TypeVar("T")


class NotProducedYet(AttributeError):
    """An operation read a binding that no earlier operation produced: the plan's order is wrong."""


class Produced(Generic[T]):
    """A binding that one operation produces and later ones read; reading it before it was
    produced raises :class:`NotProducedYet` (a plan in the wrong order), and ``bound.has(name)``
    tells an undo whether there is anything to undo."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type) -> Produced[T]: ...
    @overload
    def __get__(self, instance: object, owner: type) -> T: ...
    def __get__(self, instance: object | None, owner: type) -> T | Produced[T]:
        if instance is None:
            return self
        try:
            value: T = instance.__dict__[self.name]
        except KeyError:
            raise NotProducedYet(f"{self.name} is read before an operation produced it") from None
        return value

    def __set__(self, instance: object, value: T) -> None:
        instance.__dict__[self.name] = value


class Bindings:
    """What operations produce for later ones: the domain, its ports and frames, its device model.
    Placeholders in the plan's text (``{domid}``) are these names."""

    domid = Produced[int]()
    store_port = Produced[int]()  # the event channel xenstored binds
    console_port = Produced[int]()  # the one the console backend binds
    store_mfn = Produced[int]()  # the builder's xenstore ring frame
    console_mfn = Produced[int]()  # and console ring frame
    start_time = Produced[str]()  # /vm/UUID/start_time, libxl's "%jd.%02d"
    dm_pid = Produced[int]()  # QEMU: an HVM guest's device model, or a PV guest's qdisk backend
    dm_restricted = Produced[bool]()  # whether that QEMU runs deprivileged (dm_restrict)
    vnc_display = Produced["int | None"]()  # None: VNC off
    serial_socket = Produced["str | None"]()  # QEMU's serial port for xentool's console, if it has it
    console_pid = Produced[int]()  # the console backend process
    boot_files = Produced[BootFiles]()  # what pygrub extracted from the guest's disk

    def __init__(self, name: str = "", uuid: str = "", **produced: Any) -> None:
        self.name = name
        self.uuid = uuid
        for key, value in produced.items():
            if not isinstance(getattr(type(self), key, None), Produced):
                raise TypeError(f"Bindings has no binding {key!r}")
            setattr(self, key, value)

    def has(self, name: str) -> bool:
        return name in self.__dict__

    def fill(self, text: str) -> str:
        """``text`` with its placeholders replaced; KeyError names one not produced yet."""
        return text.format_map({k: v for k, v in vars(self).items()})


@dataclass(frozen=True)
class HostFeatures:
    """What the hypervisor backend has, which decides the operations a plan holds: real Xen all of
    it; the simulator runs no device model, has no kernel backends and serves consoles itself."""

    runs_device_models: bool = True
    has_kernel_backends: bool = True
    needs_console_backend: bool = True

    @classmethod
    def of(cls, hv: Hypervisor) -> HostFeatures:
        return cls(hv.runs_device_models, hv.has_kernel_backends, hv.needs_console_backend)


REAL_XEN = HostFeatures()


class Op(abc.ABC):
    """One hypercall or xenstore operation of the plan, with its undo."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for --dry-run, placeholders left as they are."""

    @abc.abstractmethod
    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None: ...

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:  # noqa: B027 - a default, not a gap
        """Reverse :meth:`apply`, also a partial one; operations whose work destroying the domain
        undoes anyway (a memory cap, a pinning) do nothing."""

    def undo_failed(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        """Reverse what a failed :meth:`apply` did before it failed: :meth:`undo` unless the
        operation is all or nothing."""
        self.undo(hv, xs, bound)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"op": type(self).__name__}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]  # every Op is a dataclass
            data[f.name] = _jsonable(getattr(self, f.name))
        return data


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (frozenset, set)):
        return sorted(_jsonable(v) for v in value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (int, str, float, bool)) or value is None:
        return value
    return str(value)


class NameGuard(abc.ABC):
    """A check made inside the xenstore transaction (so that two creates of one name cannot both win)."""

    @abc.abstractmethod
    def check(self, xs: XenStore, txn: object, bound: Bindings) -> None: ...


def fill_perms(permissions: tuple[XsPermission, ...], domid: int) -> tuple[XsPermission, ...]:
    return tuple(XsPermission(domid if p.domid == GUEST else p.domid, p.perm) for p in permissions)


def write_nodes(xs: XenStore, nodes: tuple[XsNode, ...], bound: Bindings, txn: object) -> None:
    """The nodes, their placeholders filled, with their permissions, inside ``txn``."""
    for node in nodes:
        path = bound.fill(node.path)
        if node.value is None:
            xs.mkdir(path, txn)
        else:
            xs.write(path, bound.fill(node.value), txn)
        if node.permissions is not None:
            xs.set_perms(path, fill_perms(node.permissions, bound.domid), txn)


@dataclass(frozen=True)
class XenstoreTransaction(Op):
    """Write ``nodes`` in one transaction, retried on conflict as libxl does.

    ``cleanup`` lists the subtrees that undoing removes (the roots this transaction created).  A
    transaction that failed wrote nothing, so it has nothing to undo.
    """

    title: str
    nodes: tuple[XsNode, ...]
    cleanup: tuple[str, ...] = ()
    guard: NameGuard | None = field(default=None, compare=False)

    def describe(self) -> str:
        lines = [f"xenstore transaction: {self.title}"]
        lines += [f"    {n.describe()}" for n in self.nodes]
        return "\n".join(lines)

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        def body(txn: object) -> None:
            if self.guard is not None:
                self.guard.check(xs, txn, bound)
            write_nodes(xs, self.nodes, bound, txn)

        retry_transaction(xs, body)

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        for path in self.cleanup:
            xs.rm_with_empty_parents(bound.fill(path))

    def undo_failed(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        pass  # nothing was committed (the cleanup roots may be another domain's: a name it holds)

    def to_json(self) -> dict[str, Any]:
        return {
            "op": "XenstoreTransaction",
            "title": self.title,
            "nodes": [
                {
                    "path": n.path,
                    "value": n.value,
                    "perms": None if n.permissions is None else [perm_text(p) for p in n.permissions],
                }
                for n in self.nodes
            ],
        }


@dataclass(frozen=True)
class Step:
    """One named step of creation: its operations run in order and are undone in reverse."""

    name: str
    ops: tuple[Op, ...]


@dataclass(frozen=True)
class BuildPlan:
    name: str
    uuid: str
    steps: tuple[Step, ...]

    def describe(self) -> str:
        lines = [f"plan for domain {self.name!r} (uuid {self.uuid}):"]
        for number, step in enumerate(self.steps, 1):
            lines.append(f"{number}. {step.name}")
            for op in step.ops:
                lines += [f"   {line}" for line in op.describe().splitlines()]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "uuid": self.uuid,
            "steps": [{"name": s.name, "ops": [op.to_json() for op in s.ops]} for s in self.steps],
        }
