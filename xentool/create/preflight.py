"""Checks made before anything is created, so that the common mistakes cost nothing to undo.

Every device is checked by its kind's own checks (xentool.devices, xentool.devicemodel.checks),
which hot plug uses too: first what is wrong in the config, then what this host lacks.  They are
not the last word: the name is claimed again inside the xenstore transaction (another create may
race us), and the builder fails with ENOMEM if memory went meanwhile.
"""

from __future__ import annotations

from hypercalls.interface import GuestType, Hypervisor
from xentool.bootloader import check_bootloader_on_host
from xentool.config import GuestConfig
from xentool.cpupools import find_pool
from xentool.devicemodel.checks import check_emulated_disks, check_hvm_device_model, check_pv_backend
from xentool.devices.disk import check_disk_config, check_disk_on_host
from xentool.devices.vif import check_vif_on_host
from xentool.errors import InsufficientMemory, NameInUse, UnsupportedByHost, UsageError
from xentool.placement import host_cpus_text

# What Xen charges a guest beyond its RAM (page tables, grant frames, the p2m): a margin so that a
# guest accepted here does not fail in the builder for want of a few pages.
BUILD_OVERHEAD_KIB = 2048


def check_name_free(hv: Hypervisor, name: str) -> None:
    xs = hv.xenstore()
    for info in hv.domain_list():  # live domains only: a stale /local/domain/N holds no name
        if xs.read_or(f"/local/domain/{info.domid}/name") == name:
            raise NameInUse(name, info.domid)


def check_memory_fits(hv: Hypervisor, config: GuestConfig) -> None:
    free_kib = hv.physinfo().free_kib
    needed_kib = config.memory_kib + BUILD_OVERHEAD_KIB
    if needed_kib > free_kib:
        raise InsufficientMemory(config.name, needed_kib // 1024, free_kib // 1024)


def check_paging_mode(hv: Hypervisor, config: GuestConfig) -> None:
    """hap: false needs shadow paging, which Xen can be built without (Debian's 4.17 is); Xen itself
    would refuse the domain with a bare EINVAL."""
    caps = hv.physinfo().virt_caps
    if config.hap is False and "shadow" not in caps:
        raise UnsupportedByHost(config.name, f"hap: false asks for shadow paging, which this Xen was built without "
                                             f"(it offers: {' '.join(caps)}); remove hap: false")


def check_cpus_on_host(hv: Hypervisor, config: GuestConfig) -> None:
    """cpus and cpus_soft name CPUs this host has (Xen would refuse the affinity with EINVAL)."""
    nr_cpus = hv.physinfo().nr_cpus
    for key in ("cpus", "cpus_soft"):
        outside = sorted(c for c in getattr(config, key) if c >= nr_cpus)
        if outside:
            raise UnsupportedByHost(config.name, f"{key}: cpu {outside[0]} is not on this host; "
                                                 f"its cpus are {host_cpus_text(nr_cpus)}")


def check_pool(hv: Hypervisor, config: GuestConfig) -> None:
    """A named cpupool exists and has CPUs to run the guest on."""
    if config.pool is None:
        return
    try:
        pool = find_pool(hv, config.pool)
    except UsageError as e:
        raise UnsupportedByHost(config.name, f"pool: {e}") from None
    if not pool.cpus:
        raise UnsupportedByHost(config.name, f"pool: cpupool {config.pool} has no cpus; give it some (xentool cpupool-cpu-add)")


def preflight(hv: Hypervisor, config: GuestConfig) -> None:
    check_name_free(hv, config.name)
    check_memory_fits(hv, config)
    check_paging_mode(hv, config)
    check_cpus_on_host(hv, config)
    check_pool(hv, config)
    check_bootloader_on_host(config)
    for disk in config.disks:
        check_disk_config(config.name, config.type, disk)
    check_emulated_disks(config)
    if hv.runs_device_models:
        check_pv_backend(config)
        # The config's own mistakes (a NIC model QEMU lacks) before the host's (a missing bridge).
        if config.type == GuestType.HVM:
            check_hvm_device_model(config)
    if hv.has_kernel_backends:
        for disk in config.disks:
            check_disk_on_host(config.name, disk)
        for devid, vif in enumerate(config.vifs):
            check_vif_on_host(config.name, devid, vif)
