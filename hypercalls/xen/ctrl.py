"""The real hypervisor: :class:`Hypervisor` over libxenctrl, libxenguest and libxenstore."""

from __future__ import annotations

import errno
import os
import threading
import uuid as uuid_module
from collections.abc import Callable
from types import ModuleType
from typing import Any

from hypercalls.errors import XenError
from hypercalls.interface import (
    SCHEDULERS,
    WEIGHTED_SCHEDULERS,
    BuildResult,
    BuildSpec,
    CpuPoolInfo,
    DomainCreateSpec,
    DomainInfo,
    GuestConsole,
    GuestType,
    Hypervisor,
    PhysInfo,
    PoolSchedParams,
    SchedParams,
    ShutdownReason,
    Trigger,
    VcpuInfo,
    XenVersion,
)
from hypercalls.xen import saverestore
from hypercalls.xen.console import XenGuestConsole
from hypercalls.xen.domain_builder import DomainBuilder
from hypercalls.xen.store import XenXenStore
from hypercalls.xen.xc import XcHandle, failed_nonzero

UINT32_MAX = 0xFFFFFFFF
CONSOLE_CHUNK = 16384  # what xl dmesg reads per xc_readconsolering call
EVTCHN_SCAN_LIMIT = 1 << 17  # more ports than the FIFO ABI allows; a guard, not a limit we expect


class XenHypervisor(Hypervisor):
    """One ``xc_interface`` plus (on first use) one xenstore connection."""

    kind = "xen"

    def __init__(self, module: ModuleType) -> None:
        self._module = module
        self.ffi = module.ffi
        self.lib = module.lib
        self.xc = XcHandle(module)
        saverestore.register(module)  # before any libxenguest call can report progress
        self._xenstore: XenXenStore | None = None
        self._xs_lock = threading.Lock()
        self._physcaps: int | None = None

    # -- the host -------------------------------------------------------------------------------
    def _physinfo_raw(self):
        info = self.ffi.new("xc_physinfo_t *")
        self.xc.call("xc_physinfo", self.lib.xc_physinfo, self.xc.xch, info, failed=failed_nonzero)
        self._physcaps = info.capabilities
        return info

    def _version_string(self, op: str, cmd: int, ctype: str) -> str:
        buffer = self.ffi.new(ctype)
        self.xc.call(op, self.lib.xc_version, self.xc.xch, cmd, buffer)
        return self.ffi.string(buffer).decode(errors="replace")

    def physinfo(self) -> PhysInfo:
        lib = self.lib
        info = self._physinfo_raw()
        version = self.xc.call("xc_version(XENVER_version)", lib.xc_version, self.xc.xch, lib.XENVER_version,
                               self.ffi.NULL)
        extra = self._version_string("xc_version(XENVER_extraversion)", lib.XENVER_extraversion, "xen_extraversion_t")
        capabilities = self._version_string(
            "xc_version(XENVER_capabilities)", lib.XENVER_capabilities, "xen_capabilities_info_t"
        )
        caps = info.capabilities
        virt_caps = tuple(
            name
            for name, bit in (
                ("pv", lib.XEN_SYSCTL_PHYSCAP_pv),
                ("hvm", lib.XEN_SYSCTL_PHYSCAP_hvm),
                ("hap", lib.XEN_SYSCTL_PHYSCAP_hap),
                ("shadow", lib.XEN_SYSCTL_PHYSCAP_shadow),
            )
            if caps & bit
        )
        return PhysInfo(
            xen_version=XenVersion(version >> 16, version & 0xFFFF, extra),
            nr_cpus=info.nr_cpus,
            threads_per_core=info.threads_per_core,
            cores_per_socket=info.cores_per_socket,
            cpu_khz=info.cpu_khz,
            total_pages=info.total_pages,
            free_pages=info.free_pages,
            virt_caps=virt_caps,
            capabilities=capabilities.strip(),
        )

    def dmesg(self, clear: bool = False) -> str:
        # Incremental reads from index 0, as libxl_xen_console_read_line: the whole ring, in pieces.
        buffer = self.ffi.new("char[]", CONSOLE_CHUNK)
        count = self.ffi.new("unsigned int *")
        index = self.ffi.new("uint32_t *", 0)
        chunks: list[bytes] = []
        for _ in range(4096):
            count[0] = CONSOLE_CHUNK
            self.xc.call("xc_readconsolering", self.lib.xc_readconsolering, self.xc.xch, buffer, count,
                         1 if clear else 0, 1, index, failed=failed_nonzero)
            if count[0] == 0:
                break
            chunks.append(bytes(self.ffi.buffer(buffer, count[0])))
        return b"".join(chunks).decode(errors="replace")

    # -- domains --------------------------------------------------------------------------------
    def _host_caps(self) -> int:
        if self._physcaps is None:
            self._physinfo_raw()
        assert self._physcaps is not None
        return self._physcaps

    def _createdomain_config(self, spec: DomainCreateSpec):
        """struct xen_domctl_createdomain as libxl__domain_make and libxl__arch_domain_prepare_config fill it."""
        lib = self.lib
        config = self.ffi.new("struct xen_domctl_createdomain *")
        config.ssidref = 0
        self.ffi.memmove(config.handle, uuid_module.UUID(spec.uuid).bytes, 16)
        caps = self._host_caps()
        flags = 0
        if spec.guest_type != GuestType.PV:
            flags |= lib.XEN_DOMCTL_CDF_hvm
            # libxl turns hap off where the host has none rather than failing the create.
            if spec.hap and caps & lib.XEN_SYSCTL_PHYSCAP_hap:
                flags |= lib.XEN_DOMCTL_CDF_hap
        config.flags = flags
        config.max_vcpus = spec.max_vcpus
        config.max_evtchn_port = UINT32_MAX if spec.max_evtchn_port < 0 else spec.max_evtchn_port
        config.max_grant_frames = spec.max_grant_frames
        config.max_maptrack_frames = spec.max_maptrack_frames
        # max_grant_version defaults to the highest the host offers (libxl 4.17).
        if caps & lib.XEN_SYSCTL_PHYSCAP_gnttab_v2:
            grant_version = 2
        elif caps & lib.XEN_SYSCTL_PHYSCAP_gnttab_v1:
            grant_version = 1
        else:
            grant_version = 0
        config.grant_opts = grant_version & lib.XEN_DOMCTL_GRANT_version_mask
        config.vmtrace_size = 0
        config.cpupool_id = spec.cpupool
        if spec.guest_type == GuestType.HVM:
            # Everything but vPCI, as libxl: Xen 4.17 accepts no other set for an HVM domU
            # (emulation_flags_ok; USE_PIRQ included, which is what XEN_X86_EMU_ALL has).
            config.arch.emulation_flags = lib.XEN_X86_EMU_ALL & ~lib.XEN_X86_EMU_VPCI
        elif spec.guest_type == GuestType.PVH:
            config.arch.emulation_flags = lib.XEN_X86_EMU_LAPIC
        else:
            config.arch.emulation_flags = 0
        config.arch.misc_flags = 0
        return config

    def domain_create(self, spec: DomainCreateSpec) -> int:
        config = self._createdomain_config(spec)
        domid = self.ffi.new("uint32_t *", 0)  # 0: let Xen choose
        self.xc.call("xc_domain_create", self.lib.xc_domain_create, self.xc.xch, domid, config, failed=failed_nonzero)
        new = int(domid[0])
        # In 4.17 createdomain only sizes the vcpu array; XEN_DOMCTL_max_vcpus creates the vcpus
        # (libxl__build_pre does it).  Done here so that pinning and getinfo see them at once.
        try:
            self.xc.call("xc_domain_max_vcpus", self.lib.xc_domain_max_vcpus, self.xc.xch, new, spec.max_vcpus,
                         domid=new, failed=failed_nonzero)
        except XenError:
            self._destroy_quietly(new)
            raise
        return new

    def _destroy_quietly(self, domid: int) -> None:
        try:
            self.domain_destroy(domid)
        except XenError:
            pass  # the original failure is the one to report

    def domain_destroy(self, domid: int) -> None:
        self.xc.call("xc_domain_destroy", self.lib.xc_domain_destroy, self.xc.xch, domid, domid=domid,
                     failed=failed_nonzero)

    def domain_dumpcore(self, domid: int, path: str) -> None:
        self.xc.call("xc_domain_dumpcore", self.lib.xc_domain_dumpcore, self.xc.xch, domid, os.fsencode(path),
                     domid=domid, failed=failed_nonzero)

    def domain_save(self, domid: int, fd: int, suspend: Callable[[], bool],
                    switch_logdirty: Callable[[bool], None] | None = None, live: bool = False,
                    progress: Callable[[str, int, int], None] | None = None) -> None:
        saverestore.save(self.xc, domid, fd, suspend, switch_logdirty, live, progress)

    def domain_restore(self, domid: int, fd: int, spec: BuildSpec) -> BuildResult:
        max_vcpus = self.domain_getinfo(domid).max_vcpu_id + 1
        DomainBuilder(self.xc).prepare(domid, spec, max_vcpus, restoring=True)
        store_mfn, console_mfn = saverestore.restore(self.xc, domid, fd, spec.store_evtchn, spec.console_evtchn)
        return BuildResult(store_mfn, console_mfn, spec.store_evtchn, spec.console_evtchn)

    def domain_resume(self, domid: int) -> None:
        # libxl's domain_resume_done: the hypervisor, then xenstored
        saverestore.resume(self.xc, domid)
        self.xenstore().resume_domain(domid)

    def domain_pause(self, domid: int) -> None:
        self.xc.call("xc_domain_pause", self.lib.xc_domain_pause, self.xc.xch, domid, domid=domid,
                     failed=failed_nonzero)

    def domain_unpause(self, domid: int) -> None:
        self.xc.call("xc_domain_unpause", self.lib.xc_domain_unpause, self.xc.xch, domid, domid=domid,
                     failed=failed_nonzero)

    def domain_shutdown(self, domid: int, reason: ShutdownReason) -> None:
        self.xc.call("xc_domain_shutdown", self.lib.xc_domain_shutdown, self.xc.xch, domid, int(reason),
                     domid=domid, failed=failed_nonzero)

    def domain_send_trigger(self, domid: int, trigger: Trigger) -> None:
        code = {Trigger.POWER: self.lib.XEN_DOMCTL_SENDTRIGGER_POWER}[trigger]
        self.xc.call(f"xc_domain_send_trigger({trigger.value})", self.lib.xc_domain_send_trigger, self.xc.xch,
                     domid, code, 0, domid=domid, failed=failed_nonzero)

    def hvm_pv_callback_set(self, domid: int) -> bool:
        value = self.ffi.new("uint64_t *")
        self.xc.call("xc_hvm_param_get(CALLBACK_IRQ)", self.lib.xc_hvm_param_get, self.xc.xch, domid,
                     self.lib.HVM_PARAM_CALLBACK_IRQ, value, domid=domid, failed=failed_nonzero)
        return value[0] != 0

    def _to_info(self, raw) -> DomainInfo:
        lib = self.lib
        flags = raw.flags
        shutdown = bool(flags & lib.XEN_DOMINF_shutdown)
        reason = None
        if shutdown:
            code = (flags >> lib.XEN_DOMINF_shutdownshift) & lib.XEN_DOMINF_shutdownmask
            try:
                reason = ShutdownReason(code)
            except ValueError:
                reason = None
        if flags & lib.XEN_DOMINF_hvm_guest:
            # PVH is an HVM container whose only emulated device is the local APIC (as created above
            # and by libxl); anything with more emulation is a full HVM guest.
            emulation = raw.arch_config.emulation_flags
            guest_type = GuestType.PVH if emulation & ~lib.XEN_X86_EMU_LAPIC == 0 else GuestType.HVM
        else:
            guest_type = GuestType.PV
        max_vcpu_id = raw.max_vcpu_id
        return DomainInfo(
            domid=int(raw.domain),
            uuid=str(uuid_module.UUID(bytes=bytes(self.ffi.buffer(raw.handle, 16)))),
            guest_type=guest_type,
            paused=bool(flags & lib.XEN_DOMINF_paused),
            blocked=bool(flags & lib.XEN_DOMINF_blocked),
            running=bool(flags & lib.XEN_DOMINF_running),
            shutdown=shutdown,
            dying=bool(flags & lib.XEN_DOMINF_dying),
            crashed=shutdown and reason == ShutdownReason.CRASH,
            shutdown_reason=reason,
            tot_pages=int(raw.tot_pages),
            max_pages=int(raw.max_pages),
            online_vcpus=int(raw.nr_online_vcpus),
            max_vcpu_id=-1 if max_vcpu_id == UINT32_MAX else int(max_vcpu_id),
            cpu_time_ns=int(raw.cpu_time),
            hap=bool(flags & lib.XEN_DOMINF_hap),
            cpupool=int(raw.cpupool),
        )

    def domain_getinfo(self, domid: int) -> DomainInfo:
        raw = self.ffi.new("xc_domaininfo_t[1]")
        # getinfolist returns the first domain >= domid: another domain's answer means "no such".
        n = self.xc.call("xc_domain_getinfolist", self.lib.xc_domain_getinfolist, self.xc.xch, domid, 1, raw,
                         domid=domid)
        if n != 1 or raw[0].domain != domid:
            raise XenError("xc_domain_getinfolist", errno.ESRCH, domid, "no such domain")
        return self._to_info(raw[0])

    def domain_list(self) -> list[DomainInfo]:
        batch = 256
        raw = self.ffi.new("xc_domaininfo_t[]", batch)
        result: list[DomainInfo] = []
        first = 0
        while True:
            n = self.xc.call("xc_domain_getinfolist", self.lib.xc_domain_getinfolist, self.xc.xch, first, batch, raw)
            result += [self._to_info(raw[i]) for i in range(n)]
            if n < batch:
                return result
            first = int(raw[n - 1].domain) + 1

    def domain_setmaxmem(self, domid: int, max_kib: int) -> None:
        self.xc.call("xc_domain_setmaxmem", self.lib.xc_domain_setmaxmem, self.xc.xch, domid, max_kib, domid=domid,
                     failed=failed_nonzero)

    def domain_set_target(self, domid: int, target_kib: int) -> None:
        """PV and PVH guests balloon to memory/target in xenstore (written by the caller): there is
        no hypercall to make.  Only an HVM guest built with populate-on-demand also needs Xen told
        (xc_domain_set_pod_target, as libxl_set_memory_target); HVM builds come with issue 5."""
        info = self.domain_getinfo(domid)
        if info.guest_type == GuestType.HVM:
            null = self.ffi.NULL
            self.xc.call("xc_domain_set_pod_target", self.lib.xc_domain_set_pod_target, self.xc.xch, domid,
                         target_kib // 4, null, null, null, domid=domid, failed=failed_nonzero)

    def domain_set_online_vcpus(self, domid: int, vcpus: int) -> None:
        """No hypercall: a real guest brings vcpus up and down itself, following cpu/N/availability
        in xenstore (written by the caller), as with xl vcpu-set."""
        self.domain_getinfo(domid)  # still, a missing domain is an error (ESRCH) like everywhere else

    # -- vcpu placement and scheduling ---------------------------------------------------------
    def _max_cpus(self) -> int:
        return int(self.xc.call("xc_get_max_cpus", self.lib.xc_get_max_cpus, self.xc.xch, failed=lambda n: n <= 0))

    def _cpumap(self, cpus: frozenset[int] | None, domid: int, max_cpus: int):
        """A cpumap of ``cpus`` (an empty one, for Xen to fill in, if None); the caller frees it."""
        ffi, lib = self.ffi, self.lib
        if cpus is not None:
            outside = sorted(c for c in cpus if c < 0 or c >= max_cpus)
            if outside or not cpus:
                raise XenError("xc_vcpu_setaffinity", errno.EINVAL, domid,
                               f"cpus {outside or '(none)'} are not among the host's 0..{max_cpus - 1}")
        cpumap = self.xc.call("xc_cpumap_alloc", lib.xc_cpumap_alloc, self.xc.xch, failed=lambda p: p == ffi.NULL)
        for cpu in cpus or ():
            lib.xc_cpumap_setcpu(cpu, cpumap)
        return cpumap

    def vcpu_setaffinity(self, domid: int, vcpu: int, cpus: frozenset[int] | None,
                         soft: frozenset[int] | None = None) -> None:
        ffi, lib = self.ffi, self.lib
        max_cpus = self._max_cpus()
        flags = (lib.XEN_VCPUAFFINITY_HARD if cpus is not None else 0) | (lib.XEN_VCPUAFFINITY_SOFT if soft is not None else 0)
        if not flags:
            return
        hard_map = self._cpumap(cpus, domid, max_cpus) if cpus is not None else ffi.NULL
        try:
            soft_map = self._cpumap(soft, domid, max_cpus) if soft is not None else ffi.NULL
            try:
                self.xc.call("xc_vcpu_setaffinity", lib.xc_vcpu_setaffinity, self.xc.xch, domid, vcpu, hard_map, soft_map,
                             flags, domid=domid, failed=failed_nonzero)
            finally:
                if soft_map != ffi.NULL:
                    lib.free(soft_map)
        finally:
            if hard_map != ffi.NULL:
                lib.free(hard_map)

    def vcpu_info(self, domid: int) -> list[VcpuInfo]:
        ffi, lib = self.ffi, self.lib
        max_cpus = self._max_cpus()
        last = self.domain_getinfo(domid).max_vcpu_id
        result = []
        raw = ffi.new("xc_vcpuinfo_t *")
        hard = self._cpumap(None, domid, max_cpus)
        soft = self._cpumap(None, domid, max_cpus)
        try:
            for vcpu in range(last + 1):
                self.xc.call("xc_vcpu_getinfo", lib.xc_vcpu_getinfo, self.xc.xch, domid, vcpu, raw, domid=domid,
                             failed=failed_nonzero)
                self.xc.call("xc_vcpu_getaffinity", lib.xc_vcpu_getaffinity, self.xc.xch, domid, vcpu, hard, soft,
                             lib.XEN_VCPUAFFINITY_HARD | lib.XEN_VCPUAFFINITY_SOFT, domid=domid, failed=failed_nonzero)
                result.append(VcpuInfo(
                    vcpu=vcpu, online=bool(raw.online), blocked=bool(raw.blocked), running=bool(raw.running),
                    cpu=int(raw.cpu), cpu_time_ns=int(raw.cpu_time),
                    hard_affinity=frozenset(c for c in range(max_cpus) if lib.xc_cpumap_testcpu(c, hard)),
                    soft_affinity=frozenset(c for c in range(max_cpus) if lib.xc_cpumap_testcpu(c, soft)),
                ))
        finally:
            lib.free(hard)
            lib.free(soft)
        return result

    def _cpus_in(self, cpumap, max_cpus: int) -> frozenset[int]:
        return frozenset(c for c in range(max_cpus) if self.lib.xc_cpumap_testcpu(c, cpumap))

    def cpupool_list(self) -> list[CpuPoolInfo]:
        ffi, lib = self.ffi, self.lib
        max_cpus = self._max_cpus()
        pools: list[CpuPoolInfo] = []
        poolid = 0
        while True:
            # getinfo answers the first pool with an id >= poolid; NULL (ENOENT) after the last.
            info = self.xc.call("xc_cpupool_getinfo", lib.xc_cpupool_getinfo, self.xc.xch, poolid, failed=lambda p: False)
            if info == ffi.NULL:
                return pools
            try:
                pools.append(CpuPoolInfo(int(info.cpupool_id), SCHEDULERS.get(int(info.sched_id), str(info.sched_id)),
                                         self._cpus_in(info.cpumap, max_cpus), int(info.n_dom)))
                poolid = int(info.cpupool_id) + 1
            finally:
                lib.xc_cpupool_infofree(self.xc.xch, info)

    def cpupool_free_cpus(self) -> frozenset[int]:
        ffi, lib = self.ffi, self.lib
        cpumap = self.xc.call("xc_cpupool_freeinfo", lib.xc_cpupool_freeinfo, self.xc.xch, failed=lambda p: p == ffi.NULL)
        try:
            return self._cpus_in(cpumap, self._max_cpus())
        finally:
            lib.free(cpumap)

    def cpupool_create(self, scheduler: str) -> int:
        ids = {name: sched_id for sched_id, name in SCHEDULERS.items()}
        if scheduler not in ids:
            raise XenError("xc_cpupool_create", errno.EINVAL, None, f"no scheduler {scheduler!r}; one of {', '.join(ids)}")
        poolid = self.ffi.new("uint32_t *", self.lib.XC_CPUPOOL_POOLID_ANY)
        self.xc.call("xc_cpupool_create", self.lib.xc_cpupool_create, self.xc.xch, poolid, ids[scheduler], failed=failed_nonzero)
        return int(poolid[0])

    def cpupool_destroy(self, poolid: int) -> None:
        self.xc.call("xc_cpupool_destroy", self.lib.xc_cpupool_destroy, self.xc.xch, poolid, failed=failed_nonzero,
                     detail=f"cpupool {poolid}")

    def cpupool_add_cpu(self, poolid: int, cpu: int) -> None:
        self.xc.call("xc_cpupool_addcpu", self.lib.xc_cpupool_addcpu, self.xc.xch, poolid, cpu, failed=failed_nonzero,
                     detail=f"cpu {cpu} to cpupool {poolid}")

    def cpupool_remove_cpu(self, poolid: int, cpu: int) -> None:
        self.xc.call("xc_cpupool_removecpu", self.lib.xc_cpupool_removecpu, self.xc.xch, poolid, cpu,
                     failed=failed_nonzero, detail=f"cpu {cpu} from cpupool {poolid}")

    def cpupool_move_domain(self, poolid: int, domid: int) -> None:
        self.xc.call("xc_cpupool_movedomain", self.lib.xc_cpupool_movedomain, self.xc.xch, poolid, domid, domid=domid,
                     failed=failed_nonzero, detail=f"to cpupool {poolid}")

    def _scheduler_of(self, domid: int) -> str:
        """The scheduler of the cpupool the domain is in (xl sched-* asks the same)."""
        return self._pool_scheduler(self.domain_getinfo(domid).cpupool, domid)

    def _pool_scheduler(self, poolid: int, domid: int | None = None) -> str:
        ffi, lib = self.ffi, self.lib
        info = self.xc.call("xc_cpupool_getinfo", lib.xc_cpupool_getinfo, self.xc.xch, poolid, domid=domid,
                            failed=lambda p: p == ffi.NULL)
        try:
            if info.cpupool_id != poolid:  # getinfo answers with the next pool up
                raise XenError("xc_cpupool_getinfo", errno.ESRCH if domid is not None else errno.ENOENT, domid,
                               f"cpupool {poolid} is gone" if domid is not None else f"no cpupool {poolid}")
            sched_id = int(info.sched_id)
        finally:
            lib.xc_cpupool_infofree(self.xc.xch, info)
        return SCHEDULERS.get(sched_id, f"scheduler {sched_id}")

    def _credit_calls(self, scheduler: str):
        lib = self.lib
        if scheduler == "credit":
            return "struct xen_domctl_sched_credit *", lib.xc_sched_credit_domain_get, lib.xc_sched_credit_domain_set
        return "struct xen_domctl_sched_credit2 *", lib.xc_sched_credit2_domain_get, lib.xc_sched_credit2_domain_set

    def sched_get(self, domid: int) -> SchedParams:
        scheduler = self._scheduler_of(domid)
        if scheduler not in WEIGHTED_SCHEDULERS:
            return SchedParams(scheduler, None, None)
        ctype, get, _ = self._credit_calls(scheduler)
        params = self.ffi.new(ctype)
        self.xc.call(f"xc_sched_{scheduler}_domain_get", get, self.xc.xch, domid, params, domid=domid, failed=failed_nonzero)
        return SchedParams(scheduler, int(params.weight), int(params.cap))

    def sched_set(self, domid: int, weight: int | None = None, cap: int | None = None) -> None:
        scheduler = self._scheduler_of(domid)
        if scheduler not in WEIGHTED_SCHEDULERS:
            raise XenError("sched_set", errno.EINVAL, domid, f"its cpupool runs the {scheduler} scheduler, which has no weight or cap")
        ctype, get, set_ = self._credit_calls(scheduler)
        params = self.ffi.new(ctype)
        # Both are written at once: read what is there, so that None leaves it so.
        self.xc.call(f"xc_sched_{scheduler}_domain_get", get, self.xc.xch, domid, params, domid=domid, failed=failed_nonzero)
        if weight is not None:
            params.weight = weight
        if cap is not None:
            params.cap = cap
        self.xc.call(f"xc_sched_{scheduler}_domain_set", set_, self.xc.xch, domid, params, domid=domid, failed=failed_nonzero)

    def _pool_params(self, poolid: int) -> tuple[str, Any, Callable[..., int]]:
        """The pool's scheduler, a struct of its parameters as Xen has them, and their set call."""
        scheduler = self._pool_scheduler(poolid)
        if scheduler not in WEIGHTED_SCHEDULERS:
            raise XenError("xc_sched_params_get", errno.EINVAL, None,
                           f"cpupool {poolid} runs the {scheduler} scheduler, which has no such parameters")
        lib = self.lib
        get, set_ = ((lib.xc_sched_credit_params_get, lib.xc_sched_credit_params_set) if scheduler == "credit"
                     else (lib.xc_sched_credit2_params_get, lib.xc_sched_credit2_params_set))
        params = self.ffi.new(f"struct xen_sysctl_{scheduler}_schedule *")
        self.xc.call(f"xc_sched_{scheduler}_params_get", get, self.xc.xch, poolid, params, failed=failed_nonzero)
        return scheduler, params, set_

    @staticmethod
    def _pool_sched_params(scheduler: str, params: Any) -> PoolSchedParams:
        if scheduler == "credit":
            return PoolSchedParams(scheduler, int(params.ratelimit_us), int(params.tslice_ms), int(params.vcpu_migr_delay_us))
        return PoolSchedParams(scheduler, int(params.ratelimit_us))

    def pool_sched_get(self, poolid: int) -> PoolSchedParams:
        scheduler, params, _ = self._pool_params(poolid)
        return self._pool_sched_params(scheduler, params)

    def pool_sched_set(self, poolid: int, ratelimit_us: int | None = None, tslice_ms: int | None = None,
                       migration_delay_us: int | None = None) -> PoolSchedParams:
        scheduler, params, set_ = self._pool_params(poolid)  # one call sets them all: start from Xen's
        if scheduler != "credit" and (tslice_ms is not None or migration_delay_us is not None):
            raise XenError(f"xc_sched_{scheduler}_params_set", errno.EINVAL, None,
                           f"cpupool {poolid}'s {scheduler} scheduler has no time slice or migration delay")
        if ratelimit_us is not None:
            params.ratelimit_us = ratelimit_us
        if tslice_ms is not None:
            params.tslice_ms = tslice_ms
        if migration_delay_us is not None:
            params.vcpu_migr_delay_us = migration_delay_us
        self.xc.call(f"xc_sched_{scheduler}_params_set", set_, self.xc.xch, poolid, params, failed=failed_nonzero)
        return self._pool_sched_params(scheduler, params)

    def domain_build(self, domid: int, spec: BuildSpec) -> BuildResult:
        info = self.domain_getinfo(domid)
        return DomainBuilder(self.xc).build(domid, spec, max_vcpus=info.max_vcpu_id + 1)

    # -- event channels -------------------------------------------------------------------------
    def evtchn_alloc_unbound(self, domid: int, remote_domid: int) -> int:
        return int(self.xc.call("xc_evtchn_alloc_unbound", self.lib.xc_evtchn_alloc_unbound, self.xc.xch, domid,
                                remote_domid, domid=domid))

    def evtchn_close(self, domid: int, port: int) -> None:
        """Nothing Xen offers closes one port of another domain: EVTCHNOP_close acts on the caller's
        own ports, and EVTCHNOP_reset (xc_evtchn_reset) closes all of the domain's ports at once.
        A new guest's unbound ports go away with the domain, which is how creation's rollback ends,
        so this only checks that the port is one the domain has (ESRCH/EINVAL otherwise)."""
        status = self.ffi.new("xc_evtchn_status_t *")
        status.dom = domid
        status.port = port
        self.xc.call("xc_evtchn_status", self.lib.xc_evtchn_status, self.xc.xch, status, domid=domid,
                     failed=failed_nonzero)

    def evtchn_list(self, domid: int) -> list[int]:
        lib = self.lib
        status = self.ffi.new("xc_evtchn_status_t *")
        ports: list[int] = []
        for port in range(1, EVTCHN_SCAN_LIMIT):
            status.dom = domid
            status.port = port
            try:
                self.xc.call("xc_evtchn_status", lib.xc_evtchn_status, self.xc.xch, status, domid=domid,
                             failed=failed_nonzero)
            except XenError as e:
                if e.errno == errno.EINVAL:  # past the last port the domain has allocated
                    break
                raise
            if status.status != lib.EVTCHNSTAT_closed:
                ports.append(port)
        return ports

    # -- xenstore -------------------------------------------------------------------------------
    def xenstore(self) -> XenXenStore:
        with self._xs_lock:
            if self._xenstore is None:
                self._xenstore = XenXenStore(self._module)
            return self._xenstore

    def close(self) -> None:
        with self._xs_lock:
            if self._xenstore is not None:
                self._xenstore.close()
                self._xenstore = None
        self.xc.close()

    def reopen(self) -> XenHypervisor:
        return XenHypervisor(self._module)

    def open_guest_console(self, domid: int, ring_ref: int, remote_port: int) -> GuestConsole:
        return XenGuestConsole(domid, ring_ref, remote_port)
