"""Mapping a guest's frames by number (libxenforeignmemory over privcmd), for the backends.

The console backend maps a PV guest's console ring by the frame the builder reported
(console_mfn), as xenconsoled does when the guest has no grant for it.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType

from hypercalls.xen import _lib
from hypercalls.xen.errors import xen_error

PAGE_SIZE = 4096


class MappedPages:
    """Pages mapped into this process: ``buffer`` is a writable memoryview-like cffi buffer."""

    def __init__(self, ffi, addr, pages: int, unmap: Callable[[object, int], None]) -> None:
        self._ffi = ffi
        self.addr = addr
        self.pages = pages
        self._unmap = unmap
        self.buffer = ffi.buffer(ffi.cast("char *", addr), pages * PAGE_SIZE)

    def unmap(self) -> None:
        if self.addr is not None:
            addr, self.addr = self.addr, None
            self.buffer = None
            self._unmap(addr, self.pages)

    def __enter__(self) -> MappedPages:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unmap()


class ForeignMemory:
    def __init__(self, module: ModuleType | None = None) -> None:
        if module is None:
            module = _lib.load()
        self._ffi = module.ffi
        self._lib = module.lib
        handle = self._lib.xenforeignmemory_open(self._ffi.NULL, 0)
        if handle == self._ffi.NULL:
            raise xen_error("xenforeignmemory_open", self._ffi.errno, None, "is /dev/xen/privcmd there?")
        self._h = handle

    def map(self, domid: int, frames: list[int], writable: bool = True) -> MappedPages:
        ffi, lib = self._ffi, self._lib
        prot = lib.PROT_READ | (lib.PROT_WRITE if writable else 0)
        arr = ffi.new("xen_pfn_t[]", frames)
        err = ffi.new("int[]", len(frames))
        addr = lib.xenforeignmemory_map(self._h, domid, prot, len(frames), arr, err)
        if addr == ffi.NULL:
            raise xen_error("xenforeignmemory_map", ffi.errno, domid, f"frames {frames}")
        failed = [(frames[i], -err[i]) for i in range(len(frames)) if err[i]]
        if failed:
            lib.xenforeignmemory_unmap(self._h, addr, len(frames))
            frame, code = failed[0]
            raise xen_error("xenforeignmemory_map", code, domid, f"frame {frame:#x}")
        return MappedPages(ffi, addr, len(frames), lambda a, n: self._unmap(a, n, domid))

    def _unmap(self, addr, pages: int, domid: int) -> None:
        if self._lib.xenforeignmemory_unmap(self._h, addr, pages) != 0:
            raise xen_error("xenforeignmemory_unmap", self._ffi.errno, domid)

    def close(self) -> None:
        if self._h is not None:
            rc = self._lib.xenforeignmemory_close(self._h)
            self._h = None
            if rc != 0:
                raise xen_error("xenforeignmemory_close", self._ffi.errno)

    def __enter__(self) -> ForeignMemory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
