"""Save and restore with libxenguest's migration stream (xc_domain_save, xc_domain_restore): the
stream format is Xen's (docs/specs/libxc-migration-stream), written to and read from a file
descriptor the caller opened.

xc_domain_save calls back when it wants the guest suspended; that is the toolstack's protocol
(control/shutdown "suspend", then waiting for the domain to stop with reason suspend), so it comes
in as a Python callable.  xc_domain_restore calls back once the stream's static data (CPUID and
MSR policy) is in, to fill in what an old stream lacked, as libxl__srm_callout_callback_static_data_done.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from hypercalls.errors import XenError
from hypercalls.xen.xc import XcHandle, failed_nonzero

_registered: set[int] = set()  # id() of the compiled modules whose extern "Python" hooks are set
Progress = Callable[[str, int, int], None]  # (what is being done, done, total)
# Who hears libxenguest's progress now: one save at a time per process (the daemon forks a process
# per command), so one slot, set for the length of the save.
_progress: list[Progress] = []


@dataclass
class _Callback:
    """What a C callback calls, and the exception it raised (C cannot carry it back)."""

    call: Callable[..., Any]
    error: BaseException | None = field(default=None)


@dataclass
class _SaveCallbacks(_Callback):
    """xc_domain_save's: ``call`` suspends the guest; ``switch_logdirty`` (HVM) turns QEMU's
    dirty-page logging on or off, which libxenguest does around every HVM save, live or not."""

    switch_logdirty: Callable[[bool], None] | None = None


def register(module: Any) -> None:
    """Set the module's extern \"Python\" hooks (once per compiled module)."""
    if id(module) in _registered:
        return
    ffi = module.ffi

    @ffi.def_extern(name="xentool_progress")
    def _on_progress(doing_what: Any, percent: int, done: int, total: int) -> None:
        if _progress:
            try:
                _progress[-1](ffi.string(doing_what).decode(errors="replace"), int(done), int(total))
            except Exception:  # noqa: BLE001 - a display's failure must not fail the save
                _progress.clear()

    @ffi.def_extern(name="xentool_save_suspend")
    def _suspend(data: Any) -> int:  # 1: suspended, 0: failed (xg_sr_save.c's suspend_domain)
        callback: _Callback = ffi.from_handle(data)
        try:
            return 1 if callback.call() else 0
        except BaseException as e:  # noqa: BLE001 - re-raised once xc_domain_save returns
            callback.error = e
            return 0

    @ffi.def_extern(name="xentool_restore_static_data_done")
    def _static_data_done(missing: int, data: Any) -> int:  # 0: go on
        callback: _Callback = ffi.from_handle(data)
        try:
            callback.call(missing)
            return 0
        except BaseException as e:  # noqa: BLE001
            callback.error = e
            return -1

    @ffi.def_extern(name="xentool_save_switch_qemu_logdirty")
    def _switch_qemu_logdirty(domid: int, enable: int, data: Any) -> int:  # 0: done
        callback: _SaveCallbacks = ffi.from_handle(data)
        try:
            if callback.switch_logdirty is None:
                raise XenError("xc_domain_save", errno.EOPNOTSUPP, domid,
                               "no way to switch the device model's dirty-page logging")
            callback.switch_logdirty(bool(enable))
            return 0
        except BaseException as e:  # noqa: BLE001
            callback.error = e
            return -1

    _registered.add(id(module))


def save(xc: XcHandle, domid: int, fd: int, suspend: Callable[[], bool],
         switch_logdirty: Callable[[bool], None] | None = None, live: bool = False,
         progress: Progress | None = None) -> None:
    """Write ``domid``'s state to ``fd``: not live, the guest is suspended first (by ``suspend``);
    live, libxenguest copies its memory while it runs (dirty-page logging, its default pre-copy
    policy: rounds until little is left or enough rounds were made) and suspends it for the last.
    ``progress`` hears libxenguest's reports: what it does ("Frames iteration 1 of 5", ...), pages
    done, pages in all."""
    register(xc.module)
    if progress is not None:
        _progress.append(progress)
    try:
        _save(xc, domid, fd, suspend, switch_logdirty, live)
    finally:
        if progress is not None and progress in _progress:
            _progress.remove(progress)


def _save(xc: XcHandle, domid: int, fd: int, suspend: Callable[[], bool],
          switch_logdirty: Callable[[bool], None] | None, live: bool) -> None:
    ffi, lib = xc.ffi, xc.lib
    callback = _SaveCallbacks(suspend, switch_logdirty=switch_logdirty)
    handle = ffi.new_handle(callback)
    callbacks = ffi.new("struct save_callbacks *")
    callbacks.suspend = lib.xentool_save_suspend
    callbacks.switch_qemu_logdirty = lib.xentool_save_switch_qemu_logdirty
    callbacks.data = handle
    try:
        xc.call("xc_domain_save", lib.xc_domain_save, xc.xch, fd, domid, lib.XCFLAGS_LIVE if live else 0, callbacks,
                lib.XC_STREAM_PLAIN, -1,
                domid=domid, failed=failed_nonzero)
    except XenError:
        if callback.error is not None:
            raise callback.error from None
        raise


def restore(xc: XcHandle, domid: int, fd: int, store_evtchn: int, console_evtchn: int,
            store_domid: int = 0, console_domid: int = 0) -> tuple[int, int]:
    """Read a saved domain from ``fd`` into the new, empty ``domid``; returns the frames of its
    xenstore and console pages (MFNs for PV).  The domain stays paused.  libxenguest itself sets
    the guest width, TSC and CPUID from the stream and seeds the console and xenstore grant entries
    (x86_pv_stream_complete)."""
    register(xc.module)
    ffi, lib = xc.ffi, xc.lib

    def static_data_done(missing: int) -> None:
        # A stream from before Xen 4.14 carries no CPUID policy: the guest gets a new domain's.
        if missing & lib.XGR_SDD_MISSING_CPUID:
            xc.call("xc_cpuid_apply_policy", lib.xc_cpuid_apply_policy, xc.xch, domid, True, ffi.NULL, 0,
                    True, False, False, ffi.NULL, ffi.NULL, domid=domid)

    callback = _Callback(static_data_done)
    handle = ffi.new_handle(callback)
    callbacks = ffi.new("struct restore_callbacks *")
    callbacks.static_data_done = lib.xentool_restore_static_data_done
    callbacks.data = handle
    store_mfn = ffi.new("unsigned long *")
    console_mfn = ffi.new("unsigned long *")
    try:
        xc.call("xc_domain_restore", lib.xc_domain_restore, xc.xch, fd, domid, store_evtchn, store_mfn, store_domid,
                console_evtchn, console_mfn, console_domid, lib.XC_STREAM_PLAIN, callbacks, -1,
                domid=domid, failed=failed_nonzero)
    except XenError:
        if callback.error is not None:
            raise callback.error from None
        raise
    return int(store_mfn[0]), int(console_mfn[0])


def resume(xc: XcHandle, domid: int) -> None:
    """Let a guest that was suspended for a checkpoint go on (xc_domain_resume, cooperative: the
    guest's suspend hypercall returns 1, "cancelled", and it carries on with its devices)."""
    xc.call("xc_domain_resume", xc.lib.xc_domain_resume, xc.xch, domid, 1, domid=domid, failed=failed_nonzero)


__all__ = ["restore", "resume", "save"]
