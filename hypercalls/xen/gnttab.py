"""Mapping pages a guest granted to dom0 (libxengnttab over /dev/xen/gntdev), for the backends."""

from __future__ import annotations

from types import ModuleType

from hypercalls.xen import _lib
from hypercalls.xen.errors import xen_error
from hypercalls.xen.foreignmem import MappedPages

PAGE_SIZE = 4096


class GrantTables:
    def __init__(self, module: ModuleType | None = None) -> None:
        if module is None:
            module = _lib.load()
        self._ffi = module.ffi
        self._lib = module.lib
        handle = self._lib.xengnttab_open(self._ffi.NULL, 0)
        if handle == self._ffi.NULL:
            raise xen_error("xengnttab_open", self._ffi.errno, None, "is /dev/xen/gntdev there (xen-gntdev module)?")
        self._h = handle

    def map_grant_ref(self, domid: int, ref: int, writable: bool = True) -> MappedPages:
        """Map one granted page; the result is a writable buffer, to ``unmap()`` when done."""
        prot = self._lib.PROT_READ | (self._lib.PROT_WRITE if writable else 0)
        addr = self._lib.xengnttab_map_grant_ref(self._h, domid, ref, prot)
        if addr == self._ffi.NULL:
            raise xen_error("xengnttab_map_grant_ref", self._ffi.errno, domid, f"grant ref {ref}")
        return MappedPages(self._ffi, addr, 1, lambda a, n: self._unmap(a, n, domid))

    def _unmap(self, addr, count: int, domid: int) -> None:
        if self._lib.xengnttab_unmap(self._h, addr, count) != 0:
            raise xen_error("xengnttab_unmap", self._ffi.errno, domid)

    def close(self) -> None:
        if self._h is not None:
            rc = self._lib.xengnttab_close(self._h)
            self._h = None
            if rc != 0:
                raise xen_error("xengnttab_close", self._ffi.errno)

    def __enter__(self) -> GrantTables:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
