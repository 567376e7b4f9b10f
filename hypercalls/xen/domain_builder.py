"""The PV and PVH domain builder: libxenguest's ``xc_dom_*`` in libxl's order.

What runs, for a domain that ``xc_domain_create`` made and ``xc_domain_max_vcpus`` gave its vcpus:

1. ``prepare``: what libxl__build_pre / libxl__arch_domain_create do around the build: the TSC
   mode; for PV the memory map limit; for PVH the paging pool (HAP's p2m memory), HVM_PARAM_TIMER_MODE
   and HVM_PARAM_ALTP2M (hvm_set_conf_params); then the CPUID policy (libxl__cpuid_legacy).
2. ``build_pv`` / ``build_pvh``: libxl__build_pv / libxl__build_hvm (PVH part) and libxl__build_dom:
   xc_dom_allocate, kernel and ramdisk, boot_xen_init, parse_image, mem_init, boot_mem_init, (PVH:
   the e820 memory map), build_image, boot_image, gnttab_init (which seeds the grant entries that
   let xenstored and the console backend map the two rings); then the frames of the two rings.
   The kernel libxenguest unpacks in parse_image is kept (``kernel_cache``), and the next build of
   the same file loads the unpacked image: unpacking is most of what a PV create costs.

HVM (hvmloader + device model) is not here yet: it comes with issue 5.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from hypercalls.errors import XenError
from hypercalls.interface import BuildResult, BuildSpec, FirmwareModule, GuestType
from hypercalls.xen.kernel_cache import KernelCache
from hypercalls.xen.xc import XcHandle, failed_nonzero

KIB = 1024
MIB = 1024 * 1024
GIB = 1024 * MIB

# From tools/libacpi and xen/include/public/hvm: the top of a PVH guest's 4 GiB holds the local
# APIC page, the ACPI info page and the HVM special pages, all of which must sit in the MMIO hole.
LAPIC_BASE_ADDRESS = 0xFEE00000
ACPI_INFO_PHYSICAL_ADDRESS = 0xFC000000
XC_PAGE_SHIFT = 12


def required_paging_pool_kib(max_memory_kib: int, max_vcpus: int) -> int:
    """libxl_get_required_shadow_memory: 1 MiB per vcpu, plus 2 pages per MiB of guest RAM."""
    return 4 * (256 * max_vcpus + 2 * (max_memory_kib // 1024))


@dataclass(frozen=True)
class PvhLayout:
    """Where RAM goes below and above the MMIO hole (libxl__build_hvm, no device model)."""

    mmio_start: int
    mmio_size: int
    lowmem_end: int
    highmem_end: int  # 0: no RAM above 4 GiB


def pvh_layout(max_memory_kib: int, nr_special_pages: int, end_special_region: int) -> PvhLayout:
    special_start = (end_special_region - nr_special_pages) << XC_PAGE_SHIFT
    hole_start = min(special_start, LAPIC_BASE_ADDRESS, ACPI_INFO_PHYSICAL_ADDRESS)
    mmio_size = 4 * GIB - hole_start
    mem_size = max_memory_kib * KIB
    mmio_start = 4 * GIB - mmio_size
    lowmem_end, highmem_end = mem_size, 0
    if lowmem_end > mmio_start:
        highmem_end = 4 * GIB + (lowmem_end - mmio_start)
        lowmem_end = mmio_start
    return PvhLayout(mmio_start, mmio_size, lowmem_end, highmem_end)


def pvh_e820(layout: PvhLayout, nr_special_pages: int, end_special_region: int,
             ram: int, reserved: int, acpi: int = 0,
             firmware: tuple[FirmwareModule, ...] = ()) -> list[tuple[int, int, int]]:
    """(addr, size, type) entries, as libxl__arch_domain_construct_memmap for PVH: low RAM, the
    ACPI modules (each from its page to its last byte, type ``acpi``), the special pages, high RAM."""
    entries = [(0, layout.lowmem_end, ram)]
    for module in firmware:
        offset = module.guest_addr % (1 << XC_PAGE_SHIFT)
        entries.append((module.guest_addr - offset, len(module.data) + offset, acpi))
    special_start = (end_special_region - nr_special_pages) << XC_PAGE_SHIFT
    entries.append((special_start, nr_special_pages << XC_PAGE_SHIFT, reserved))
    if layout.highmem_end:
        entries.append((4 * GIB, layout.highmem_end - 4 * GIB, ram))
    # libxl lists the modules in acpi_modules[] order (the RSDP, last in memory, first); in
    # address order the map reads the same to every guest, sanitising or not.
    return sorted(entries)


class DomainBuilder:
    def __init__(self, xc: XcHandle, kernel_cache: KernelCache | None = KernelCache()) -> None:
        self.xc = xc
        self.ffi = xc.ffi
        self.lib = xc.lib
        self.kernel_cache = kernel_cache

    def build(self, domid: int, spec: BuildSpec, max_vcpus: int) -> BuildResult:
        if spec.guest_type == GuestType.HVM:
            raise XenError(
                "domain_build(hvm)", errno.ENOSYS, domid,
                "HVM build (hvmloader and the device model) comes with issue 5; use type pv or pvh",
            )
        if not spec.kernel:
            raise XenError("xc_dom_kernel_file", errno.EINVAL, domid, f"a {spec.guest_type.value} guest needs a kernel")
        self._check_file("xc_dom_kernel_file", domid, spec.kernel, "kernel")
        if spec.ramdisk:
            self._check_file("xc_dom_module_file", domid, spec.ramdisk, "ramdisk")
        self.prepare(domid, spec, max_vcpus)
        if spec.guest_type == GuestType.PV:
            return self._build_pv(domid, spec, max_vcpus)
        return self._build_pvh(domid, spec, max_vcpus)

    @staticmethod
    def _check_file(op: str, domid: int, path: str, what: str) -> None:
        # libxenguest would fail too, but with a message in its log rather than the file's name.
        if not os.path.exists(path):
            raise XenError(op, errno.ENOENT, domid, f"{what} {path} does not exist")
        if not os.access(path, os.R_OK):
            raise XenError(op, errno.EACCES, domid, f"{what} {path} is not readable")

    # -- libxl__build_pre / libxl__arch_domain_create ---------------------------------------------
    def prepare(self, domid: int, spec: BuildSpec, max_vcpus: int) -> None:
        xc, lib = self.xc, self.lib
        if spec.guest_type == GuestType.PV:
            # slack_memkb defaults to 0, so the PV memory map ends at maxmem.
            xc.call("xc_domain_set_memmap_limit", lib.xc_domain_set_memmap_limit, xc.xch, domid,
                    spec.max_memory_kib, domid=domid, failed=failed_nonzero)
        # tsc_mode "default" (0), as libxl__arch_domain_create.
        xc.call("xc_domain_set_tsc_info", lib.xc_domain_set_tsc_info, xc.xch, domid, 0, 0, 0, 0, domid=domid)
        if spec.guest_type != GuestType.PV:
            pool = required_paging_pool_kib(spec.max_memory_kib, max_vcpus) * KIB
            xc.call("xc_set_paging_mempool_size", lib.xc_set_paging_mempool_size, xc.xch, domid, pool, domid=domid)
            # hvm_set_conf_params for PVH: timer mode "no_delay_for_missed_ticks", altp2m off.
            xc.call("xc_hvm_param_set(TIMER_MODE)", lib.xc_hvm_param_set, xc.xch, domid,
                    lib.HVM_PARAM_TIMER_MODE, lib.HVMPTM_no_delay_for_missed_ticks, domid=domid)
            xc.call("xc_hvm_param_set(ALTP2M)", lib.xc_hvm_param_set, xc.xch, domid, lib.HVM_PARAM_ALTP2M, 0,
                    domid=domid)
        # libxl__cpuid_legacy for a new domain: pae on, no invariant TSC, no nested virt.
        xc.call("xc_cpuid_apply_policy", lib.xc_cpuid_apply_policy, xc.xch, domid, False, self.ffi.NULL, 0,
                True, False, False, self.ffi.NULL, self.ffi.NULL, domid=domid)

    # -- the xc_dom_* sequence ------------------------------------------------------------------
    def _allocate(self, domid: int, cmdline: str, features: str | None):
        ffi = self.ffi
        dom = self.xc.call(
            "xc_dom_allocate", self.lib.xc_dom_allocate, self.xc.xch, cmdline.encode(),
            features.encode() if features else ffi.NULL, domid=domid, failed=lambda p: p == ffi.NULL,
        )
        return dom

    def _load_images(self, dom, domid: int, spec: BuildSpec) -> bool:
        """Hand libxenguest the kernel (its unpacked image when the cache has one) and the ramdisk;
        True if the kernel came from the cache."""
        xc, lib = self.xc, self.lib
        cached = self.kernel_cache.lookup(spec.kernel) if self.kernel_cache else None
        xc.call("xc_dom_kernel_file", lib.xc_dom_kernel_file, dom, str(cached or spec.kernel).encode(), domid=domid,
                failed=failed_nonzero, detail=f"kernel {spec.kernel}")
        if spec.ramdisk:
            xc.call("xc_dom_module_file", lib.xc_dom_module_file, dom, spec.ramdisk.encode(), self.ffi.NULL,
                    domid=domid, failed=failed_nonzero, detail=f"ramdisk {spec.ramdisk}")
        return cached is not None

    def _keep_unpacked_kernel(self, dom, spec: BuildSpec) -> None:
        """After xc_dom_parse_image: the kernel image libxenguest unpacked, for the next build."""
        if self.kernel_cache and dom.kernel_blob != self.ffi.NULL:
            self.kernel_cache.store(spec.kernel, self.ffi.buffer(dom.kernel_blob, dom.kernel_size))

    def _set_rings(self, dom, spec: BuildSpec, max_vcpus: int) -> None:
        dom.console_evtchn = spec.console_evtchn
        dom.xenstore_evtchn = spec.store_evtchn
        dom.console_domid = spec.backend_domid
        dom.xenstore_domid = spec.backend_domid
        dom.max_vcpus = max_vcpus
        # Claim the memory up front so that a host without enough fails at once with ENOMEM
        # rather than half-way through populating the guest (xl's claim_mode=1).
        dom.claim_enabled = 1

    def _boot(self, dom, domid: int, mem_mib: int, between=None, after_parse=None) -> None:
        """libxl__build_dom: the builder's steps from boot_xen_init to gnttab_init."""
        xc, lib = self.xc, self.lib
        xc.call("xc_dom_boot_xen_init", lib.xc_dom_boot_xen_init, dom, xc.xch, domid, domid=domid,
                failed=failed_nonzero)
        xc.call("xc_dom_parse_image", lib.xc_dom_parse_image, dom, domid=domid, failed=failed_nonzero,
                detail="not a kernel this builder can load")
        if after_parse is not None:
            after_parse(dom)
        xc.call("xc_dom_mem_init", lib.xc_dom_mem_init, dom, mem_mib, domid=domid, failed=failed_nonzero,
                detail=f"{mem_mib} MiB")
        xc.call("xc_dom_boot_mem_init", lib.xc_dom_boot_mem_init, dom, domid=domid, failed=failed_nonzero,
                detail=f"populating {mem_mib} MiB of guest memory")
        if between is not None:
            between(dom)
        xc.call("xc_dom_build_image", lib.xc_dom_build_image, dom, domid=domid, failed=failed_nonzero)
        xc.call("xc_dom_boot_image", lib.xc_dom_boot_image, dom, domid=domid, failed=failed_nonzero)
        xc.call("xc_dom_gnttab_init", lib.xc_dom_gnttab_init, dom, domid=domid, failed=failed_nonzero)

    def _build_pv(self, domid: int, spec: BuildSpec, max_vcpus: int) -> BuildResult:
        lib = self.lib
        features = "|".join(spec.features) if spec.features else None
        dom = self._allocate(domid, spec.cmdline, features)
        try:
            lib.xentool_dom_set_container(dom, 0)
            from_cache = self._load_images(dom, domid, spec)
            dom.flags = 0
            self._set_rings(dom, spec, max_vcpus)
            # A PV guest starts with "memory"; ballooning up to maxmem happens later.
            self._boot(dom, domid, spec.memory_kib // 1024,
                       after_parse=None if from_cache else lambda dom: self._keep_unpacked_kernel(dom, spec))
            if lib.xc_dom_translated(dom):
                store, console = dom.xenstore_pfn, dom.console_pfn
            else:
                store = lib.xentool_dom_p2m(dom, dom.xenstore_pfn)
                console = lib.xentool_dom_p2m(dom, dom.console_pfn)
            return BuildResult(int(store), int(console), spec.store_evtchn, spec.console_evtchn)
        finally:
            lib.xc_dom_release(dom)

    def _build_pvh(self, domid: int, spec: BuildSpec, max_vcpus: int) -> BuildResult:
        xc, lib, ffi = self.xc, self.lib, self.ffi
        dom = self._allocate(domid, spec.cmdline, None)
        try:
            lib.xentool_dom_set_container(dom, 1)
            dom.target_pages = spec.memory_kib // 4
            from_cache = self._load_images(dom, domid, spec)
            layout = pvh_layout(spec.max_memory_kib, lib.X86_HVM_NR_SPECIAL_PAGES, lib.X86_HVM_END_SPECIAL_REGION)
            dom.mmio_start = layout.mmio_start
            dom.mmio_size = layout.mmio_size
            dom.lowmem_end = layout.lowmem_end
            dom.highmem_end = layout.highmem_end
            dom.vga_hole_size = 0
            dom.device_model = False
            self._set_rings(dom, spec, max_vcpus)

            # The ACPI tables (xentool.create.acpi_tables): libxenguest copies each module to its
            # address in xc_dom_build_image and passes module 0's (the RSDP) to the guest as
            # hvm_start_info.rsdp_paddr.  The buffers must live until then.
            if len(spec.acpi_modules) >= len(dom.acpi_modules):
                raise XenError("xc_dom_build_image", errno.E2BIG, domid,
                               f"{len(spec.acpi_modules)} ACPI modules; the builder takes {len(dom.acpi_modules) - 1}")
            keep_alive = []
            for slot, module in zip(dom.acpi_modules, spec.acpi_modules):
                buffer = ffi.from_buffer(module.data)
                keep_alive.append(buffer)
                slot.data = ffi.cast("uint8_t *", buffer)
                slot.length = len(module.data)
                slot.guest_addr_out = module.guest_addr

            def memory_map(dom) -> None:
                # libxl__arch_domain_finalise_hw_description for PVH: the e820 goes both to Xen
                # (XENMEM_memory_map) and into the start info the builder writes.
                entries = pvh_e820(layout, lib.X86_HVM_NR_SPECIAL_PAGES, lib.X86_HVM_END_SPECIAL_REGION,
                                   lib.E820_RAM, lib.E820_RESERVED, lib.E820_ACPI, spec.acpi_modules)
                e820 = ffi.new("struct e820entry[]", len(entries))
                for i, (addr, size, kind) in enumerate(entries):
                    e820[i].addr, e820[i].size, e820[i].type = addr, size, kind
                xc.call("xc_domain_set_memory_map", lib.xc_domain_set_memory_map, xc.xch, domid, e820,
                        len(entries), domid=domid, failed=failed_nonzero)
                xc.call("xentool_dom_set_e820", lib.xentool_dom_set_e820, dom, e820, len(entries), domid=domid,
                        failed=failed_nonzero)

            # An HVM container is populated to maxmem (minus video RAM, none here); target_pages
            # tells the builder how much of it to back when that is less (populate-on-demand).
            self._boot(dom, domid, spec.max_memory_kib // 1024, between=memory_map,
                       after_parse=None if from_cache else lambda dom: self._keep_unpacked_kernel(dom, spec))
            del keep_alive
        finally:
            lib.xc_dom_release(dom)
        # hvm_build_set_params: the builder put the rings' frames in HVM params; the ports go there too.
        value = ffi.new("uint64_t *")
        xc.call("xc_hvm_param_get(STORE_PFN)", lib.xc_hvm_param_get, xc.xch, domid, lib.HVM_PARAM_STORE_PFN, value,
                domid=domid)
        store = int(value[0])
        xc.call("xc_hvm_param_get(CONSOLE_PFN)", lib.xc_hvm_param_get, xc.xch, domid, lib.HVM_PARAM_CONSOLE_PFN,
                value, domid=domid)
        console = int(value[0])
        xc.call("xc_hvm_param_set(STORE_EVTCHN)", lib.xc_hvm_param_set, xc.xch, domid, lib.HVM_PARAM_STORE_EVTCHN,
                spec.store_evtchn, domid=domid)
        xc.call("xc_hvm_param_set(CONSOLE_EVTCHN)", lib.xc_hvm_param_set, xc.xch, domid,
                lib.HVM_PARAM_CONSOLE_EVTCHN, spec.console_evtchn, domid=domid)
        return BuildResult(store, console, spec.store_evtchn, spec.console_evtchn)


__all__ = ["DomainBuilder", "pvh_layout", "pvh_e820", "required_paging_pool_kib"]
