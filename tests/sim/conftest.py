"""Fixtures for the simulator's own tests: a fresh simulated host per test, and files to boot."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from hypercalls.interface import BuildSpec, DomainCreateSpec, GuestType
from hypercalls.sim import SimHypervisor


@pytest.fixture
def host_path(tmp_path: Path) -> Path:
    return tmp_path / "host"


@pytest.fixture
def hv(host_path: Path):
    with SimHypervisor(host_path) as hypervisor:
        yield hypervisor


def create_spec(max_vcpus: int = 2, guest_type: GuestType = GuestType.PV) -> DomainCreateSpec:
    return DomainCreateSpec(uuid=str(uuid.uuid4()), guest_type=guest_type, max_vcpus=max_vcpus)


def build_spec(kernel: Path | None, memory_mib: int = 128, vcpus: int = 1, **fields) -> BuildSpec:
    values = dict(
        guest_type=GuestType.PV,
        memory_kib=memory_mib * 1024,
        max_memory_kib=memory_mib * 1024,
        vcpus=vcpus,
        store_evtchn=1,
        console_evtchn=2,
        kernel=str(kernel) if kernel else None,
    )
    values.update(fields)
    return BuildSpec(**values)


def start_guest(hv: SimHypervisor, kernel: Path, memory_mib: int = 128, cmdline: str = "console=hvc0",
                max_vcpus: int = 2, paused: bool = False) -> int:
    """Create, build and (unless ``paused``) unpause a PV guest with a xenstore directory of its own,
    the way a toolstack does, reduced to what the simulated guest needs."""
    domid = hv.domain_create(create_spec(max_vcpus))
    hv.domain_setmaxmem(domid, memory_mib * 1024)
    hv.evtchn_alloc_unbound(domid, 0)
    hv.evtchn_alloc_unbound(domid, 0)
    result = hv.domain_build(domid, build_spec(kernel, memory_mib, cmdline=cmdline))
    xs = hv.xenstore()
    dom = f"/local/domain/{domid}"
    from hypercalls.interface import XsPerm, perms

    with xs.transaction() as txn:
        xs.write(dom, "", txn)
        xs.set_perms(dom, perms(0, (domid, XsPerm.READ)), txn)
        xs.write(f"{dom}/name", f"guest{domid}", txn)
        xs.write(f"{dom}/memory/target", str(memory_mib * 1024), txn)
        for vcpu in range(max_vcpus):
            xs.write(f"{dom}/cpu/{vcpu}/availability", "online" if vcpu < 1 else "offline", txn)
        xs.write(f"{dom}/control/shutdown", "", txn)
        xs.set_perms(f"{dom}/control/shutdown", perms(domid), txn)
        xs.mkdir(f"{dom}/data", txn)
        xs.set_perms(f"{dom}/data", perms(domid), txn)
    xs.introduce_domain(domid, result.store_mfn, result.store_evtchn)
    if not paused:
        hv.domain_unpause(domid)
    return domid
