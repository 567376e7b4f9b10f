"""The build plan: the hypercalls and xenstore writes that creating a domain makes, as data.

Each step of creation (``xentool.create.*``) contributes a :class:`Step` of :class:`Op` objects.  The
same objects are printed by ``create --dry-run`` and executed by :mod:`xentool.create.executor`, so
what the plan shows is what the real run does.  Values that exist only once the run is under way
(the domid, event channel ports, ring frame numbers) appear as ``{domid}``-style placeholders, filled
from :class:`Bindings` as earlier operations produce them.
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from dataclasses import dataclass, field
from typing import Any

from hypercalls.interface import (
    BuildSpec,
    DomainCreateSpec,
    Hypervisor,
    XenStore,
    XsPermission,
    retry_transaction,
)


#: Stands for the new domain's id in permission lists, which are built before the domid exists.
GUEST = -1


class Bindings(dict[str, Any]):
    """Names produced by operations (domid, store_port, ...) and used by later ones."""

    def fill(self, text: str) -> str:
        return text.format_map(self)


def _format_perms(permissions: tuple[XsPermission, ...] | None) -> str:
    if permissions is None:
        return ""
    return " [" + ",".join(_perm_text(p) for p in permissions) + "]"


def _perm_text(p: XsPermission) -> str:
    return f"{p.perm.value}{{domid}}" if p.domid == GUEST else f"{p.perm.value}{p.domid}"


class Op(abc.ABC):
    """One hypercall or xenstore operation of the plan, with its undo."""

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for --dry-run, placeholders left as they are."""

    @abc.abstractmethod
    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None: ...

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        """Reverse :meth:`apply`; operations that destroying the domain undoes anyway do nothing."""

    def to_json(self) -> dict[str, Any]:
        data = {"op": type(self).__name__}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
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


@dataclass(frozen=True)
class CreateDomain(Op):
    spec: DomainCreateSpec

    def describe(self) -> str:
        s = self.spec
        return f"xc_domain_create(uuid={s.uuid}, type={s.guest_type.value}, max_vcpus={s.max_vcpus}) -> {{domid}}"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        bound["domid"] = hv.domain_create(self.spec)

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        from xentool.console.service import DYING_TIMEOUT
        from xentool.errors import WaitTimeout
        from xentool.lifecycle import wait_until  # only a failed create needs it

        domid = bound["domid"]
        hv.domain_destroy(domid)
        # Once the domain is gone, whatever a dom0 daemon wrote under /local/domain/N meanwhile
        # goes too (xenconsoled did, in the lab: xentool.create.devices.CONSOLE_RING_NODES).
        try:
            wait_until(hv, domid, lambda info: info is None, f"domain {domid} to be gone", DYING_TIMEOUT)
        except WaitTimeout:
            return
        xs.rm(f"/local/domain/{domid}")


@dataclass(frozen=True)
class SetMaxMem(Op):
    max_kib: int

    def describe(self) -> str:
        return f"xc_domain_setmaxmem({{domid}}, {self.max_kib} KiB)"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        hv.domain_setmaxmem(bound["domid"], self.max_kib)


@dataclass(frozen=True)
class PinVcpu(Op):
    vcpu: int
    cpus: frozenset[int]

    def describe(self) -> str:
        return f"xc_vcpu_setaffinity({{domid}}, vcpu {self.vcpu}, cpus {sorted(self.cpus)})"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        hv.vcpu_setaffinity(bound["domid"], self.vcpu, self.cpus)


@dataclass(frozen=True)
class AllocUnboundEvtchn(Op):
    """A port in the new domain for a dom0 service (xenstored, the console backend) to bind."""

    bind_as: str  # "store_port" or "console_port"
    remote_domid: int = 0

    def describe(self) -> str:
        return f"xc_evtchn_alloc_unbound({{domid}}, remote={self.remote_domid}) -> {{{self.bind_as}}}"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        bound[self.bind_as] = hv.evtchn_alloc_unbound(bound["domid"], self.remote_domid)

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        hv.evtchn_close(bound["domid"], bound[self.bind_as])


@dataclass(frozen=True)
class BuildDomain(Op):
    """The domain builder; the spec's event channels are filled from the bindings."""

    spec: BuildSpec

    def describe(self) -> str:
        s = self.spec
        image = s.kernel if s.kernel else s.firmware
        extra = f", ramdisk={s.ramdisk}" if s.ramdisk else ""
        return (
            f"build {s.guest_type.value}({{domid}}, image={image}{extra}, memory={s.memory_kib} KiB, "
            f"vcpus={s.vcpus}, store evtchn {{store_port}}, console evtchn {{console_port}})"
            " -> {store_mfn}, {console_mfn}"
        )

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        spec = dataclasses.replace(self.spec, store_evtchn=bound["store_port"], console_evtchn=bound["console_port"])
        result = hv.domain_build(bound["domid"], spec)
        bound["store_mfn"] = result.store_mfn
        bound["console_mfn"] = result.console_mfn


@dataclass(frozen=True)
class XsNode:
    path: str
    value: str | None = None  # None: a directory node (mkdir), "" is an empty value
    permissions: tuple[XsPermission, ...] | None = None

    def describe(self) -> str:
        value = "(dir)" if self.value is None else repr(self.value)
        return f"{self.path} = {value}{_format_perms(self.permissions)}"


class NameGuard(abc.ABC):
    """A check made inside the xenstore transaction (so that two creates of one name cannot both win)."""

    @abc.abstractmethod
    def check(self, xs: XenStore, txn: object, bound: Bindings) -> None: ...


@dataclass(frozen=True)
class XenstoreTransaction(Op):
    """Write ``nodes`` in one transaction, retried on conflict as libxl does.

    ``cleanup`` lists the subtrees that undoing removes (the roots this transaction created).
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
            for node in self.nodes:
                path = bound.fill(node.path)
                if node.value is None:
                    xs.mkdir(path, txn)
                else:
                    xs.write(path, bound.fill(node.value), txn)
                if node.permissions is not None:
                    xs.set_perms(path, _fill_perms(node.permissions, bound), txn)

        retry_transaction(xs, body)

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        for path in self.cleanup:
            xs.rm_with_empty_parents(bound.fill(path))

    def to_json(self) -> dict[str, Any]:
        return {
            "op": "XenstoreTransaction",
            "title": self.title,
            "nodes": [
                {
                    "path": n.path,
                    "value": n.value,
                    "perms": None if n.permissions is None else [_perm_text(p) for p in n.permissions],
                }
                for n in self.nodes
            ],
        }


def _fill_perms(permissions: tuple[XsPermission, ...], bound: Bindings) -> tuple[XsPermission, ...]:
    return tuple(XsPermission(bound["domid"] if p.domid == GUEST else p.domid, p.perm) for p in permissions)


@dataclass(frozen=True)
class IntroduceDomain(Op):
    def describe(self) -> str:
        return "xs_introduce_domain({domid}, {store_mfn}, {store_port})"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        xs.introduce_domain(bound["domid"], bound["store_mfn"], bound["store_port"])

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        xs.release_domain(bound["domid"])


@dataclass(frozen=True)
class UnpauseDomain(Op):
    def describe(self) -> str:
        return "xc_domain_unpause({domid})"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        hv.domain_unpause(bound["domid"])


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
