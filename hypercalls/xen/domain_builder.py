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

3. ``build_hvm``: libxl__build_hvm with a device model: hvmloader is the "kernel", SeaBIOS goes in
   as the system firmware module, memory skips the VGA hole, and the hvm_info table hvmloader reads
   gets the vcpu count and the online mask.  The emulated hardware is QEMU's (xentool.devicemodel).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass

from hypercalls.errors import XenError
from hypercalls.interface import BuildResult, BuildSpec, FirmwareModule, GuestType
from hypercalls.xen.foreignmem import ForeignMemory
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


# libxl_internal.h: the legacy VGA window (0xA0000-0xBFFFF) an HVM guest with a device model
# leaves unpopulated, for QEMU's emulated VGA; and where such a guest's low RAM map starts.
VGA_HOLE_PAGES = 0x20
GUEST_LOW_MEM_START = 0x100000

# libxl's viridian groups (libxl_x86.c hvm_set_viridian_features) and the HVMPV_* bits they set;
# "base" is the prerequisite of every other group, and without "freq" the guest gets no_freq.
VIRIDIAN_DEFAULT_GROUPS = ("base", "freq", "time_ref_count", "apic_assist", "crash_ctl", "no_vp_limit", "cpu_hotplug")
VIRIDIAN_GROUP_BITS = {
    "time_ref_count": "HVMPV_time_ref_count",
    "reference_tsc": "HVMPV_reference_tsc",
    "hcall_remote_tlb_flush": "HVMPV_hcall_remote_tlb_flush",
    "apic_assist": "HVMPV_apic_assist",
    "crash_ctl": "HVMPV_crash_ctl",
    "synic": "HVMPV_synic",
    "stimer": "HVMPV_stimer",
    "hcall_ipi": "HVMPV_hcall_ipi",
    "ex_processor_masks": "HVMPV_ex_processor_masks",
    "no_vp_limit": "HVMPV_no_vp_limit",
    "cpu_hotplug": "HVMPV_cpu_hotplug",
}


def viridian_mask(groups: tuple[str, ...], lib) -> int:
    """HVM_PARAM_VIRIDIAN for the config's groups ("defaults" and "all" expanded); 0: no viridian."""
    enabled: set[str] = set()
    for group in groups:
        if group == "defaults":
            enabled.update(VIRIDIAN_DEFAULT_GROUPS)
        elif group == "all":
            enabled.update(("base", "freq", *VIRIDIAN_GROUP_BITS))
        else:
            enabled.add(group)
    if not enabled:
        return 0
    if "base" not in enabled:
        raise ValueError(f"viridian groups {sorted(enabled)} need the base group; add base (or use defaults)")
    mask = lib.HVMPV_base_freq | (0 if "freq" in enabled else lib.HVMPV_no_freq)
    for group in enabled:
        if group in VIRIDIAN_GROUP_BITS:
            mask |= getattr(lib, VIRIDIAN_GROUP_BITS[group])
    return mask


def required_paging_pool_kib(max_memory_kib: int, max_vcpus: int) -> int:
    """libxl_get_required_shadow_memory: 1 MiB per vcpu, plus 2 pages per MiB of guest RAM."""
    return 4 * (256 * max_vcpus + 2 * (max_memory_kib // 1024))


@dataclass(frozen=True)
class HvmLayout:
    """libxl__build_hvm's memory layout for a guest with a device model: RAM up to the 256 MiB
    MMIO hole below 4 GiB (HVM_BELOW_4G_MMIO_LENGTH), the rest above 4 GiB."""

    mem_size: int  # bytes of guest RAM (maxmem less the video RAM QEMU takes)
    mmio_start: int
    mmio_size: int
    lowmem_end: int
    highmem_end: int  # 0: no RAM above 4 GiB


def hvm_layout(max_memory_kib: int, videoram_kib: int, mmio_size: int) -> HvmLayout:
    mem_size = (max_memory_kib - videoram_kib) * KIB
    mmio_start = 4 * GIB - mmio_size
    lowmem_end = min(mem_size, mmio_start)
    highmem_end = 4 * GIB + (mem_size - mmio_start) if mem_size > mmio_start else 0
    return HvmLayout(mem_size, mmio_start, mmio_size, lowmem_end, highmem_end)


def hvm_e820(layout: HvmLayout, ram: int) -> list[tuple[int, int, int]]:
    """libxl__arch_domain_construct_memmap with a device model: RAM from 1 MiB (hvmloader makes
    the guest's own map; this one is Xen's idea of the guest's RAM) and above 4 GiB."""
    entries = [(GUEST_LOW_MEM_START, layout.lowmem_end - GUEST_LOW_MEM_START, ram)]
    if layout.highmem_end:
        entries.append((4 * GIB, layout.highmem_end - 4 * GIB, ram))
    return entries


def patch_hvm_info(ffi, table, nr_vcpus: int, online_vcpus: int) -> None:
    """hvm_build_set_params: libxenguest wrote the table with one vcpu; give hvmloader the real
    count and online mask, then make the table's bytes sum to zero again."""
    table.apic_mode = 1
    table.nr_vcpus = nr_vcpus
    for i in range(len(table.vcpu_online)):
        bits = max(0, min(8, online_vcpus - 8 * i))
        table.vcpu_online[i] = (1 << bits) - 1
    table.checksum = 0
    table.checksum = -sum(bytes(ffi.buffer(table, table.length))) & 0xFF


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


# KernelCache is frozen and holds only where and how much to keep, so every builder can share one.
_DEFAULT_KERNEL_CACHE = KernelCache()


class DomainBuilder:
    def __init__(self, xc: XcHandle, kernel_cache: KernelCache | None = _DEFAULT_KERNEL_CACHE) -> None:
        self.xc = xc
        self.ffi = xc.ffi
        self.lib = xc.lib
        self.kernel_cache = kernel_cache

    def build(self, domid: int, spec: BuildSpec, max_vcpus: int) -> BuildResult:
        if spec.guest_type == GuestType.HVM:
            # QEMU loads an HVM guest's own kernel (direct boot); the builder loads the firmware.
            if not spec.firmware or not spec.system_firmware:
                raise XenError("xc_dom_kernel_file", errno.EINVAL, domid, "an hvm guest needs hvmloader and a BIOS")
            self._check_file("xc_dom_kernel_file", domid, spec.firmware, "hvmloader")
            self._check_file("system_firmware_module", domid, spec.system_firmware, "BIOS")
            self.prepare(domid, spec, max_vcpus)
            return self._build_hvm(domid, spec, max_vcpus)
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
    def prepare(self, domid: int, spec: BuildSpec, max_vcpus: int, restoring: bool = False) -> None:
        """libxl__build_pre; ``restoring``: the migration stream brings the CPUID policy (a stream
        without one gets it in xc_domain_restore's static_data_done callback)."""
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
            self._set_conf_params(domid, spec)
        if restoring:
            return
        # libxl__cpuid_legacy for a new domain: pae on, no invariant TSC, no nested virt.
        xc.call("xc_cpuid_apply_policy", lib.xc_cpuid_apply_policy, xc.xch, domid, False, self.ffi.NULL, 0,
                True, False, False, self.ffi.NULL, self.ffi.NULL, domid=domid)

    def _set_conf_params(self, domid: int, spec: BuildSpec) -> None:
        """hvm_set_conf_params and hvm_set_viridian_features: HVM gets an HPET and aligned virtual
        platform timers; both HVM and PVH get timer mode "no_delay_for_missed_ticks" and no altp2m."""
        xc, lib = self.xc, self.lib
        params = []
        if spec.guest_type == GuestType.HVM:
            params += [("HPET_ENABLED", 1), ("VPT_ALIGN", 1)]
        params += [("TIMER_MODE", lib.HVMPTM_no_delay_for_missed_ticks), ("ALTP2M", 0)]
        if spec.guest_type == GuestType.HVM and spec.viridian:
            try:
                mask = viridian_mask(spec.viridian, lib)
            except ValueError as e:
                raise XenError("xc_hvm_param_set(VIRIDIAN)", errno.EINVAL, domid, str(e)) from None
            if mask:
                params.append(("VIRIDIAN", mask))
        for name, value in params:
            xc.call(f"xc_hvm_param_set({name})", lib.xc_hvm_param_set, xc.xch, domid,
                    getattr(lib, f"HVM_PARAM_{name}"), value, domid=domid)

    # -- the xc_dom_* sequence ------------------------------------------------------------------
    def _allocate(self, domid: int, cmdline: str | None, features: str | None):
        ffi = self.ffi
        dom = self.xc.call(
            "xc_dom_allocate", self.lib.xc_dom_allocate, self.xc.xch, cmdline.encode() if cmdline is not None else ffi.NULL,
            features.encode() if features else ffi.NULL, domid=domid, failed=lambda p: p == ffi.NULL,
        )
        return dom

    def _load_images(self, dom, domid: int, spec: BuildSpec) -> bool:
        """Hand libxenguest the kernel (its unpacked image when the cache has one) and the ramdisk;
        True if the kernel came from the cache."""
        assert spec.kernel is not None  # build() refuses a PV or PVH spec without one
        xc, lib = self.xc, self.lib
        cached = self.kernel_cache.lookup(spec.kernel, spec.kernel_digest) if self.kernel_cache else None
        xc.call("xc_dom_kernel_file", lib.xc_dom_kernel_file, dom, str(cached or spec.kernel).encode(), domid=domid,
                failed=failed_nonzero, detail=f"kernel {spec.kernel}")
        if spec.ramdisk:
            xc.call("xc_dom_module_file", lib.xc_dom_module_file, dom, spec.ramdisk.encode(), self.ffi.NULL,
                    domid=domid, failed=failed_nonzero, detail=f"ramdisk {spec.ramdisk}")
        return cached is not None

    def _keep_unpacked_kernel(self, dom, spec: BuildSpec) -> None:
        """After xc_dom_parse_image: the kernel image libxenguest unpacked, for the next build."""
        assert spec.kernel is not None  # build() refuses a PV or PVH spec without one
        if self.kernel_cache and dom.kernel_blob != self.ffi.NULL:
            self.kernel_cache.store(spec.kernel, self.ffi.buffer(dom.kernel_blob, dom.kernel_size), spec.kernel_digest)

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
            for slot, module in zip(dom.acpi_modules, spec.acpi_modules, strict=False):  # more slots than modules
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
                e820 = self._set_memory_map(domid, entries)
                xc.call("xentool_dom_set_e820", lib.xentool_dom_set_e820, dom, e820, len(entries), domid=domid,
                        failed=failed_nonzero)

            # An HVM container is populated to maxmem (minus video RAM, none here); target_pages
            # tells the builder how much of it to back when that is less (populate-on-demand).
            self._boot(dom, domid, spec.max_memory_kib // 1024, between=memory_map,
                       after_parse=None if from_cache else lambda dom: self._keep_unpacked_kernel(dom, spec))
            del keep_alive
        finally:
            lib.xc_dom_release(dom)
        return self._ring_params(domid, spec)

    def _build_hvm(self, domid: int, spec: BuildSpec, max_vcpus: int) -> BuildResult:
        """libxl__build_hvm with qemu-xen: hvmloader runs first, finds SeaBIOS as its "firmware"
        module, builds the guest's ACPI tables and e820 itself and hands over to the BIOS."""
        # build() refuses an HVM spec without them
        assert spec.firmware is not None and spec.system_firmware is not None
        xc, lib, ffi = self.xc, self.lib, self.ffi
        with open(spec.system_firmware, "rb") as f:
            bios = f.read()
        if not bios:
            raise XenError("system_firmware_module", errno.EINVAL, domid, f"BIOS {spec.system_firmware} is empty")
        layout = hvm_layout(spec.max_memory_kib, spec.videoram_kib, lib.HVM_BELOW_4G_MMIO_LENGTH)
        dom = self._allocate(domid, None, None)
        try:
            lib.xentool_dom_set_container(dom, 1)
            xc.call("xc_dom_kernel_file", lib.xc_dom_kernel_file, dom, spec.firmware.encode(), domid=domid,
                    failed=failed_nonzero, detail=f"hvmloader {spec.firmware}")
            bios_buffer = ffi.from_buffer(bios)  # must live until xc_dom_boot_image has copied it
            dom.system_firmware_module.data = ffi.cast("uint8_t *", bios_buffer)
            dom.system_firmware_module.length = len(bios)
            # Populate-on-demand covers maxmem above memory: the builder backs target_pages.
            dom.target_pages = (spec.memory_kib - spec.videoram_kib) // 4
            dom.mmio_start = layout.mmio_start
            dom.mmio_size = layout.mmio_size
            dom.lowmem_end = layout.lowmem_end
            dom.highmem_end = layout.highmem_end
            dom.vga_hole_size = VGA_HOLE_PAGES
            dom.device_model = True
            self._set_rings(dom, spec, max_vcpus)
            if spec.memory_kib < spec.max_memory_kib:
                dom.claim_enabled = 0  # libxenguest refuses a claim together with PoD

            def memory_map(dom) -> None:
                self._set_memory_map(domid, hvm_e820(layout, lib.E820_RAM))

            self._boot(dom, domid, layout.mem_size // MIB, between=memory_map)
            del bios_buffer
        finally:
            lib.xc_dom_release(dom)
        self._set_hvm_info(domid, max_vcpus, spec.vcpus)
        return self._ring_params(domid, spec)

    def _set_memory_map(self, domid: int, entries: list[tuple[int, int, int]]):
        """XENMEM_set_memory_map: Xen's idea of the guest's RAM; returns the cffi array."""
        e820 = self.ffi.new("struct e820entry[]", len(entries))
        for i, (addr, size, kind) in enumerate(entries):
            e820[i].addr, e820[i].size, e820[i].type = addr, size, kind
        self.xc.call("xc_domain_set_memory_map", self.lib.xc_domain_set_memory_map, self.xc.xch, domid, e820,
                     len(entries), domid=domid, failed=failed_nonzero)
        return e820

    def _set_hvm_info(self, domid: int, max_vcpus: int, online_vcpus: int) -> None:
        memory = ForeignMemory(self.xc.module)
        try:
            with memory.map(domid, [self.lib.HVM_INFO_PFN]) as page:
                table = self.ffi.cast("struct hvm_info_table *", self.ffi.cast("char *", page.addr) + self.lib.HVM_INFO_OFFSET)
                patch_hvm_info(self.ffi, table, max_vcpus, online_vcpus)
        finally:
            memory.close()

    def _ring_params(self, domid: int, spec: BuildSpec) -> BuildResult:
        xc, lib, ffi = self.xc, self.lib, self.ffi
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


__all__ = ["DomainBuilder", "hvm_e820", "hvm_layout", "pvh_layout", "pvh_e820", "required_paging_pool_kib", "viridian_mask"]
