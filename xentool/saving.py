"""`xentool save`: the guest suspends itself, libxenguest writes its state into the save file
(xentool.savefile), then the domain is destroyed, or, for a checkpoint, goes on running.

The suspend is the guest's own (libxl's domain_suspend_callback_common for a guest with PV
drivers): control/shutdown says "suspend", the guest quiesces its devices and makes the suspend
hypercall, and the domain stops with reason "suspend".  A guest that does not within
SUSPEND_TIMEOUT has its request withdrawn and the save fails with it still running.  Restore goes
through creation (xentool.create, with the builder replaced by xc_domain_restore).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from hypercalls.errors import XenError
from hypercalls.interface import DomainInfo, GuestType, Hypervisor, ShutdownReason
from xentool import events, lifecycle, savefile
from xentool.devicemodel.qmp import QmpFailed, qmp_execute
from xentool.devicemodel.state import save_device_state
from xentool.domains import DomainSummary, dom_path, wait_until
from xentool.errors import DomainOperationError, UsageError, WaitTimeout
from xentool.events import SAVED, Event
from xentool.records import DomainRecord, RecordStore

# Seconds for the guest to suspend itself once asked.  libxl waits 60 s; an HVM guest in the lab
# (TCG, two hosts busy) once took longer than that in CI, so the wait is longer, and the error
# says whether the guest had taken the request (it is suspending, slowly) or not (no PV suspend).
SUSPEND_TIMEOUT = 120.0


@dataclass(frozen=True)
class SaveResult:
    path: str
    size: int
    seconds: float
    kept_running: bool


def xentool_record(records: RecordStore, domain: DomainSummary, verb: str, xl_command: str) -> DomainRecord:
    """The guest's record, whose config goes with its memory (a save file, a migration); a guest
    xentool did not create has none."""
    record = records.load(domain.uuid)
    if record is None:
        raise UsageError(f"domain {domain.name} was not created by xentool, so there is no config to {verb} with it; "
                         f"use the toolstack that created it ({xl_command})")
    return record


def save_guest(
    hv: Hypervisor, records: RecordStore, domain: DomainSummary, path: str | os.PathLike[str], checkpoint: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> SaveResult:
    record = xentool_record(records, domain, "save", "xl save")
    config = record.guest_config()
    hvm = config.type == GuestType.HVM
    target = Path(path)
    if target.exists() and target.is_dir():
        raise UsageError(f"{target} is a directory; give the save file's path")
    started = time.monotonic()
    suspended = False
    dm_state = b""

    def suspend() -> bool:
        # libxl's domain_suspend_callback_common, then (HVM) libxl__domain_suspend_device_model.
        nonlocal suspended, dm_state
        suspend_guest(hv, domain)
        suspended = True
        if hvm:
            dm_state = save_device_state(domain.domid)
        return True

    # read-write: the trailer's checksum reads the stream back
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)  # a guest's memory
    try:
        offset = savefile.write_header(fd, domain.name, domain.uuid, config.type.value, record.config, time.time())
        hv.domain_save(domain.domid, fd, suspend, logdirty_switch(hv, domain.domid), progress=progress)
        if hvm:
            savefile.append_device_model_state(fd, dm_state)
        savefile.finish(fd, offset)
        size = os.fstat(fd).st_size
    except BaseException as e:
        os.close(fd)
        target.unlink(missing_ok=True)
        if suspended:
            resume_quietly(hv, domain)
        if isinstance(e, (XenError, OSError, QmpFailed)):
            raise DomainOperationError("save", domain.name, e) from e
        raise
    os.close(fd)
    if checkpoint:
        lifecycle.checked("resume", domain.name, lambda: resume_guest(hv, domain.domid, hvm))
    else:
        lifecycle.destroy(hv, domain.domid)
        records.remove(domain.uuid)
    events.publish(Event(SAVED, domain.name, domain.uuid, domain.domid, {"path": str(target), "kept_running": checkpoint}))
    return SaveResult(str(target), size, round(time.monotonic() - started, 1), checkpoint)


def logdirty_switch(hv: Hypervisor, domid: int) -> Callable[[bool], None]:
    """What libxenguest calls around an HVM or PVH guest's save, live or not (libxl's
    switch_qemu_xen_logdirty): the guest's QEMU, if it has one, then tells Xen which guest pages
    it wrote.  A guest without a QEMU (PVH) has nothing to switch: libxl answers done at once."""
    def switch(enable: bool) -> None:
        if lifecycle.has_device_model(hv, domid):
            qmp_execute(domid, [("xen-set-global-dirty-log", {"enable": enable})])

    return switch


def resume_guest(hv: Hypervisor, domid: int, hvm: bool) -> None:
    """libxl__domain_resume: QEMU goes on (HVM), then the guest."""
    if hvm:
        lifecycle.resume_device_model(domid)
    hv.domain_resume(domid)


def suspend_guest(hv: Hypervisor, domain: DomainSummary) -> None:
    """Ask the guest to suspend itself and wait until it has (shut down, reason suspend).  An HVM
    guest without PV drivers cannot be asked: Xen suspends it (libxl: xc_domain_shutdown)."""
    xs = hv.xenstore()
    control = f"{dom_path(domain.domid)}/control/shutdown"
    by_xen = domain.type == GuestType.HVM.value and not hv.hvm_pv_callback_set(domain.domid)
    if by_xen:
        hv.domain_shutdown(domain.domid, ShutdownReason.SUSPEND)
    else:
        lifecycle.request_shutdown(hv, domain.domid, ShutdownReason.SUSPEND)

    def suspended(info: DomainInfo | None) -> bool:
        return info is None or (info.shutdown and info.shutdown_reason == ShutdownReason.SUSPEND)

    what = f"domain {domain.name} to suspend"
    try:
        info = wait_until(hv, domain.domid, suspended, what, SUSPEND_TIMEOUT,
                          hint="its kernel may lack PV suspend support; the request was withdrawn and it runs on")
    except WaitTimeout as e:
        if by_xen:
            raise
        if xs.read_or(control) == "suspend":
            xs.rm(control)  # withdrawn, as libxl does, so the guest does not suspend later by surprise
            raise
        raise WaitTimeout(what, SUSPEND_TIMEOUT, f"it took the request but has not suspended yet; if `xentool list` "
                          f"later shows it suspended, `xentool resume {domain.name}` runs it on") from e
    if info is None:
        raise DomainOperationError("save", domain.name, "the domain went away while suspending")


def resume_quietly(hv: Hypervisor, domain: DomainSummary) -> None:
    try:
        resume_guest(hv, domain.domid, domain.type == GuestType.HVM.value)
    except (XenError, QmpFailed):
        pass  # the save's own error is the one to report; the guest stays suspended, `destroy` ends it
