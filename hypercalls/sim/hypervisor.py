"""The simulated hypervisor: libxenctrl/libxenguest's calls on a host kept in a state directory.

It keeps the books a real Xen keeps (domains, their memory and vcpus, event channels, the console
ring) and refuses what a real Xen refuses, with the same errno: ESRCH for a missing domain, ENOMEM
when memory runs out, EINVAL for a file that is not a kernel or a vcpu that does not exist.  It does
not run guest code: a simulated guest (``guest``) answers the toolstack's xenstore requests.

For tests, :meth:`SimHypervisor.inject_failure` makes the next calls of an operation fail, before
they do anything, in whichever process makes them (the pending failures live in the shared state).
"""

from __future__ import annotations

import errno
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from pathlib import Path

from hypercalls.errors import XenError
from hypercalls.interface import (
    MIGRATION_DELAY_US_MAX,
    PAGE_KIB,
    RATELIMIT_US,
    SCHEDULERS,
    TSLICE_MS,
    WEIGHTED_SCHEDULERS,
    BuildResult,
    BuildSpec,
    CpuPoolInfo,
    DomainCreateSpec,
    DomainInfo,
    GuestType,
    Hypervisor,
    PhysInfo,
    PoolSchedParams,
    SchedParams,
    ShutdownReason,
    Trigger,
    VcpuInfo,
    XenStore,
)
from hypercalls.sim import guest
from hypercalls.sim.images import check_exists, check_kernel
from hypercalls.sim.state import (
    CAPABILITIES,
    CPU_KHZ,
    DEFAULT_CPUS,
    DEFAULT_MEMORY_MIB,
    VIRT_CAPS,
    XEN_VERSION,
    Domain,
    HostState,
    StateStore,
    fresh_host,
)
from hypercalls.sim.xenstore import RELEASE_DOMAIN, SimXenStore

MAX_EVTCHN_PORT = 4095  # the 2-level ABI's limit for a 64-bit guest
# Where the builder puts the xenstore and console rings for HVM and PVH guests: the special pages
# just below the end of the special region (X86_HVM_END_SPECIAL_REGION, 0xff000).
HVM_STORE_PFN = 0xFEFFB
HVM_CONSOLE_PFN = 0xFEFFC


class SimHypervisor(Hypervisor):
    """A simulated Xen 4.17 host whose state lives in the directory ``path``.

    Every object opened on the same ``path`` (in any process) works on the same host.  The
    hardware figures are used only when ``path`` holds no host yet.
    """

    kind = "sim"
    # The simulated guests print into the simulator (guest_console_output); no ring to serve.
    needs_console_backend = False
    runs_device_models = False
    has_kernel_backends = False

    def reopen(self) -> SimHypervisor:
        return SimHypervisor(self.path)

    def __init__(self, path: Path, memory_mib: int = DEFAULT_MEMORY_MIB, nr_cpus: int = DEFAULT_CPUS) -> None:
        self.path = Path(path)
        self._store = StateStore(self.path, lambda: fresh_host(memory_mib, nr_cpus))
        self._xenstore: SimXenStore | None = None
        self._guest_connections: list[SimXenStore] = []
        self._closed = False
        with self._store.locked():
            pass  # make the host exist now, so that every process sees the same one

    def __repr__(self) -> str:
        return f"<SimHypervisor {self.path}>"

    # -- plumbing ---------------------------------------------------------------------------------

    @contextmanager
    def _op(self, op: str, domid: int | None = None, write: bool = True) -> Iterator[HostState]:
        """One hypercall: the lock, an injected failure if one is pending, then the state.

        With ``write``, the state is saved when the body finishes; a body that raises changes nothing
        (every operation checks everything before it changes anything).
        """
        if self._closed:
            raise XenError(op, errno.EBADF, domid, "the hypervisor handle is closed")
        with self._store.locked() as session:
            failure = session.state.take_failure(op)
            if failure is not None:
                session.save()
                raise XenError(op, failure, domid, "injected failure")
            yield session.state
            if write:
                session.save()

    def inject_failure(self, op: str, errno: int, times: int = 1) -> None:
        """Make the next ``times`` calls of ``op`` fail with ``errno`` before doing anything.

        ``op`` is a method name ("domain_build") or, for xenstore, "xenstore." and the method name
        ("xenstore.transaction_end").  The failure is pending in the shared state, so it strikes
        whichever process calls next.  ``times`` 0 cancels a pending failure.
        """
        with self._store.locked() as session:
            if times <= 0:
                session.state.failures.pop(op, None)
            else:
                session.state.failures[op] = (errno, times)
            session.save()

    # -- the host ---------------------------------------------------------------------------------

    def physinfo(self) -> PhysInfo:
        with self._op("physinfo", write=False) as state:
            return PhysInfo(
                xen_version=XEN_VERSION,
                nr_cpus=state.nr_cpus,
                threads_per_core=1,
                cores_per_socket=state.nr_cpus,
                cpu_khz=CPU_KHZ,
                total_pages=state.total_pages,
                free_pages=state.free_pages(),
                virt_caps=VIRT_CAPS,
                capabilities=CAPABILITIES,
            )

    def dmesg(self, clear: bool = False) -> str:
        with self._op("dmesg", write=clear) as state:
            text = "".join(f"{line}\n" for line in state.dmesg)
            if clear:
                state.dmesg.clear()
            return text

    # -- domains ----------------------------------------------------------------------------------

    def domain_create(self, spec: DomainCreateSpec) -> int:
        with self._op("domain_create") as state:
            if spec.max_vcpus < 1 or spec.max_vcpus > 128:
                raise XenError("domain_create", errno.EINVAL, None, f"max_vcpus {spec.max_vcpus} is outside 1..128")
            guest_type = GuestType(spec.guest_type)
            if spec.cpupool not in state.pools:
                raise XenError("domain_create", errno.ENOENT, None, f"no cpupool {spec.cpupool}")
            if guest_type != GuestType.PV and "hvm" not in VIRT_CAPS:
                raise XenError("domain_create", errno.EOPNOTSUPP, None, "this host has no hardware virtualisation")
            domid = state.next_domid
            state.next_domid += 1
            state.domains[domid] = Domain(
                domid=domid,
                uuid=str(spec.uuid).lower(),
                guest_type=guest_type,
                max_vcpus=spec.max_vcpus,
                online_vcpus=spec.max_vcpus,
                max_evtchn_port=spec.max_evtchn_port,
                hap=guest_type != GuestType.PV and spec.hap and "hap" in VIRT_CAPS,
                cpupool=spec.cpupool,
            )
            state.log(f"d{domid}: created ({guest_type.value}, {spec.max_vcpus} vcpus, uuid {spec.uuid})")
            return domid

    def domain_destroy(self, domid: int) -> None:
        with self._op("domain_destroy", domid) as state:
            if domid == 0:
                raise XenError("domain_destroy", errno.EPERM, domid, "dom0 cannot be destroyed")
            dom = state.domain(domid, "domain_destroy")
            del state.domains[domid]  # its memory and event channels go with it
            state.introduced.pop(domid, None)
            state.log(f"d{domid}: destroyed, {dom.tot_pages * PAGE_KIB} KiB freed")
            state.log_change(RELEASE_DOMAIN)

    def domain_pause(self, domid: int) -> None:
        with self._op("domain_pause", domid) as state:
            dom = state.domain(domid, "domain_pause")
            if domid == 0:
                raise XenError("domain_pause", errno.EINVAL, domid, "dom0 cannot pause itself")
            state.stop_clock(dom, time.time_ns())
            dom.paused = True

    def domain_unpause(self, domid: int) -> None:
        with self._op("domain_unpause", domid) as state:
            dom = state.domain(domid, "domain_unpause")
            if dom.is_shutdown:
                raise XenError("domain_unpause", errno.EINVAL, domid, "the domain is shut down")
            if not dom.paused:
                return
            dom.paused = False
            state.start_clock(dom, time.time_ns())
            if not dom.built:
                # Nothing loaded: the vcpu faults on its first instruction.
                state.log(f"d{domid}v0: triple fault, no guest loaded: crashing the domain")
                state.shut_down(dom, ShutdownReason.CRASH)
                return
            guest.after_unpause(state, dom)

    def domain_shutdown(self, domid: int, reason: ShutdownReason) -> None:
        with self._op("domain_shutdown", domid) as state:
            dom = state.domain(domid, "domain_shutdown")
            if domid == 0:
                raise XenError("domain_shutdown", errno.EINVAL, domid, "dom0 cannot be shut down from here")
            state.shut_down(dom, ShutdownReason(reason))

    def domain_send_trigger(self, domid: int, trigger: Trigger) -> None:
        # The simulated firmware answers the power button at once, as an ACPI OS would; only HVM
        # guests have one.
        with self._op("domain_send_trigger", domid) as state:
            dom = state.domain(domid, "domain_send_trigger")
            if dom.guest_type != GuestType.HVM:
                raise XenError("domain_send_trigger", errno.EINVAL, domid, f"a {dom.guest_type.value} guest has no ACPI buttons")
            if not dom.is_shutdown:
                state.shut_down(dom, ShutdownReason.POWEROFF)

    def hvm_pv_callback_set(self, domid: int) -> bool:
        with self._op("hvm_pv_callback_set", domid, write=False) as state:
            dom = state.domain(domid, "hvm_pv_callback_set")
            if dom.guest_type == GuestType.PV:
                raise XenError("xc_hvm_param_get", errno.EINVAL, domid, "a PV guest has no HVM params")
            return False  # simulated HVM guests have no PV drivers

    def domain_getinfo(self, domid: int) -> DomainInfo:
        with self._op("domain_getinfo", domid, write=False) as state:
            return _info(state.domain(domid, "domain_getinfo"), time.time_ns())

    def domain_list(self) -> list[DomainInfo]:
        with self._op("domain_list", write=False) as state:
            now = time.time_ns()
            return [_info(state.domains[d], now) for d in sorted(state.domains)]

    def domain_setmaxmem(self, domid: int, max_kib: int) -> None:
        with self._op("domain_setmaxmem", domid) as state:
            dom = state.domain(domid, "domain_setmaxmem")
            if max_kib < 0:
                raise XenError("domain_setmaxmem", errno.EINVAL, domid, f"{max_kib} KiB")
            dom.max_pages = max_kib // PAGE_KIB

    def domain_set_target(self, domid: int, target_kib: int) -> None:
        with self._op("domain_set_target", domid) as state:
            dom = state.domain(domid, "domain_set_target")
            if target_kib < 0:
                raise XenError("domain_set_target", errno.EINVAL, domid, f"{target_kib} KiB")
            guest.set_balloon(state, dom, target_kib)

    def domain_set_online_vcpus(self, domid: int, vcpus: int) -> None:
        with self._op("domain_set_online_vcpus", domid) as state:
            dom = state.domain(domid, "domain_set_online_vcpus")
            if not 1 <= vcpus <= dom.max_vcpus:
                raise XenError("domain_set_online_vcpus", errno.EINVAL, domid, f"{vcpus} vcpus is outside 1..{dom.max_vcpus}")
            dom.online_vcpus = vcpus

    def vcpu_setaffinity(self, domid: int, vcpu: int, cpus: frozenset[int] | None,
                         soft: frozenset[int] | None = None) -> None:
        with self._op("vcpu_setaffinity", domid) as state:
            dom = state.domain(domid, "vcpu_setaffinity")
            if not 0 <= vcpu < dom.max_vcpus:
                raise XenError("vcpu_setaffinity", errno.EINVAL, domid, f"vcpu {vcpu} does not exist")
            for wanted in (cpus, soft):
                if wanted is None:
                    continue
                if not wanted:
                    raise XenError("vcpu_setaffinity", errno.EINVAL, domid, "an empty cpu set")
                bad = sorted(c for c in wanted if not 0 <= c < state.nr_cpus)
                if bad:
                    raise XenError("vcpu_setaffinity", errno.EINVAL, domid, f"no cpu {bad[0]} on this host (0..{state.nr_cpus - 1})")
            if cpus is not None:
                dom.affinity[vcpu] = sorted(cpus)
            if soft is not None:
                dom.soft_affinity[vcpu] = sorted(soft)

    def vcpu_info(self, domid: int) -> list[VcpuInfo]:
        with self._op("vcpu_info", domid) as state:
            dom = state.domain(domid, "vcpu_info")
            every = list(range(state.nr_cpus))
            now = time.time_ns()
            result = []
            for vcpu in range(dom.max_vcpus):
                hard = dom.affinity.get(vcpu, every)
                online = vcpu < dom.online_vcpus
                result.append(VcpuInfo(
                    vcpu=vcpu, online=online, blocked=online and not dom.is_running, running=online and dom.is_running,
                    cpu=hard[vcpu % len(hard)], cpu_time_ns=dom.cpu_time(now) // max(1, dom.online_vcpus) if online else 0,
                    hard_affinity=frozenset(hard), soft_affinity=frozenset(dom.soft_affinity.get(vcpu, every)),
                ))
            return result

    def cpupool_list(self) -> list[CpuPoolInfo]:
        with self._op("cpupool_list") as state:
            return [CpuPoolInfo(poolid, sched, frozenset(cpus), sum(1 for d in state.domains.values() if d.cpupool == poolid))
                    for poolid, (sched, cpus) in sorted(state.pools.items())]

    def cpupool_free_cpus(self) -> frozenset[int]:
        with self._op("cpupool_free_cpus") as state:
            return frozenset(range(state.nr_cpus)) - {c for _, cpus in state.pools.values() for c in cpus}

    def cpupool_create(self, scheduler: str) -> int:
        with self._op("cpupool_create") as state:
            if scheduler not in SCHEDULERS.values():
                raise XenError("xc_cpupool_create", errno.EINVAL, None, f"no scheduler {scheduler!r}")
            poolid = max(state.pools) + 1
            state.pools[poolid] = (scheduler, [])
            return poolid

    def cpupool_destroy(self, poolid: int) -> None:
        with self._op("cpupool_destroy") as state:
            if poolid not in state.pools or poolid == 0:
                raise XenError("xc_cpupool_destroy", errno.ENOENT if poolid else errno.EBUSY, None, f"cpupool {poolid}")
            if any(d.cpupool == poolid for d in state.domains.values()):
                raise XenError("xc_cpupool_destroy", errno.EBUSY, None, f"cpupool {poolid} has domains")
            del state.pools[poolid]

    def cpupool_add_cpu(self, poolid: int, cpu: int) -> None:
        with self._op("cpupool_add_cpu") as state:
            taken = {c for _, cpus in state.pools.values() for c in cpus}
            if poolid not in state.pools or not 0 <= cpu < state.nr_cpus or cpu in taken:
                raise XenError("xc_cpupool_addcpu", errno.EBUSY if cpu in taken else errno.EINVAL, None,
                               f"cpu {cpu} to cpupool {poolid}")
            state.pools[poolid][1].append(cpu)

    def cpupool_remove_cpu(self, poolid: int, cpu: int) -> None:
        with self._op("cpupool_remove_cpu") as state:
            if poolid not in state.pools or cpu not in state.pools[poolid][1]:
                raise XenError("xc_cpupool_removecpu", errno.EINVAL, None, f"cpu {cpu} from cpupool {poolid}")
            if len(state.pools[poolid][1]) == 1 and any(d.cpupool == poolid for d in state.domains.values()):
                raise XenError("xc_cpupool_removecpu", errno.EBUSY, None, f"the last cpu of cpupool {poolid}, which has domains")
            state.pools[poolid][1].remove(cpu)

    def cpupool_move_domain(self, poolid: int, domid: int) -> None:
        with self._op("cpupool_move_domain", domid) as state:
            dom = state.domain(domid, "cpupool_move_domain")
            if poolid not in state.pools or not state.pools[poolid][1] or domid == 0:
                raise XenError("xc_cpupool_movedomain", errno.EINVAL if domid else errno.EPERM, domid, f"to cpupool {poolid}")
            dom.cpupool = poolid

    def sched_get(self, domid: int) -> SchedParams:
        with self._op("sched_get", domid) as state:
            dom = state.domain(domid, "sched_get")
            scheduler = state.pools[dom.cpupool][0]
            weighted = scheduler in WEIGHTED_SCHEDULERS
            return SchedParams(scheduler, dom.weight if weighted else None, dom.cap if weighted else None)

    def sched_set(self, domid: int, weight: int | None = None, cap: int | None = None) -> None:
        with self._op("sched_set", domid) as state:
            dom = state.domain(domid, "sched_set")
            if state.pools[dom.cpupool][0] not in WEIGHTED_SCHEDULERS:
                raise XenError("sched_set", errno.EINVAL, domid, "its cpupool's scheduler has no weight or cap")
            # Xen's credit2: a weight of 1..65535, a cap of 0 (none) up to 100 per online vcpu.
            if weight is not None and not 1 <= weight <= 65535:
                raise XenError("xc_sched_credit2_domain_set", errno.EINVAL, domid, f"weight {weight} is outside 1..65535")
            if cap is not None and not 0 <= cap <= 100 * dom.online_vcpus:
                raise XenError("xc_sched_credit2_domain_set", errno.EINVAL, domid, f"cap {cap} is outside 0..{100 * dom.online_vcpus}")
            if weight is not None:
                dom.weight = weight
            if cap is not None:
                dom.cap = cap

    def pool_sched_get(self, poolid: int) -> PoolSchedParams:
        with self._op("pool_sched_get") as state:
            return _pool_sched_params(state, poolid, "xc_sched_params_get")

    def pool_sched_set(self, poolid: int, ratelimit_us: int | None = None, tslice_ms: int | None = None,
                       migration_delay_us: int | None = None) -> PoolSchedParams:
        with self._op("pool_sched_set") as state:
            now = _pool_sched_params(state, poolid, "xc_sched_params_set")
            op = f"xc_sched_{now.scheduler}_params_set"
            if now.scheduler != "credit" and (tslice_ms is not None or migration_delay_us is not None):
                raise XenError(op, errno.EINVAL, None, "credit2 has no time slice or migration delay")
            wanted = replace(now, ratelimit_us=now.ratelimit_us if ratelimit_us is None else ratelimit_us,
                             tslice_ms=now.tslice_ms if tslice_ms is None else tslice_ms,
                             migration_delay_us=now.migration_delay_us if migration_delay_us is None else migration_delay_us)
            # Xen's own checks (sched_credit.c, sched_credit2.c: XEN_SYSCTL_SCHEDOP_putinfo).
            low, high = RATELIMIT_US
            bad = wanted.ratelimit_us != 0 and not low <= wanted.ratelimit_us <= high
            if wanted.scheduler == "credit":
                assert wanted.tslice_ms is not None and wanted.migration_delay_us is not None
                bad = bad or not TSLICE_MS[0] <= wanted.tslice_ms <= TSLICE_MS[1]
                bad = bad or wanted.ratelimit_us > wanted.tslice_ms * 1000
                bad = bad or not 0 <= wanted.migration_delay_us <= MIGRATION_DELAY_US_MAX
            if bad:
                raise XenError(op, errno.EINVAL, None, f"cpupool {poolid}: {wanted}")
            state.pool_params[poolid] = {key: value for key, value in asdict(wanted).items()
                                         if key != "scheduler" and value is not None}
            return wanted

    def domain_build(self, domid: int, spec: BuildSpec) -> BuildResult:
        with self._op("domain_build", domid) as state:
            dom = state.domain(domid, "domain_build")
            if dom.built:
                raise XenError("domain_build", errno.EINVAL, domid, "the domain is already built")
            guest_type = GuestType(spec.guest_type)
            if guest_type == GuestType.HVM:
                if spec.firmware:
                    check_exists(spec.firmware, "firmware", domid)
                if spec.kernel:
                    check_exists(spec.kernel, "kernel", domid)
            else:
                if not spec.kernel:
                    raise XenError("domain_build", errno.EINVAL, domid, f"a {guest_type.value} guest needs a kernel")
                check_kernel(spec.kernel, domid)
            if spec.ramdisk:
                check_exists(spec.ramdisk, "ramdisk", domid)
            if not 1 <= spec.vcpus <= dom.max_vcpus:
                raise XenError("domain_build", errno.EINVAL, domid, f"{spec.vcpus} vcpus is outside 1..{dom.max_vcpus}")
            pages = -(-spec.memory_kib // PAGE_KIB)
            if pages <= 0:
                raise XenError("domain_build", errno.EINVAL, domid, f"{spec.memory_kib} KiB is no memory")
            if dom.max_pages and pages > dom.max_pages:
                raise XenError(
                    "domain_build", errno.ENOMEM, domid,
                    f"{spec.memory_kib} KiB is above the domain's maxmem of {dom.max_pages * PAGE_KIB} KiB",
                )
            free = state.free_pages()
            if pages > free:
                raise XenError(
                    "domain_build", errno.ENOMEM, domid,
                    f"{spec.memory_kib} KiB wanted, {free * PAGE_KIB} KiB free on the host",
                )
            dom.tot_pages = pages
            if not dom.max_pages:
                dom.max_pages = max(pages, spec.max_memory_kib // PAGE_KIB)
            dom.online_vcpus = spec.vcpus
            dom.kernel = spec.kernel
            dom.cmdline = spec.cmdline
            dom.built = True
            if guest_type == GuestType.PV:
                store_mfn, console_mfn = pages - 2, pages - 1  # the builder's last two pages
            else:
                store_mfn, console_mfn = HVM_STORE_PFN, HVM_CONSOLE_PFN
            state.log(f"d{domid}: built ({guest_type.value}, {spec.memory_kib} KiB, {spec.vcpus} vcpus)")
            return BuildResult(store_mfn, console_mfn, spec.store_evtchn, spec.console_evtchn)

    # -- event channels ---------------------------------------------------------------------------

    def evtchn_alloc_unbound(self, domid: int, remote_domid: int) -> int:
        with self._op("evtchn_alloc_unbound", domid) as state:
            dom = state.domain(domid, "evtchn_alloc_unbound")
            limit = MAX_EVTCHN_PORT if dom.max_evtchn_port < 0 else min(dom.max_evtchn_port, MAX_EVTCHN_PORT)
            port = next((p for p in range(1, limit + 1) if p not in dom.evtchns), None)
            if port is None:
                raise XenError("evtchn_alloc_unbound", errno.ENOSPC, domid, f"all {limit} ports in use")
            dom.evtchns[port] = remote_domid
            return port

    def evtchn_close(self, domid: int, port: int) -> None:
        with self._op("evtchn_close", domid) as state:
            dom = state.domain(domid, "evtchn_close")
            if port not in dom.evtchns:
                raise XenError("evtchn_close", errno.EINVAL, domid, f"port {port} is not allocated")
            del dom.evtchns[port]

    def evtchn_list(self, domid: int) -> list[int]:
        with self._op("evtchn_list", domid, write=False) as state:
            return sorted(state.domain(domid, "evtchn_list").evtchns)

    # -- the simulated guests ---------------------------------------------------------------------

    def guest_console_output(self, domid: int) -> str | None:
        with self._op("guest_console_output", domid, write=False) as state:
            dom = state.domains.get(domid)
            return None if dom is None or domid == 0 else dom.console

    def guest_shutdown(self, domid: int, reason: ShutdownReason) -> None:
        """Make the guest shut itself down (as if it ran ``poweroff``, ``reboot`` or crashed)."""
        words = {ShutdownReason.POWEROFF: "poweroff", ShutdownReason.REBOOT: "reboot", ShutdownReason.SUSPEND: "suspend"}
        with self._op("guest_shutdown", domid) as state:
            dom = state.domain(domid, "guest_shutdown")
            if domid == 0 or not dom.is_running:
                raise XenError("guest_shutdown", errno.EINVAL, domid, "the guest is not running")
            if reason == ShutdownReason.CRASH:
                guest.console_print(dom, "Kernel panic - not syncing: (simulated crash)")
            guest.shut_itself_down(state, dom, words.get(ShutdownReason(reason), "crash"))

    # -- xenstore -----------------------------------------------------------------------------------

    def xenstore(self) -> XenStore:
        if self._closed:
            raise XenError("xenstore", errno.EBADF, None, "the hypervisor handle is closed")
        if self._xenstore is None:
            self._xenstore = SimXenStore(self._store, 0)
        return self._xenstore

    def xenstore_as(self, domid: int) -> SimXenStore:
        """A connection with the permissions of domain ``domid`` (as its xenbus driver would have)."""
        if self._closed:
            raise XenError("xenstore", errno.EBADF, domid, "the hypervisor handle is closed")
        if domid == 0:
            return self.xenstore()  # type: ignore[return-value]
        connection = SimXenStore(self._store, domid)
        self._guest_connections.append(connection)
        return connection

    def close(self) -> None:
        if self._xenstore is not None:
            self._xenstore.close()
        for connection in self._guest_connections:
            connection.close()
        self._guest_connections.clear()
        self._closed = True


def _info(dom: Domain, now_ns: int) -> DomainInfo:
    return DomainInfo(
        domid=dom.domid,
        uuid=dom.uuid,
        guest_type=dom.guest_type,
        paused=dom.paused,
        blocked=False,
        running=dom.is_running,
        shutdown=dom.is_shutdown,
        dying=False,
        crashed=dom.shutdown_reason == ShutdownReason.CRASH,
        shutdown_reason=dom.shutdown_reason,
        tot_pages=dom.tot_pages,
        max_pages=dom.max_pages,
        online_vcpus=dom.online_vcpus,
        max_vcpu_id=dom.max_vcpus - 1,
        cpu_time_ns=dom.cpu_time(now_ns),
        hap=dom.hap,
        cpupool=dom.cpupool,
    )



# Xen's defaults for a pool's scheduler parameters (sched_credit.c, sched_credit2.c).
_POOL_DEFAULTS = {"credit": {"ratelimit_us": 1000, "tslice_ms": 30, "migration_delay_us": 0},
                  "credit2": {"ratelimit_us": 1000}}


def _pool_sched_params(state: HostState, poolid: int, op: str) -> PoolSchedParams:
    if poolid not in state.pools:
        raise XenError("xc_cpupool_getinfo", errno.ENOENT, None, f"no cpupool {poolid}")
    scheduler = state.pools[poolid][0]
    if scheduler not in _POOL_DEFAULTS:
        raise XenError(op, errno.EINVAL, None, f"cpupool {poolid} runs the {scheduler} scheduler, which has no such parameters")
    return PoolSchedParams(scheduler, **{**_POOL_DEFAULTS[scheduler], **state.pool_params.get(poolid, {})})
