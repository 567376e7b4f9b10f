"""Event channels from dom0's side (libxenevtchn over /dev/xen/evtchn), for the backends.

A backend binds to the port a guest allocated for it, waits for notifications on the handle's file
descriptor (``fd()``, usable with select/asyncio), reads which port fired with ``pending()``,
re-enables it with ``unmask()``, and kicks the guest with ``notify()``.
"""

from __future__ import annotations

from types import ModuleType

from hypercalls.errors import XenError
from hypercalls.xen import _lib
from hypercalls.xen.errors import xen_error


class EventChannels:
    def __init__(self, module: ModuleType | None = None) -> None:
        if module is None:
            module = _lib.load()
        self._ffi = module.ffi
        self._lib = module.lib
        handle = self._lib.xenevtchn_open(self._ffi.NULL, 0)
        if handle == self._ffi.NULL:
            raise xen_error("xenevtchn_open", self._ffi.errno, None, "is /dev/xen/evtchn there (xen-evtchn module)?")
        self._h = handle

    def _handle(self):
        if self._h is None:
            raise XenError("xenevtchn", 9, None, "the event channel handle is closed")  # EBADF
        return self._h

    def fd(self) -> int:
        fd = self._lib.xenevtchn_fd(self._handle())
        if fd < 0:
            raise xen_error("xenevtchn_fd", self._ffi.errno)
        return fd

    def bind_interdomain(self, domid: int, remote_port: int) -> int:
        """Bind to ``remote_port`` of ``domid``; returns the local port."""
        port = self._lib.xenevtchn_bind_interdomain(self._handle(), domid, remote_port)
        if port < 0:
            raise xen_error("xenevtchn_bind_interdomain", self._ffi.errno, domid, f"remote port {remote_port}")
        return port

    def notify(self, port: int) -> None:
        if self._lib.xenevtchn_notify(self._handle(), port) < 0:
            raise xen_error("xenevtchn_notify", self._ffi.errno, None, f"port {port}")

    def pending(self) -> int:
        """The next port that fired (blocks unless fd() was readable)."""
        port = self._lib.xenevtchn_pending(self._handle())
        if port < 0:
            raise xen_error("xenevtchn_pending", self._ffi.errno)
        return port

    def unmask(self, port: int) -> None:
        if self._lib.xenevtchn_unmask(self._handle(), port) < 0:
            raise xen_error("xenevtchn_unmask", self._ffi.errno, None, f"port {port}")

    def unbind(self, port: int) -> None:
        if self._lib.xenevtchn_unbind(self._handle(), port) < 0:
            raise xen_error("xenevtchn_unbind", self._ffi.errno, None, f"port {port}")

    def close(self) -> None:
        if self._h is not None:
            rc = self._lib.xenevtchn_close(self._h)
            self._h = None
            if rc < 0:
                raise xen_error("xenevtchn_close", self._ffi.errno)

    def __enter__(self) -> EventChannels:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
