"""The guest's primary console gets its backend process before the guest runs, so the
console log starts with the guest's first line (``xentool.console``).  A guest migrated here
brings its log's end along, which the backend goes on from."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

from hypercalls.interface import Hypervisor, XenStore
from xentool.console.paths import console_log_path
from xentool.console.service import DeviceModelWatch, start_console_backend, stop_console_backend
from xentool.create.build import RestoreSource
from xentool.create.plan import Bindings, Op, Step
from xentool.lifecycle import destroy
from xentool.savefile import write_all


@dataclass(frozen=True)
class StartConsoleBackend(Op):
    name: str
    uuid: str

    def describe(self) -> str:
        return (f"start the console backend for {{domid}} (ring {{console_mfn}}, evtchn {{console_port}}, "
                f"log {console_log_path(self.uuid)})")

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        # An HVM guest's console is its serial port, which its QEMU serves (xentool.create.device_model_launch).
        serial = None
        if bound.has("serial_socket") and bound.serial_socket is not None:
            # The service destroys a guest whose QEMU died; the lifecycle's destroy is handed to it
            # from here, as the console sits below the lifecycle.  It must not stop itself.
            serial = DeviceModelWatch(bound.serial_socket, bound.dm_pid, self.name,
                                      destroy_domain=functools.partial(destroy, stop_console=False))
        bound.console_pid = start_console_backend(
            hv, bound.domid, self.uuid, bound.console_mfn, bound.console_port, self.name, serial
        )

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if bound.has("domid"):
            stop_console_backend(bound.domid)  # a backend that did not say ready may still run


@dataclass(frozen=True)
class CarryConsoleLog(Op):
    """The log's end that came with a migrated guest becomes its log here (what was in a log of
    that uuid before is replaced: it is this guest's past, as the source had it last)."""

    uuid: str
    source: RestoreSource

    def describe(self) -> str:
        return f"the console log's end that follows Xen's stream in {self.source.describe()} -> {console_log_path(self.uuid)}"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        carried = self.source.read_console_log()
        log = console_log_path(self.uuid)
        log.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            write_all(fd, carried)
        finally:
            os.close(fd)

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        console_log_path(self.uuid).unlink(missing_ok=True)


def plan_console(name: str, uuid: str, restore: RestoreSource | None = None) -> Step:
    carry = (CarryConsoleLog(uuid, restore),) if restore is not None and restore.carries_console_log else ()
    return Step("console", (*carry, StartConsoleBackend(name, uuid)))
