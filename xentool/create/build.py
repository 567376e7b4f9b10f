"""The two event channels for xenstored and the console, then the domain builder (or, for a
restore, Xen's migration stream in its place).

libxl__build_pre allocates both ports before building, because the builder writes them into the
guest's start info (PV) or HVM params (PVH/HVM), where the guest finds them at boot.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import os
import re
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Protocol

from hypercalls.errors import XenError
from hypercalls.interface import BuildResult, BuildSpec, FirmwareModule, GuestType, Hypervisor, XenStore
from xentool.config import GuestConfig
from xentool.create.acpi_tables import build_pvh_acpi
from xentool.create.bootloader import RemoveBootFiles, boot_image, runs_a_bootloader
from xentool.create.plan import Bindings, Op, Step
from xentool.create.preflight import BUILD_OVERHEAD_KIB
from xentool.devicemodel.firmware import HVMLOADER, system_firmware
from xentool.errors import GuestMemoryTooSmall, RanOutOfMemory
from xentool.savefile import LOADING

PROGRESS_SECONDS = 0.5  # how often a restore from a file says how far it is


class RestoreSource(Protocol):
    """Where a restored guest comes from, in place of the domain builder: a save file
    (:class:`SaveFileSource`), or a migration's incoming stream (xentool.migration)."""

    # Whether the guest's console log comes along (from another host; a save file is restored on
    # the host whose log the guest has).
    carries_console_log: ClassVar[bool]

    def describe(self) -> str:
        """Where the stream is read from, for a plan's description."""

    def open_stream(self) -> int:
        """A descriptor at the start of Xen's migration stream, which the caller closes."""

    def loading(self, fd: int) -> contextlib.AbstractContextManager[object]:
        """Around xc_domain_restore's reading of ``fd`` (a save file's says how far it is)."""

    def open_device_state(self) -> int | None:
        """A descriptor at an HVM guest's QEMU state (the caller closes it), or None."""

    def read_console_log(self) -> bytes:
        """The end of the guest's console log where it came from (``carries_console_log``)."""


@dataclass(frozen=True)
class SaveFileSource:
    """A save file's migration stream (xentool.savefile)."""

    path: str
    offset: int
    dm_state_offset: int | None = None  # an HVM guest's QEMU state, which its device model loads
    length: int = 0  # the stream's bytes, for progress
    progress: Callable[[str, int, int], None] | None = dataclasses.field(default=None, compare=False)
    carries_console_log: ClassVar[bool] = False

    def describe(self) -> str:
        return f"{self.path} from byte {self.offset}"

    def open_stream(self) -> int:
        return self._open_at(self.offset)

    @contextlib.contextmanager
    def loading(self, fd: int) -> Iterator[None]:
        """While libxenguest reads the stream, its position in the file (the descriptor's offset,
        which a thread here reads without moving) is reported, in MiB, every PROGRESS_SECONDS."""
        if self.progress is None:
            yield
            return
        report, total = self.progress, self.length >> 20
        done = threading.Event()

        def watch() -> None:
            while not done.wait(PROGRESS_SECONDS):
                try:
                    report(LOADING, (os.lseek(fd, 0, os.SEEK_CUR) - self.offset) >> 20, total)
                except OSError:
                    return
        watcher = threading.Thread(target=watch, name="restore-progress", daemon=True)
        watcher.start()
        try:
            yield
            report(LOADING, total, total)
        finally:
            done.set()
            watcher.join()

    def open_device_state(self) -> int | None:
        return None if self.dm_state_offset is None else self._open_at(self.dm_state_offset)

    def read_console_log(self) -> bytes:
        raise NotImplementedError("a save file holds no console log")

    def _open_at(self, offset: int) -> int:
        fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        os.lseek(fd, offset, os.SEEK_SET)
        return fd


class PortFor(enum.Enum):
    """Which dom0 service binds an event channel the builder hands the guest."""

    STORE = "store_port"  # xenstored
    CONSOLE = "console_port"  # the console backend


@dataclass(frozen=True)
class AllocUnboundEvtchn(Op):
    """A port in the new domain for a dom0 service (xenstored, the console backend) to bind."""

    purpose: PortFor
    remote_domid: int = 0

    def describe(self) -> str:
        return f"xc_evtchn_alloc_unbound({{domid}}, remote={self.remote_domid}) -> {{{self.purpose.value}}}"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        port = hv.evtchn_alloc_unbound(bound.domid, self.remote_domid)
        if self.purpose == PortFor.STORE:
            bound.store_port = port
        else:
            bound.console_port = port

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if bound.has(self.purpose.value):
            hv.evtchn_close(bound.domid, bound.store_port if self.purpose == PortFor.STORE else bound.console_port)


def _with_ports(spec: BuildSpec, bound: Bindings) -> BuildSpec:
    return dataclasses.replace(spec, store_evtchn=bound.store_port, console_evtchn=bound.console_port)


def _bind_frames(result: BuildResult, bound: Bindings) -> None:
    bound.store_mfn = result.store_mfn
    bound.console_mfn = result.console_mfn


def _out_of_memory(hv: Hypervisor, domid: int, spec: BuildSpec, what: str) -> RanOutOfMemory | None:
    """Whether the builder's (or restore's) failure was the host's memory running out: what the
    half-made domain holds and what is still free fall short of the guest's memory.  The preflight
    check saw enough, so memory went since: another guest took it, or (a migration) the target had
    less than the stream needs.  libxenguest then fails with ENOMEM, or a restore with EBUSY."""
    try:
        held_kib = hv.domain_getinfo(domid).memory_kib
        free_kib = hv.physinfo().free_kib
    except XenError:
        return None  # the failure's own message is then the best there is
    needed_kib = spec.memory_kib + BUILD_OVERHEAD_KIB
    if held_kib + free_kib >= needed_kib:
        return None
    return RanOutOfMemory(what, needed_kib // 1024, (held_kib + free_kib) // 1024)


# libxenguest's words when the guest's own memory cannot hold what the builder loads into it, and
# the pages it needed: xc_dom_chk_alloc_pages (a segment, the kernel or its ramdisk, beside what was
# placed before it: pages > total - placed) and count_pgtables (the initial page tables' mapping).
def _segment_too_large(found: re.Match[str]) -> tuple[str, int]:
    return f"its {found.group(1)} did not fit", int(found.group(2), 16) + int(found.group(3), 16)


def _page_tables_too_large(found: re.Match[str]) -> tuple[str, int]:
    return "its initial page tables did not fit", int(found.group(1), 16)


_TOO_SMALL: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], tuple[str, int]]], ...] = (
    (re.compile(r"segment (\w+) too large \(0x([0-9a-f]+) > 0x[0-9a-f]+ - 0x([0-9a-f]+) pages\)"), _segment_too_large),
    (re.compile(r"not enough memory for initial mapping \(0x([0-9a-f]+) > 0x[0-9a-f]+\)"), _page_tables_too_large),
)


def guest_too_small(detail: str, memory_mib: int) -> GuestMemoryTooSmall | None:
    """The builder's failure for want of the guest's own memory, said as the memory setting."""
    for pattern, reading in _TOO_SMALL:
        found = pattern.search(detail)
        if found is not None:
            what, pages = reading(found)
            return GuestMemoryTooSmall(what, -(-pages // 256), memory_mib)
    return None


@contextlib.contextmanager
def _memory_said_in_mib(hv: Hypervisor, domid: int, spec: BuildSpec, what: str) -> Iterator[None]:
    """A failure of the builder or a restore for want of memory raised as RanOutOfMemory, or as
    GuestMemoryTooSmall when the guest's own memory cannot hold its kernel."""
    try:
        yield
    except XenError as e:
        too_small = guest_too_small(e.detail, spec.memory_kib // 1024)
        if too_small is not None:
            raise too_small from e
        ran_out = _out_of_memory(hv, domid, spec, what)
        if ran_out is None:
            raise
        raise ran_out from e


@dataclass(frozen=True)
class BuildDomain(Op):
    """The domain builder; the spec's event channels are filled from the bindings.  Its work goes
    with the domain."""

    spec: BuildSpec

    def describe(self) -> str:
        s = self.spec
        image = s.kernel or s.firmware or "{boot_files}"
        extra = f", ramdisk={s.ramdisk}" if s.ramdisk else ""
        return (
            f"build {s.guest_type.value}({{domid}}, image={image}{extra}, memory={s.memory_kib} KiB, "
            f"vcpus={s.vcpus}, store evtchn {{store_port}}, console evtchn {{console_port}})"
            " -> {store_mfn}, {console_mfn}"
        )

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        spec = _with_ports(self.spec, bound)
        if bound.has("boot_files"):  # the kernel the bootloader step found on the guest's disk
            found = bound.boot_files
            spec = dataclasses.replace(spec, kernel=found.kernel, kernel_digest=found.kernel_digest, ramdisk=found.ramdisk,
                                       cmdline=found.cmdline)
        with _memory_said_in_mib(hv, bound.domid, self.spec, "while the domain was built"):
            result = hv.domain_build(bound.domid, spec)
        _bind_frames(result, bound)


@dataclass(frozen=True)
class RestoreDomain(Op):
    """xc_domain_restore in place of the builder: the guest's memory and vcpus from the stream."""

    spec: BuildSpec
    source: RestoreSource

    def describe(self) -> str:
        return (f"xc_domain_restore({{domid}}, {self.source.describe()}, store evtchn "
                "{store_port}, console evtchn {console_port}) -> {store_mfn}, {console_mfn}")

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        fd = self.source.open_stream()
        try:
            with (_memory_said_in_mib(hv, bound.domid, self.spec, "while the guest's memory arrived"),
                  self.source.loading(fd)):
                result = hv.domain_restore(bound.domid, fd, _with_ports(self.spec, bound))
        finally:
            os.close(fd)
        _bind_frames(result, bound)


def plan_build(config: GuestConfig, store_domid: int = 0, console_domid: int = 0,
               restore: RestoreSource | None = None) -> Step:
    hvm = config.type == GuestType.HVM
    spec = BuildSpec(
        guest_type=config.type,
        memory_kib=config.memory_kib,
        max_memory_kib=config.maxmem_kib,
        vcpus=config.vcpus,
        store_evtchn=-1,  # filled from the bindings when the plan runs
        console_evtchn=-1,
        # An HVM guest's own kernel (direct boot) is QEMU's to load; the builder loads firmware.
        kernel=None if hvm else boot_image(config),
        ramdisk=str(config.ramdisk) if config.ramdisk and not hvm and not runs_a_bootloader(config) else None,
        cmdline=config.cmdline if not hvm else "",
        firmware=HVMLOADER if hvm else None,
        system_firmware=system_firmware(config),
        videoram_kib=config.videoram_kib,
        acpi=config.hvm.acpi if config.hvm else True,
        viridian=_viridian(config),
        acpi_modules=_pvh_acpi(config),
    )
    return Step(
        "build",
        (
            AllocUnboundEvtchn(PortFor.STORE, store_domid),
            AllocUnboundEvtchn(PortFor.CONSOLE, console_domid),
            BuildDomain(spec) if restore is None else RestoreDomain(spec, restore),
            *((RemoveBootFiles(),) if runs_a_bootloader(config) and restore is None else ()),
        ),
    )


def _pvh_acpi(config: GuestConfig) -> tuple[FirmwareModule, ...]:
    """libxl__dom_load_acpi: a PVH guest has no firmware, so its ACPI tables come from us.  Without
    them Linux probes an RTC and a keyboard controller that a PVH domain does not have (the FADT's
    boot flags say so) and finds its vcpus nowhere but in Xen's hypercalls."""
    if config.type != GuestType.PVH:
        return ()
    # Every kernel that boots as PVH (Linux since 4.17 with CONFIG_PVH) reads rsdp_paddr from the
    # start info, so the RSDP goes after the tables, where libxl puts it for such kernels.
    tables = build_pvh_acpi(config.vcpus, config.max_vcpus)
    return tuple(FirmwareModule(module.guest_addr, module.data) for module in tables.modules())


def _viridian(config: GuestConfig) -> tuple[str, ...]:
    if not config.hvm or not config.hvm.viridian:
        return ()
    if config.hvm.viridian is True:
        return ("defaults",)
    return tuple(config.hvm.viridian)
