"""xenstore through libxenstore (``xs_*``), as the :class:`XenStore` interface.

Transactions are libxenstore's ``xs_transaction_t`` numbers; ``None`` is ``XBT_NULL`` (a single,
immediate operation).  Watch events are read without blocking the caller beyond ``timeout``:
libxenstore queues them from its reader thread and makes ``xs_fileno()`` readable, so we wait on
that descriptor with ``select`` and then drain with ``xs_check_watch``.
"""

from __future__ import annotations

import errno
import select
import threading
import time
from types import ModuleType

from hypercalls.errors import TransactionConflict, XenstoreError
from hypercalls.interface import WatchEvent, XenStore, XsPerm, XsPermission
from hypercalls.xen.errors import xenstore_error

# xenstore_lib.h's XS_PERM_READ / XS_PERM_WRITE; repeated here so that encoding can be used (and
# tested) without the compiled module.  The loaded module is checked against them.
XS_PERM_NONE = 0x00
XS_PERM_READ = 0x01
XS_PERM_WRITE = 0x02

_PERM_BITS = {
    XsPerm.NONE: XS_PERM_NONE,
    XsPerm.READ: XS_PERM_READ,
    XsPerm.WRITE: XS_PERM_WRITE,
    XsPerm.BOTH: XS_PERM_READ | XS_PERM_WRITE,
}
_BITS_PERM = {bits: perm for perm, bits in _PERM_BITS.items()}


def perm_to_bits(perm: XsPerm) -> int:
    return _PERM_BITS[perm]


def bits_to_perm(bits: int) -> XsPerm:
    """The letter for a ``struct xs_permissions.perms`` value (internal flag bits ignored)."""
    return _BITS_PERM[bits & (XS_PERM_READ | XS_PERM_WRITE)]


def encode_perms(permissions: tuple[XsPermission, ...]) -> list[tuple[int, int]]:
    """(id, perms) pairs for ``struct xs_permissions``; the first entry is the owner."""
    if not permissions:
        raise ValueError("a xenstore permission list needs at least the owner")
    return [(p.domid, perm_to_bits(p.perm)) for p in permissions]


def decode_perms(pairs: list[tuple[int, int]]) -> tuple[XsPermission, ...]:
    return tuple(XsPermission(domid, bits_to_perm(bits)) for domid, bits in pairs)


def _txn_handle(txn: object | None) -> int:
    if txn is None:
        return 0  # XBT_NULL
    if not isinstance(txn, int) or txn <= 0:
        raise TypeError(f"not a xenstore transaction: {txn!r}")
    return txn


class XenXenStore(XenStore):
    """One ``xs_open(0)`` connection (a socket to xenstored in dom0, or /dev/xen/xenbus)."""

    def __init__(self, module: ModuleType) -> None:
        self._ffi = module.ffi
        self._lib = module.lib
        assert (self._lib.XS_PERM_READ, self._lib.XS_PERM_WRITE) == (XS_PERM_READ, XS_PERM_WRITE)
        self._lock = threading.Lock()
        handle = self._lib.xs_open(0)
        if handle == self._ffi.NULL:
            raise xenstore_error(
                "xs_open", self._ffi.errno, "/", detail="cannot connect to xenstored (is it running in dom0?)"
            )
        self._h = handle
        # Creating the watch pipe now means no event queued before the first read_watch is lost.
        self._watch_fd = self._lib.xs_fileno(handle)
        if self._watch_fd < 0:
            e = self._ffi.errno
            self._lib.xs_close(handle)
            self._h = None
            raise xenstore_error("xs_fileno", e, "/")

    # -- plumbing -------------------------------------------------------------------------------
    def _handle(self):
        if self._h is None:
            raise XenstoreError("xs", errno.EBADF, "/", detail="the xenstore connection is closed")
        return self._h

    def _fail(self, op: str, path: str) -> XenstoreError:
        return xenstore_error(op, self._ffi.errno, path)

    # -- nodes ----------------------------------------------------------------------------------
    def read(self, path: str, txn: object | None = None) -> str:
        length = self._ffi.new("unsigned int *")
        value = self._lib.xs_read(self._handle(), _txn_handle(txn), path.encode(), length)
        if value == self._ffi.NULL:
            raise self._fail("read", path)
        try:
            return bytes(self._ffi.buffer(value, length[0])).decode("utf-8", "surrogateescape")
        finally:
            self._lib.free(value)

    def write(self, path: str, value: str, txn: object | None = None) -> None:
        data = value.encode("utf-8", "surrogateescape")
        if not self._lib.xs_write(self._handle(), _txn_handle(txn), path.encode(), data, len(data)):
            raise self._fail("write", path)

    def mkdir(self, path: str, txn: object | None = None) -> None:
        if not self._lib.xs_mkdir(self._handle(), _txn_handle(txn), path.encode()):
            raise self._fail("mkdir", path)

    def rm(self, path: str, txn: object | None = None) -> None:
        if not self._lib.xs_rm(self._handle(), _txn_handle(txn), path.encode()):
            e = self._ffi.errno
            if e == errno.ENOENT:
                return
            raise xenstore_error("rm", e, path)

    def directory(self, path: str, txn: object | None = None) -> list[str]:
        count = self._ffi.new("unsigned int *")
        entries = self._lib.xs_directory(self._handle(), _txn_handle(txn), path.encode(), count)
        if entries == self._ffi.NULL:
            e = self._ffi.errno
            if e == 0:  # libxenstore returns NULL for an empty directory on some versions
                return []
            raise xenstore_error("directory", e, path)
        try:
            return [self._ffi.string(entries[i]).decode("utf-8", "surrogateescape") for i in range(count[0])]
        finally:
            self._lib.free(entries)  # one allocation holds the array and the strings

    def get_perms(self, path: str, txn: object | None = None) -> tuple[XsPermission, ...]:
        count = self._ffi.new("unsigned int *")
        entries = self._lib.xs_get_permissions(self._handle(), _txn_handle(txn), path.encode(), count)
        if entries == self._ffi.NULL:
            raise self._fail("get_perms", path)
        try:
            return decode_perms([(entries[i].id, entries[i].perms) for i in range(count[0])])
        finally:
            self._lib.free(entries)

    def set_perms(self, path: str, permissions: tuple[XsPermission, ...], txn: object | None = None) -> None:
        pairs = encode_perms(permissions)
        array = self._ffi.new("struct xs_permissions[]", len(pairs))
        for i, (domid, bits) in enumerate(pairs):
            array[i].id = domid
            array[i].perms = bits
        if not self._lib.xs_set_permissions(self._handle(), _txn_handle(txn), path.encode(), array, len(pairs)):
            raise self._fail("set_perms", path)

    # -- transactions ---------------------------------------------------------------------------
    def transaction_start(self) -> object:
        handle = self._lib.xs_transaction_start(self._handle())
        if handle == 0:
            raise self._fail("transaction_start", "/")
        return int(handle)

    def transaction_end(self, txn: object, abort: bool = False) -> None:
        if not self._lib.xs_transaction_end(self._handle(), _txn_handle(txn), bool(abort)):
            e = self._ffi.errno
            if e == errno.EAGAIN and not abort:
                raise TransactionConflict()
            raise xenstore_error("transaction_end", e, "(transaction)")

    # -- watches --------------------------------------------------------------------------------
    def watch(self, path: str, token: str) -> None:
        if not self._lib.xs_watch(self._handle(), path.encode(), token.encode()):
            raise self._fail("watch", path)

    def unwatch(self, path: str, token: str) -> None:
        if not self._lib.xs_unwatch(self._handle(), path.encode(), token.encode()):
            raise self._fail("unwatch", path)

    def _check_watch(self) -> WatchEvent | None:
        event = self._lib.xs_check_watch(self._handle())
        if event == self._ffi.NULL:
            e = self._ffi.errno
            if e == errno.EAGAIN:
                return None
            raise xenstore_error("read_watch", e, "(watch)")
        try:
            return WatchEvent(
                path=self._ffi.string(event[self._lib.XS_WATCH_PATH]).decode("utf-8", "surrogateescape"),
                token=self._ffi.string(event[self._lib.XS_WATCH_TOKEN]).decode("utf-8", "surrogateescape"),
            )
        finally:
            self._lib.free(event)

    def read_watch(self, timeout: float | None) -> WatchEvent | None:
        deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
        while True:
            event = self._check_watch()
            if event is not None:
                return event
            remaining = None if deadline is None else deadline - time.monotonic()
            if remaining is not None and remaining <= 0:
                return None
            readable, _, _ = select.select([self._watch_fd], [], [], remaining)
            if not readable and deadline is not None and time.monotonic() >= deadline:
                return None

    # -- domains --------------------------------------------------------------------------------
    def introduce_domain(self, domid: int, store_mfn: int, store_evtchn: int) -> None:
        if not self._lib.xs_introduce_domain(self._handle(), domid, store_mfn, store_evtchn):
            raise xenstore_error("introduce_domain", self._ffi.errno, "@introduceDomain", domid)

    def release_domain(self, domid: int) -> None:
        if not self._lib.xs_release_domain(self._handle(), domid):
            raise xenstore_error("release_domain", self._ffi.errno, "@releaseDomain", domid)

    def resume_domain(self, domid: int) -> None:
        """xenstored forgets that the domain had shut down (XS_RESUME), after a checkpoint's
        suspend, so that it reports the guest's next shutdown on @releaseDomain again."""
        if not self._lib.xs_resume_domain(self._handle(), domid):
            raise xenstore_error("resume_domain", self._ffi.errno, "@releaseDomain", domid)

    def close(self) -> None:
        with self._lock:
            if self._h is not None:
                self._lib.xs_close(self._h)
                self._h = None
