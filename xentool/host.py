"""The host as `xentool host info` shows it: what the hypervisor reports of itself."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class HostInfo:
    hostname: str  # dom0's (a remote client sees which host answered)
    backend: str
    xen_version: str
    nr_cpus: int
    total_memory_mib: int
    free_memory_mib: int
    virt_caps: list[str]
    capabilities: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


__all__ = ["HostInfo"]
