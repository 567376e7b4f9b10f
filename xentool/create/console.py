"""The guest's primary console gets its backend process before the guest runs, so the
console log starts with the guest's first line (``xentool.console``)."""

from __future__ import annotations

import functools
from dataclasses import dataclass

from hypercalls.interface import Hypervisor, XenStore
from xentool.console.paths import console_log_path
from xentool.console.service import DeviceModelWatch, start_console_backend, stop_console_backend
from xentool.create.plan import Bindings, Op, Step
from xentool.lifecycle import destroy


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


def plan_console(name: str, uuid: str) -> Step:
    return Step("console", (StartConsoleBackend(name, uuid),))
