"""The empty domain, its memory cap and vcpu pinning (libxl__domain_make, libxl__build_pre)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from hypercalls.interface import DomainCreateSpec, Hypervisor, XenStore
from xentool.config import GuestConfig
from xentool.console.service import DYING_TIMEOUT
from xentool.cpupools import find_pool
from xentool.create.plan import Bindings, Op, Step
from xentool.domains import MAXMEM_SLACK_KIB, wait_until
from xentool.errors import WaitTimeout


@dataclass(frozen=True)
class CreateDomain(Op):
    spec: DomainCreateSpec
    pool: str | None = None  # a cpupool's name, found when the domain is made

    def describe(self) -> str:
        s = self.spec
        pool = f", cpupool {self.pool}" if self.pool else ""
        return f"xc_domain_create(uuid={s.uuid}, type={s.guest_type.value}, max_vcpus={s.max_vcpus}{pool}) -> {{domid}}"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        spec = self.spec
        if self.pool is not None:
            spec = replace(spec, cpupool=find_pool(hv, self.pool).poolid)
        bound.domid = hv.domain_create(spec)

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if not bound.has("domid"):
            return
        domid = bound.domid
        hv.domain_destroy(domid)
        # Once the domain is gone, whatever a dom0 daemon wrote under /local/domain/N meanwhile
        # goes too (xenconsoled did, in the lab: xentool.devices.console.CONSOLE_RING_NODES).
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
        hv.domain_setmaxmem(bound.domid, self.max_kib)


@dataclass(frozen=True)
class PinVcpu(Op):
    vcpu: int
    cpus: frozenset[int] | None  # hard affinity; None: left as Xen made it (every CPU)
    soft: frozenset[int] | None = None

    def describe(self) -> str:
        hard = f"hard {sorted(self.cpus)}" if self.cpus is not None else "hard unchanged"
        soft = f", soft {sorted(self.soft)}" if self.soft is not None else ""
        return f"xc_vcpu_setaffinity({{domid}}, vcpu {self.vcpu}, {hard}{soft})"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        hv.vcpu_setaffinity(bound.domid, self.vcpu, self.cpus, self.soft)


@dataclass(frozen=True)
class SetScheduling(Op):
    weight: int | None
    cap: int | None

    def describe(self) -> str:
        return f"xc_sched_credit2_domain_set({{domid}}, weight {self.weight}, cap {self.cap}) (or credit's)"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        hv.sched_set(bound.domid, self.weight, self.cap)


def plan_domain(config: GuestConfig, uuid: str) -> Step:
    ops: list[Op] = [
        CreateDomain(DomainCreateSpec(uuid=uuid, guest_type=config.type, max_vcpus=config.max_vcpus,
                                      hap=config.hap is not False), config.pool),
        SetMaxMem(config.maxmem_kib + MAXMEM_SLACK_KIB),
    ]
    if config.cpus or config.cpus_soft:
        # xl's "cpus" and "cpus_soft" are one mask each, applied to every vcpu before the build.
        hard = frozenset(config.cpus) if config.cpus else None
        soft = frozenset(config.cpus_soft) if config.cpus_soft else None
        ops += [PinVcpu(vcpu, hard, soft) for vcpu in range(config.max_vcpus)]
    if config.sched and (config.sched.weight is not None or config.sched.cap is not None):
        ops.append(SetScheduling(config.sched.weight, config.sched.cap))
    return Step("create domain", tuple(ops))
