"""CPU pools, as `xl cpupool-*` keeps them: Xen's pools (a set of CPUs and the scheduler that runs
them; a domain is in exactly one) with the names the toolstack gives them in xenstore
(/local/pool/ID/name, which libxl writes and xl reads; Pool-0, made by Xen at boot, has none
until a toolstack writes it).

A CPU is in one pool or free: to give a pool a CPU of Pool-0, take it out first
(`cpupool-cpu-remove Pool-0 1`, then `cpupool-cpu-add web-pool 1`).  A pool made from a file
takes free CPUs only, and a failure while making it undoes what was done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from hypercalls.errors import XenError
from hypercalls.interface import MIGRATION_DELAY_US_MAX, RATELIMIT_US, SCHEDULERS, TSLICE_MS, CpuPoolInfo, Hypervisor
from xentool.config.xlspec import parse_cpu_list
from xentool.errors import CpuPoolError, UsageError

POOL0_NAME = "Pool-0"
DEFAULT_SCHEDULER = "credit2"


def _pool_path(poolid: int) -> str:
    return f"/local/pool/{poolid}"


def _name_path(poolid: int) -> str:
    return f"{_pool_path(poolid)}/name"


@dataclass(frozen=True)
class CpuPool:
    """One row of `xentool cpupool-list`."""

    name: str
    poolid: int
    scheduler: str
    cpus: list[int]
    domains: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PoolSpec:
    """What cpupool-create reads from its YAML file: name, sched, cpus (xl's cpupool config keys)."""

    name: str
    scheduler: str
    cpus: frozenset[int]

    @classmethod
    def from_file(cls, path: Path) -> PoolSpec:
        import yaml

        where = str(path)
        try:
            data = yaml.safe_load(path.read_text())
        except (OSError, yaml.YAMLError) as e:
            raise UsageError(f"{where}: cannot be read as YAML: {e}") from None
        if not isinstance(data, dict):
            raise UsageError(f"{where}: a cpupool file is a mapping of name, sched and cpus")
        unknown = sorted(set(data) - {"name", "sched", "cpus"})
        if unknown:
            raise UsageError(f"{where}: {unknown[0]}: not a cpupool key; the keys are name, sched and cpus")
        name = data.get("name")
        if not isinstance(name, str) or not name or "/" in name or len(name) > 64:
            raise UsageError(f"{where}: name: give the pool a name of 1 to 64 characters, without /")
        scheduler = str(data.get("sched", DEFAULT_SCHEDULER))
        if scheduler not in SCHEDULERS.values():
            raise UsageError(f"{where}: sched: {scheduler!r} is not a scheduler; use one of {', '.join(SCHEDULERS.values())}")
        cpus = data.get("cpus", [])
        try:
            cpu_set = frozenset(parse_cpu_list(cpus) if isinstance(cpus, str) else [int(c) for c in cpus])
        except (TypeError, ValueError) as e:
            raise UsageError(f"{where}: cpus: {e}") from None
        return cls(name, scheduler, cpu_set)


@dataclass(frozen=True)
class PoolScheduling:
    """A cpupool's own scheduler parameters (`xentool sched-credit2 -s`, `sched-credit -s`): the rate
    limit of context switches (µs; 0: none) under credit and credit2, and credit's time slice (ms)
    and vcpu migration delay (µs)."""

    pool: str
    scheduler: str
    ratelimit_us: int
    tslice_ms: int | None = None
    migration_delay_us: int | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        """As xl prints it."""
        if self.scheduler == "credit":
            return (f"Cpupool {self.pool}: tslice={self.tslice_ms}ms ratelimit={self.ratelimit_us}us "
                    f"migration-delay={self.migration_delay_us}us")
        return f"Cpupool {self.pool}: ratelimit={self.ratelimit_us}us"


def pool_name(hv: Hypervisor, poolid: int) -> str:
    name = hv.xenstore().read_or(_name_path(poolid))
    return name if name is not None else POOL0_NAME if poolid == 0 else f"Pool-{poolid}"


def list_pools(hv: Hypervisor) -> list[CpuPool]:
    return [CpuPool(pool_name(hv, p.poolid), p.poolid, p.scheduler, sorted(p.cpus), p.domains) for p in hv.cpupool_list()]


def find_pool(hv: Hypervisor, name: str) -> CpuPoolInfo:
    for pool in hv.cpupool_list():
        if pool_name(hv, pool.poolid) == name or str(pool.poolid) == name:
            return pool
    known = ", ".join(p.name for p in list_pools(hv))
    raise UsageError(f"no cpupool named {name!r}; this host has {known}")


def _refused(name: str, what: str, action: Callable[[], object]) -> None:
    try:
        action()
    except XenError as e:
        raise CpuPoolError(name, f"{what}: {e}") from e


def create_pool(hv: Hypervisor, spec: PoolSpec) -> CpuPool:
    pools = list_pools(hv)
    if any(p.name == spec.name for p in pools):
        raise CpuPoolError(spec.name, "a cpupool of that name exists")
    outside = sorted(c for c in spec.cpus if c >= hv.physinfo().nr_cpus)
    if outside:
        raise CpuPoolError(spec.name, f"cpu {outside[0]} is not on this host")
    free = hv.cpupool_free_cpus()
    for cpu in sorted(spec.cpus - free):
        holder = next((p.name for p in pools if cpu in p.cpus), "another pool")
        raise CpuPoolError(spec.name, f"cpu {cpu} is in {holder}; take it out first (xentool cpupool-cpu-remove {holder} {cpu})")
    poolid = -1
    try:
        poolid = hv.cpupool_create(spec.scheduler)
        hv.xenstore().write(_name_path(poolid), spec.name)
        for cpu in sorted(spec.cpus):
            hv.cpupool_add_cpu(poolid, cpu)
    except BaseException as e:
        if poolid >= 0:  # undone: its CPUs go back to free, the pool and its name away
            for cpu in sorted(spec.cpus & next((p.cpus for p in hv.cpupool_list() if p.poolid == poolid), frozenset())):
                hv.cpupool_remove_cpu(poolid, cpu)
            hv.cpupool_destroy(poolid)
            hv.xenstore().rm(_pool_path(poolid))
        if isinstance(e, XenError):
            raise CpuPoolError(spec.name, f"making it: {e}") from e
        raise
    return next(p for p in list_pools(hv) if p.poolid == poolid)


def destroy_pool(hv: Hypervisor, name: str) -> None:
    pool = find_pool(hv, name)
    if pool.poolid == 0:
        raise CpuPoolError(name, "Pool-0 is Xen's own and cannot be destroyed")
    if pool.domains:
        raise CpuPoolError(name, f"{pool.domains} domain(s) still run in it; move them (xentool cpupool-migrate) or destroy them")
    for cpu in sorted(pool.cpus):
        _refused(name, f"taking out cpu {cpu}", partial(hv.cpupool_remove_cpu, pool.poolid, cpu))
    _refused(name, "destroying it", lambda: hv.cpupool_destroy(pool.poolid))
    hv.xenstore().rm(_pool_path(pool.poolid))


def add_cpu(hv: Hypervisor, name: str, cpu: int) -> None:
    pool = find_pool(hv, name)
    if cpu not in hv.cpupool_free_cpus():
        holder = next((p.name for p in list_pools(hv) if cpu in p.cpus), None)
        where = f"in {holder}; take it out first (xentool cpupool-cpu-remove {holder} {cpu})" if holder else "not on this host"
        raise CpuPoolError(name, f"cpu {cpu} is {where}")
    _refused(name, f"adding cpu {cpu}", lambda: hv.cpupool_add_cpu(pool.poolid, cpu))


def remove_cpu(hv: Hypervisor, name: str, cpu: int) -> None:
    pool = find_pool(hv, name)
    if cpu not in pool.cpus:
        raise CpuPoolError(name, f"cpu {cpu} is not in it; it has {', '.join(map(str, sorted(pool.cpus))) or 'none'}")
    if len(pool.cpus) == 1 and pool.domains:
        raise CpuPoolError(name, f"cpu {cpu} is its last and {pool.domains} domain(s) run in it")
    _refused(name, f"taking out cpu {cpu}", lambda: hv.cpupool_remove_cpu(pool.poolid, cpu))


def move_domain(hv: Hypervisor, domid: int, label: str, name: str) -> None:
    pool = find_pool(hv, name)
    if not pool.cpus:
        raise CpuPoolError(name, f"it has no cpus to run {label} on; give it some (xentool cpupool-cpu-add)")
    _refused(name, f"moving {label} into it", lambda: hv.cpupool_move_domain(pool.poolid, domid))


def _scheduling(hv: Hypervisor, name: str, scheduler: str) -> tuple[CpuPoolInfo, PoolScheduling]:
    pool = find_pool(hv, name)
    if pool.scheduler != scheduler:
        hint = f"; use xentool sched-{pool.scheduler} -s" if pool.scheduler in ("credit", "credit2") else ""
        raise CpuPoolError(pool_name(hv, pool.poolid), f"it runs the {pool.scheduler} scheduler, not {scheduler}{hint}")
    label = pool_name(hv, pool.poolid)
    try:
        params = hv.pool_sched_get(pool.poolid)
    except XenError as e:
        raise CpuPoolError(label, f"reading its scheduler parameters: {e}") from e
    return pool, PoolScheduling(label, params.scheduler, params.ratelimit_us, params.tslice_ms, params.migration_delay_us)


def pool_scheduling(hv: Hypervisor, name: str, scheduler: str) -> PoolScheduling:
    """The parameters of the pool ``name`` (its name or id), whose scheduler must be ``scheduler``."""
    return _scheduling(hv, name, scheduler)[1]


def set_pool_scheduling(hv: Hypervisor, name: str, scheduler: str, ratelimit_us: int | None = None,
                        tslice_ms: int | None = None, migration_delay_us: int | None = None) -> PoolScheduling:
    """Set what is given (None: unchanged), checked as libxl checks it before Xen sees it."""
    pool, now = _scheduling(hv, name, scheduler)
    if scheduler != "credit" and (tslice_ms is not None or migration_delay_us is not None):
        raise UsageError(f"cpupool {now.pool}: {scheduler} has a rate limit only (no time slice or migration delay)")
    wanted = PoolScheduling(now.pool, scheduler, now.ratelimit_us if ratelimit_us is None else ratelimit_us,
                            now.tslice_ms if tslice_ms is None else tslice_ms,
                            now.migration_delay_us if migration_delay_us is None else migration_delay_us)
    low, high = RATELIMIT_US
    if wanted.ratelimit_us != 0 and not low <= wanted.ratelimit_us <= high:
        raise UsageError(f"ratelimit {wanted.ratelimit_us} us: give 0 (no rate limit) or {low}..{high}")
    if wanted.tslice_ms is not None and not TSLICE_MS[0] <= wanted.tslice_ms <= TSLICE_MS[1]:
        raise UsageError(f"tslice {wanted.tslice_ms} ms: give {TSLICE_MS[0]}..{TSLICE_MS[1]}")
    if wanted.tslice_ms is not None and wanted.ratelimit_us > wanted.tslice_ms * 1000:
        raise UsageError(f"ratelimit {wanted.ratelimit_us} us is longer than the time slice ({wanted.tslice_ms} ms); "
                         "give a smaller rate limit or a longer time slice")
    if wanted.migration_delay_us is not None and not 0 <= wanted.migration_delay_us <= MIGRATION_DELAY_US_MAX:
        raise UsageError(f"migration delay {wanted.migration_delay_us} us: give 0..{MIGRATION_DELAY_US_MAX}")
    try:
        kept = hv.pool_sched_set(pool.poolid, ratelimit_us, tslice_ms, migration_delay_us)
    except XenError as e:
        raise CpuPoolError(now.pool, f"setting its scheduler parameters: {e}") from e
    return PoolScheduling(now.pool, kept.scheduler, kept.ratelimit_us, kept.tslice_ms, kept.migration_delay_us)
