"""Where vcpus run and how much CPU a domain gets: vcpu-pin, vcpu-list, sched-credit and
sched-credit2, as xl offers them, on any domain (dom0 too, as with xl).

CPU sets are written as xl writes them: "all", or ids and ranges ("0-3,5"); "-" in vcpu-pin leaves
that affinity as it is.  Hard affinity is where a vcpu may run; soft affinity is where the
scheduler prefers to run it, within the hard one.  Weight and cap are the credit schedulers':
a weight (1..65535, 256 by default) is a domain's share against the others when CPUs are
contended; a cap (0: none) is the most it may use, in percent of one CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from hypercalls.interface import WEIGHTED_SCHEDULERS, Hypervisor, SchedParams, VcpuInfo
from xentool.config.xlspec import parse_cpu_list
from xentool.errors import UsageError

MAX_WEIGHT = 65535
KEEP = "-"  # vcpu-pin's "leave this affinity as it is"


def cpu_set(spec: str, nr_cpus: int, what: str) -> frozenset[int] | None:
    """``spec`` as a set of this host's CPUs; None for "-".  ``what`` names it in errors."""
    text = spec.strip()
    if text == KEEP:
        return None
    every = frozenset(range(nr_cpus))
    if text == "all":
        return every
    try:
        cpus = frozenset(parse_cpu_list(text))
    except ValueError as e:
        raise UsageError(f"{what}: {e}") from None
    outside = sorted(cpus - every)
    if outside:
        raise UsageError(f"{what}: cpu {outside[0]} is not on this host; its cpus are {host_cpus_text(nr_cpus)}")
    return cpus


def host_cpus_text(nr_cpus: int) -> str:
    """The host's CPUs, written out: "0-3" (not "all", in a message saying what "all" is)."""
    return f"0-{nr_cpus - 1}" if nr_cpus > 1 else "0"


def cpu_text(cpus: frozenset[int], nr_cpus: int) -> str:
    """A CPU set as xl prints it: "all", or ranges like "0-3,5"."""
    return "all" if cpus >= frozenset(range(nr_cpus)) else cpu_ranges(cpus)


def cpu_ranges(cpus: frozenset[int]) -> str:
    """CPUs as ranges, like "0-3,5"; "none" for none."""
    ranges: list[list[int]] = []
    for cpu in sorted(cpus):
        if ranges and cpu == ranges[-1][1] + 1:
            ranges[-1][1] = cpu
        else:
            ranges.append([cpu, cpu])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges) or "none"


@dataclass(frozen=True)
class VcpuPlacement:
    """One row of `xentool vcpu-list` (what `xl vcpu-list` shows)."""

    name: str
    domid: int
    vcpu: int
    cpu: int | None  # None while the vcpu is offline
    state: str  # running, blocked, runnable or offline
    cpu_time_s: float
    hard_affinity: str
    soft_affinity: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def placement_rows(name: str, domid: int, vcpus: list[VcpuInfo], nr_cpus: int) -> list[VcpuPlacement]:
    rows = []
    for v in vcpus:
        state = "offline" if not v.online else "running" if v.running else "blocked" if v.blocked else "runnable"
        rows.append(VcpuPlacement(
            name=name, domid=domid, vcpu=v.vcpu, cpu=v.cpu if v.online else None, state=state,
            cpu_time_s=round(v.cpu_time_ns / 1e9, 1), hard_affinity=cpu_text(v.hard_affinity, nr_cpus),
            soft_affinity=cpu_text(v.soft_affinity, nr_cpus),
        ))
    return rows


def pin(hv: Hypervisor, domid: int, vcpu: int | None, hard: frozenset[int] | None, soft: frozenset[int] | None) -> None:
    """Set the affinities of one vcpu, or of every vcpu (``vcpu`` None), as `xl vcpu-pin`."""
    vcpus = [v.vcpu for v in hv.vcpu_info(domid)]
    if vcpu is not None and vcpu not in vcpus:
        raise UsageError(f"vcpu {vcpu}: the domain has vcpus 0..{len(vcpus) - 1}")
    for number in vcpus if vcpu is None else [vcpu]:
        hv.vcpu_setaffinity(domid, number, hard, soft)


def check_weight_and_cap(weight: int | None, cap: int | None, vcpus: int) -> None:
    if weight is not None and not 1 <= weight <= MAX_WEIGHT:
        raise UsageError(f"weight {weight}: give 1..{MAX_WEIGHT} (256 is the default share)")
    if cap is not None and not 0 <= cap <= 100 * vcpus:
        raise UsageError(f"cap {cap}: give 0 (no cap) up to {100 * vcpus} (percent of one CPU, for {vcpus} vcpus)")


def check_scheduler(params: SchedParams, wanted: str, label: str) -> None:
    """The command's scheduler must be the one the domain's cpupool runs (xl's sched-* refuse too)."""
    if params.scheduler != wanted:
        hint = f"; use xentool sched-{params.scheduler}" if params.scheduler in WEIGHTED_SCHEDULERS else ""
        raise UsageError(f"{label} runs under the {params.scheduler} scheduler (its cpupool's), not {wanted}{hint}")
