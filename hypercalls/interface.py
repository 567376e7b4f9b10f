"""The one interface through which the toolstack reaches a hypervisor.

Two backends implement it: the simulator (``hypercalls.sim``), in process, for fast tests and users'
scripts; and the real one (``hypercalls.xen``), cffi bindings to Xen's own libraries (libxenctrl,
libxenguest, libxenstore, ...).  Nothing above this module knows which one it holds.

The calls mirror libxenctrl and libxenstore closely (same names, same units, same order of use as
libxl), so that the lifecycle code written against the simulator is the code that runs on real Xen.
Units: memory in KiB (as ``xc_domain_setmaxmem``) unless a name says pages; time in nanoseconds.
"""

from __future__ import annotations

import abc
import enum
import errno
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

from hypercalls.errors import TransactionConflict, XenError, XenstoreError

PAGE_SIZE = 4096
PAGE_KIB = PAGE_SIZE // 1024

DOMID_SELF = 0x7FF0  # as xen/include/public/xen.h; dom0 talks about itself with its own id 0 in xenstore


class GuestType(str, enum.Enum):
    PV = "pv"
    PVH = "pvh"
    HVM = "hvm"


class ShutdownReason(enum.IntEnum):
    """SHUTDOWN_* from xen/include/public/sched.h."""

    POWEROFF = 0
    REBOOT = 1
    SUSPEND = 2
    CRASH = 3
    WATCHDOG = 4
    SOFT_RESET = 5


class RunState(str, enum.Enum):
    """What ``xl list`` shows as one letter: r b p s c d."""

    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"
    CRASHED = "crashed"
    DYING = "dying"


@dataclass(frozen=True)
class XenVersion:
    major: int
    minor: int
    extra: str = ""  # e.g. ".7" as xc_version(XENVER_extraversion)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}{self.extra}"


@dataclass(frozen=True)
class PhysInfo:
    """The host, as xc_physinfo and xc_version report it."""

    xen_version: XenVersion
    nr_cpus: int
    threads_per_core: int
    cores_per_socket: int
    cpu_khz: int
    total_pages: int
    free_pages: int
    virt_caps: tuple[str, ...]  # subset of ("pv", "hvm", "hap", "shadow")
    capabilities: str = ""  # xc_version(XENVER_capabilities), e.g. "xen-3.0-x86_64 hvm-3.0-x86_32 ..."

    @property
    def total_kib(self) -> int:
        return self.total_pages * PAGE_KIB

    @property
    def free_kib(self) -> int:
        return self.free_pages * PAGE_KIB


@dataclass(frozen=True)
class VcpuInfo:
    """One vcpu, as xc_vcpu_getinfo and xc_vcpu_getaffinity report it."""

    vcpu: int
    online: bool
    blocked: bool
    running: bool
    cpu: int  # the physical CPU it runs (or last ran) on
    cpu_time_ns: int
    hard_affinity: frozenset[int]
    soft_affinity: frozenset[int]


# XEN_SCHEDULER_* ids, by the names xl uses for them.
SCHEDULERS = {5: "credit", 6: "credit2", 7: "arinc653", 8: "rtds", 9: "null"}
WEIGHTED_SCHEDULERS = ("credit", "credit2")
DEFAULT_WEIGHT = 256


@dataclass(frozen=True)
class CpuPoolInfo:
    """A cpupool, as xc_cpupool_getinfo reports it (its name is the toolstack's, in xenstore)."""

    poolid: int
    scheduler: str
    cpus: frozenset[int]
    domains: int


@dataclass(frozen=True)
class SchedParams:
    """A domain's scheduler (its cpupool's) and, under credit and credit2, its weight and cap."""

    scheduler: str
    weight: int | None
    cap: int | None


@dataclass(frozen=True)
class PoolSchedParams:
    """A cpupool's own scheduler parameters (xl sched-credit -s, sched-credit2 -s): credit's and
    credit2's context switch rate limit (microseconds; 0: none), and credit's time slice
    (milliseconds) and vcpu migration delay (microseconds; None under credit2)."""

    scheduler: str
    ratelimit_us: int
    tslice_ms: int | None = None
    migration_delay_us: int | None = None


# Their bounds in Xen (public/sysctl.h): XEN_SYSCTL_SCHED_RATELIMIT_MIN/MAX (0 is also taken: no
# rate limit), XEN_SYSCTL_CSCHED_TSLICE_MIN/MAX, XEN_SYSCTL_CSCHED_MGR_DLY_MAX_US.
RATELIMIT_US = (100, 500_000)
TSLICE_MS = (1, 1000)
MIGRATION_DELAY_US_MAX = 100_000


@dataclass(frozen=True)
class DomainInfo:
    """One domain as xc_domain_getinfo reports it."""

    domid: int
    uuid: str  # the domain handle, as a canonical lowercase UUID string
    guest_type: GuestType
    paused: bool
    blocked: bool
    running: bool
    shutdown: bool
    dying: bool
    crashed: bool
    shutdown_reason: ShutdownReason | None
    tot_pages: int
    max_pages: int  # the maxmem cap, in pages
    online_vcpus: int
    max_vcpu_id: int
    cpu_time_ns: int
    hap: bool = False  # HVM/PVH: hardware-assisted paging; False: shadow page tables (or a PV guest)
    cpupool: int = 0

    @property
    def memory_kib(self) -> int:
        return self.tot_pages * PAGE_KIB

    @property
    def max_memory_kib(self) -> int:
        return self.max_pages * PAGE_KIB

    @property
    def state(self) -> RunState:
        if self.dying:
            return RunState.DYING
        if self.shutdown:
            return RunState.CRASHED if self.shutdown_reason == ShutdownReason.CRASH else RunState.SHUTDOWN
        if self.paused:
            return RunState.PAUSED
        if self.running:
            return RunState.RUNNING
        return RunState.BLOCKED


class Trigger(str, enum.Enum):
    """The virtual buttons of an HVM guest (XEN_DOMCTL_SENDTRIGGER_*; Xen's RESET is not
    implemented on x86, so it is not offered)."""

    POWER = "power"


@dataclass(frozen=True)
class DomainCreateSpec:
    """What xc_domain_create needs (struct xen_domctl_createdomain, reduced to what we set)."""

    uuid: str
    guest_type: GuestType
    max_vcpus: int
    hap: bool = True  # HVM/PVH: hardware-assisted paging where the host has it
    max_grant_frames: int = 64  # libxl's defaults for 4.17
    max_maptrack_frames: int = 1024
    max_evtchn_port: int = -1  # -1: no limit beyond the hypervisor's
    cpupool: int = 0  # the cpupool it is made in (Pool-0 is 0)


@dataclass(frozen=True)
class FirmwareModule:
    """Bytes the builder copies into guest memory at ``guest_addr`` (libxenguest's
    ``xc_hvm_firmware_module``), e.g. the ACPI tables a PVH guest has no firmware to make."""

    guest_addr: int
    data: bytes


@dataclass(frozen=True)
class BuildSpec:
    """Everything the domain builder needs after the domain exists (libxl__build_pv / build_hvm).

    The builder loads the kernel (or, for HVM, hvmloader and the firmware), populates the guest's
    memory, sets up the start info / HVM params, and seeds the grant table so that xenstored and the
    console backend (both in ``backend_domid``, normally dom0) can map the two rings.
    """

    guest_type: GuestType
    memory_kib: int  # what the guest starts with ("memory")
    max_memory_kib: int  # "maxmem"; memory_kib < max_memory_kib only with ballooning / PoD
    vcpus: int  # online at boot ("vcpus"); max_vcpus was fixed at create
    # Unbound ports in the new domain, allocated by the toolstack for xenstored and the console
    # backend to bind (libxl__build_pre allocates them before the build, as here).
    store_evtchn: int
    console_evtchn: int
    kernel: str | None = None
    # The kernel file's SHA-256, when the caller has it: a kernel a bootloader copies out of the
    # guest's disk is a new file at each boot, so the unpacked-kernel cache keys it by content.
    kernel_digest: str | None = None
    ramdisk: str | None = None
    cmdline: str = ""
    firmware: str | None = None  # HVM: hvmloader path
    system_firmware: str | None = None  # HVM: the BIOS hvmloader hands over to (SeaBIOS)
    videoram_kib: int = 0  # HVM: taken out of the guest's RAM for QEMU's emulated VGA
    backend_domid: int = 0
    features: tuple[str, ...] = ()
    acpi: bool = True
    viridian: tuple[str, ...] = ()
    # PVH: the ACPI tables, RSDP first (the builder hands its address to the guest as
    # hvm_start_info.rsdp_paddr); each also gets an "ACPI" entry in the guest's memory map.
    acpi_modules: tuple[FirmwareModule, ...] = ()


@dataclass(frozen=True)
class BuildResult:
    """What the builder reports back: where the two rings live, in guest frame numbers."""

    store_mfn: int
    console_mfn: int
    store_evtchn: int
    console_evtchn: int


class XsPerm(str, enum.Enum):
    """xenstore permission letters (docs/misc/xenstore.txt): n(one) r(ead) w(rite) b(oth)."""

    NONE = "n"
    READ = "r"
    WRITE = "w"
    BOTH = "b"


@dataclass(frozen=True)
class XsPermission:
    domid: int
    perm: XsPerm


def perms(owner: int, *others: tuple[int, XsPerm], default: XsPerm = XsPerm.NONE) -> tuple[XsPermission, ...]:
    """Build a xenstore permission list the way xenstore encodes it.

    The first entry names the owner and, with its letter, what every domain not listed gets;
    further entries grant specific domains more.  The owner always has full access.
    """
    return (XsPermission(owner, default),) + tuple(XsPermission(d, p) for d, p in others)


@dataclass(frozen=True)
class WatchEvent:
    path: str  # the node that changed (or @introduceDomain / @releaseDomain)
    token: str


class XenStore(abc.ABC):
    """A connection to xenstored, as libxenstore's xs_* calls.

    ``txn`` is a transaction handle from :meth:`transaction_start`, or ``None`` for a single,
    immediate operation.  Reads of a missing node raise :class:`XenstoreError` with ENOENT;
    :meth:`read_or` is the convenience for "missing is fine".
    """

    @abc.abstractmethod
    def read(self, path: str, txn: object | None = None) -> str: ...

    @abc.abstractmethod
    def write(self, path: str, value: str, txn: object | None = None) -> None: ...

    @abc.abstractmethod
    def mkdir(self, path: str, txn: object | None = None) -> None: ...

    @abc.abstractmethod
    def rm(self, path: str, txn: object | None = None) -> None:
        """Remove a node and everything below it; removing a missing node is not an error."""

    @abc.abstractmethod
    def directory(self, path: str, txn: object | None = None) -> list[str]: ...

    @abc.abstractmethod
    def get_perms(self, path: str, txn: object | None = None) -> tuple[XsPermission, ...]: ...

    @abc.abstractmethod
    def set_perms(self, path: str, permissions: tuple[XsPermission, ...], txn: object | None = None) -> None: ...

    @abc.abstractmethod
    def transaction_start(self) -> object: ...

    @abc.abstractmethod
    def transaction_end(self, txn: object, abort: bool = False) -> None:
        """Commit (or abort) ``txn``; raises :class:`TransactionConflict` when it must be retried."""

    @abc.abstractmethod
    def watch(self, path: str, token: str) -> None:
        """Register a watch; like xenstored, an event for ``path`` fires once at registration."""

    @abc.abstractmethod
    def unwatch(self, path: str, token: str) -> None: ...

    @abc.abstractmethod
    def read_watch(self, timeout: float | None) -> WatchEvent | None:
        """The next watch event, or ``None`` when ``timeout`` seconds pass without one."""

    @abc.abstractmethod
    def introduce_domain(self, domid: int, store_mfn: int, store_evtchn: int) -> None:
        """Tell xenstored about a new domain's ring (xs_introduce_domain); fires @introduceDomain."""

    @abc.abstractmethod
    def release_domain(self, domid: int) -> None:
        """Make xenstored forget a domain (xs_release_domain); fires @releaseDomain."""

    @abc.abstractmethod
    def close(self) -> None: ...

    # Conveniences shared by every backend.

    def read_or(self, path: str, default: str | None = None, txn: object | None = None) -> str | None:

        try:
            return self.read(path, txn)
        except XenstoreError as e:
            if e.errno == errno.ENOENT:
                return default
            raise

    def list_or_empty(self, path: str, txn: object | None = None) -> list[str]:

        try:
            return self.directory(path, txn)
        except XenstoreError as e:
            if e.errno == errno.ENOENT:
                return []
            raise

    def rm_with_empty_parents(self, path: str, keep_depth: int = 3) -> None:
        """Remove ``path`` and then each parent left empty, as libxl__xs_path_cleanup does, so a
        device's removal does not leave e.g. an empty /local/domain/0/backend/vbd behind.

        Parents at most ``keep_depth`` levels deep (``/local/domain/N`` by default) are kept; a
        missing ``path`` removes nothing, not even empty parents that were never its own.
        """
        if self.read_or(path) is None:
            return
        self.rm(path)
        parts = path.strip("/").split("/")
        while len(parts) > keep_depth + 1:
            parts.pop()
            parent = "/" + "/".join(parts)
            if self.list_or_empty(parent) or self.read_or(parent) is None:
                break
            self.rm(parent)

    @contextmanager
    def transaction(self) -> Iterator[object]:
        """One attempt at a transaction: commits on success, aborts on an exception.

        A :class:`TransactionConflict` from the commit propagates; use :func:`retry_transaction`
        to run a whole function again until it commits.
        """
        txn = self.transaction_start()
        try:
            yield txn
        except BaseException:
            self.transaction_end(txn, abort=True)
            raise
        self.transaction_end(txn)


class GuestConsole(abc.ABC):
    """A guest's console ring mapped into this process, and our end of its event channel.

    ``page`` is the shared page (``pvdrivers.console_ring.ConsoleRing`` reads it); ``fileno`` becomes
    readable when the guest kicks, ``consume`` takes the kick and re-arms, ``notify`` kicks the guest.
    """

    page: memoryview

    @abc.abstractmethod
    def fileno(self) -> int: ...

    @abc.abstractmethod
    def consume(self) -> None: ...

    @abc.abstractmethod
    def notify(self) -> None: ...

    @abc.abstractmethod
    def close(self) -> None:
        """Unbind the event channel and unmap the page."""


class Hypervisor(abc.ABC):
    """Domain control, as libxenctrl/libxenguest plus event channels, grants and foreign memory.

    Every failure raises :class:`hypercalls.errors.XenError` carrying the operation, errno and domid.
    """

    #: "sim" or "xen": for display only; code must not branch on it.
    kind: str = "abstract"

    # -- the host -------------------------------------------------------------------------------
    @abc.abstractmethod
    def physinfo(self) -> PhysInfo: ...

    @abc.abstractmethod
    def dmesg(self, clear: bool = False) -> str:
        """The hypervisor's console ring (xc_readconsolering)."""

    # -- domains --------------------------------------------------------------------------------
    @abc.abstractmethod
    def domain_create(self, spec: DomainCreateSpec) -> int:
        """Create an empty, paused domain and return its domid (xc_domain_create)."""

    @abc.abstractmethod
    def domain_destroy(self, domid: int) -> None:
        """Destroy a domain and free its memory (xc_domain_destroy)."""

    @abc.abstractmethod
    def domain_pause(self, domid: int) -> None: ...

    @abc.abstractmethod
    def domain_unpause(self, domid: int) -> None: ...

    @abc.abstractmethod
    def domain_shutdown(self, domid: int, reason: ShutdownReason) -> None:
        """Force the domain into the shut-down state (xc_domain_shutdown, SCHEDOP_remote_shutdown)."""

    @abc.abstractmethod
    def domain_send_trigger(self, domid: int, trigger: Trigger) -> None:
        """Press a virtual button of an HVM guest (xc_domain_send_trigger): the ACPI power button,
        which a guest without PV drivers answers by shutting down."""

    @abc.abstractmethod
    def hvm_pv_callback_set(self, domid: int) -> bool:
        """Whether the guest's PV drivers registered their event-channel callback
        (HVM_PARAM_CALLBACK_IRQ): libxl's test for "this HVM guest answers control/shutdown"."""

    @abc.abstractmethod
    def domain_getinfo(self, domid: int) -> DomainInfo:
        """Raises XenError(ESRCH) when there is no such domain."""

    @abc.abstractmethod
    def domain_list(self) -> list[DomainInfo]:
        """Every domain, dom0 included, ordered by domid."""

    @abc.abstractmethod
    def domain_setmaxmem(self, domid: int, max_kib: int) -> None: ...

    @abc.abstractmethod
    def domain_set_target(self, domid: int, target_kib: int) -> None:
        """Balloon target: what the guest is asked to give back or take (memory/target in xenstore
        is what a real guest's balloon driver reads; the simulator also moves tot_pages)."""

    @abc.abstractmethod
    def domain_set_online_vcpus(self, domid: int, vcpus: int) -> None:
        """Online vcpus (a real guest follows cpu/N/availability in xenstore)."""

    @abc.abstractmethod
    def vcpu_setaffinity(self, domid: int, vcpu: int, cpus: frozenset[int] | None,
                         soft: frozenset[int] | None = None) -> None:
        """Hard affinity (``cpus``: where the vcpu may run) and soft affinity (where the scheduler
        prefers it); None leaves that one as it is."""

    @abc.abstractmethod
    def vcpu_info(self, domid: int) -> list[VcpuInfo]:
        """Every vcpu of the domain (online or not), with its placement."""

    @abc.abstractmethod
    def cpupool_list(self) -> list[CpuPoolInfo]: ...

    @abc.abstractmethod
    def cpupool_free_cpus(self) -> frozenset[int]:
        """CPUs in no pool (taken out of one, not yet given to another)."""

    @abc.abstractmethod
    def cpupool_create(self, scheduler: str) -> int:
        """A new, empty pool running ``scheduler`` (a name of SCHEDULERS); its id."""

    @abc.abstractmethod
    def cpupool_destroy(self, poolid: int) -> None:
        """Destroy an empty pool (no domains; Xen frees its CPUs)."""

    @abc.abstractmethod
    def cpupool_add_cpu(self, poolid: int, cpu: int) -> None: ...

    @abc.abstractmethod
    def cpupool_remove_cpu(self, poolid: int, cpu: int) -> None: ...

    @abc.abstractmethod
    def cpupool_move_domain(self, poolid: int, domid: int) -> None: ...

    @abc.abstractmethod
    def sched_get(self, domid: int) -> SchedParams:
        """The scheduler of the domain's cpupool and the domain's parameters under it."""

    @abc.abstractmethod
    def sched_set(self, domid: int, weight: int | None = None, cap: int | None = None) -> None:
        """Credit or credit2 weight (1..65535) and cap (0: none; else % of one CPU); None: unchanged."""

    @abc.abstractmethod
    def pool_sched_get(self, poolid: int) -> PoolSchedParams:
        """The cpupool's scheduler parameters (credit and credit2 pools; EINVAL for others)."""

    @abc.abstractmethod
    def pool_sched_set(self, poolid: int, ratelimit_us: int | None = None, tslice_ms: int | None = None,
                       migration_delay_us: int | None = None) -> PoolSchedParams:
        """Set the cpupool's scheduler parameters (None: unchanged); returns them as Xen keeps them.
        EINVAL, as Xen's, for values outside its bounds, a rate limit above credit's time slice,
        or a parameter the pool's scheduler lacks."""

    @abc.abstractmethod
    def domain_build(self, domid: int, spec: BuildSpec) -> BuildResult:
        """Load the guest and populate its memory (xc_dom_* for PV/PVH, xc_hvm_build for HVM).

        Fails with ENOMEM when the memory cannot be had, with EINVAL when the kernel is not one.
        """

    # -- event channels, grants, foreign memory ---------------------------------------------------
    @abc.abstractmethod
    def evtchn_alloc_unbound(self, domid: int, remote_domid: int) -> int:
        """An unbound port in ``domid`` that ``remote_domid`` may bind (xc_evtchn_alloc_unbound)."""

    @abc.abstractmethod
    def evtchn_close(self, domid: int, port: int) -> None: ...

    @abc.abstractmethod
    def evtchn_list(self, domid: int) -> list[int]:
        """Ports in use in ``domid`` (for leak checks after destroy and rollback)."""

    #: Whether guests' consoles need a backend in dom0 (xentool.console) to be served and logged;
    #: the simulator's guests print into the simulator itself.
    needs_console_backend: bool = True
    #: Whether HVM guests get QEMU as their device model (xentool.devicemodel); the simulator's
    #: HVM guests have their emulated hardware inside the simulator.
    runs_device_models: bool = True
    #: Whether guests' disks and vifs are served by dom0's kernel backends (blkback, netback), which
    #: need xentool's hotplug work (xentool.hotplug); the simulator serves nothing.
    has_kernel_backends: bool = True

    def domain_dumpcore(self, domid: int, path: str) -> None:
        """Write the domain's memory and vcpu state to ``path`` as an ELF core (xc_domain_dumpcore)."""
        raise self._unsupported("domain_dumpcore", domid, "guest memory to dump")

    def domain_save(self, domid: int, fd: int, suspend: Callable[[], bool],
                    switch_logdirty: Callable[[bool], None] | None = None, live: bool = False,
                    progress: Callable[[str, int, int], None] | None = None) -> None:
        """Write the domain's state to ``fd`` as Xen's migration stream (xc_domain_save), after
        ``suspend`` has had the guest suspend itself (it returns whether it did).  An HVM guest's
        save also turns its device model's dirty-page logging on and off (``switch_logdirty``).
        ``live``: the memory is copied while the guest runs, in rounds that resend what it dirtied,
        and the guest is suspended only for the last one (a migration's short downtime).
        ``progress`` hears (what is being done, pages done, pages in all) as the copy goes."""
        raise self._unsupported("domain_save", domid, "saving a guest's memory")

    def domain_restore(self, domid: int, fd: int, spec: BuildSpec) -> BuildResult:
        """Fill the new, empty ``domid`` from a migration stream on ``fd`` (xc_domain_restore) in
        place of the domain builder; ``spec`` gives what the builder's preparation needs (type,
        memory, the two event channels).  The domain stays paused."""
        raise self._unsupported("domain_restore", domid, "restoring a guest's memory")

    def domain_resume(self, domid: int) -> None:
        """Let a guest suspended for a checkpoint go on where it was (xc_domain_resume, cooperative)."""
        raise self._unsupported("domain_resume", domid, "resuming a suspended guest")

    def _unsupported(self, op: str, domid: int, what: str) -> Exception:

        return XenError(op, errno.EOPNOTSUPP, domid, f"the {self.kind} backend has no {what}")

    def open_guest_console(self, domid: int, ring_ref: int, remote_port: int) -> GuestConsole:
        """Map the guest's console page (grant, else frame ``ring_ref``) and bind ``remote_port``."""

        raise XenError("open_guest_console", errno.EOPNOTSUPP, domid, f"the {self.kind} backend has no console rings")

    @abc.abstractmethod
    def reopen(self) -> Hypervisor:
        """A new, independent connection to the same hypervisor (for a forked backend process,
        which must not share this one's handles and hypercall buffers with its parent)."""

    def guest_console_output(self, domid: int) -> str | None:
        """What the guest printed on its console, where the backend itself holds it.

        The simulator's guests print into the simulator, so it answers; on real Xen the console is
        a shared ring served by a backend in dom0 (``pvdrivers.console``), and this returns None.
        """
        return None

    # -- xenstore -----------------------------------------------------------------------------------
    @abc.abstractmethod
    def xenstore(self) -> XenStore:
        """A xenstore connection (owned by this hypervisor handle; closed with it)."""

    @abc.abstractmethod
    def close(self) -> None: ...

    def __enter__(self) -> Hypervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_Result = TypeVar("_Result")


def retry_transaction(store: XenStore, body: Callable[[object], _Result], attempts: int = 50) -> _Result:
    """Run ``body(txn)`` in a transaction until it commits, as libxl's retry loops do.

    ``body`` must be safe to run again: it sees a fresh transaction each time.
    """

    last: TransactionConflict | None = None
    for _ in range(attempts):
        try:
            with store.transaction() as txn:
                result = body(txn)
            return result
        except TransactionConflict as e:
            last = e
    assert last is not None
    raise last
