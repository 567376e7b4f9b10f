"""The empty domain, its memory cap and vcpu pinning (libxl__domain_make, libxl__build_pre)."""

from __future__ import annotations

from hypercalls.interface import DomainCreateSpec
from xentool.config import GuestConfig
from xentool.create.plan import CreateDomain, PinVcpu, SetMaxMem, Step

# libxl adds this much to maxmem for the pages Xen itself charges to the domain (the grant table
# frames, the shared info page, ...): LIBXL_MAXMEM_CONSTANT in libxl_internal.h.
MAXMEM_SLACK_KIB = 1024


def plan_domain(config: GuestConfig, uuid: str) -> Step:
    ops = [
        CreateDomain(DomainCreateSpec(uuid=uuid, guest_type=config.type, max_vcpus=config.max_vcpus)),
        SetMaxMem(config.maxmem_kib + MAXMEM_SLACK_KIB),
    ]
    if config.cpus:
        # xl's "cpus" is one mask applied to every vcpu (hard affinity).
        mask = frozenset(config.cpus)
        ops += [PinVcpu(vcpu, mask) for vcpu in range(config.max_vcpus)]
    return Step("create domain", tuple(ops))
