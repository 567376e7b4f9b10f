"""Errors raised by the hypervisor backends.

Every failing call becomes one of these, carrying what was attempted (``op``), the errno the
hypervisor or xenstore answered, and the domain it concerned.  Nothing above ``hypercalls`` needs to
know which backend raised it.
"""

from __future__ import annotations

import errno as errno_module
import os


class HypervisorError(Exception):
    """Root of everything the hypervisor layer raises."""


class XenError(HypervisorError):
    """A hypercall (or a call into one of Xen's libraries) failed."""

    def __init__(self, op: str, errno: int, domid: int | None = None, detail: str = "") -> None:
        self.op = op
        self.errno = errno
        self.domid = domid
        self.detail = detail
        super().__init__(str(self))

    @property
    def errno_name(self) -> str:
        return errno_module.errorcode.get(self.errno, f"errno {self.errno}")

    def __str__(self) -> str:
        where = f" on domain {self.domid}" if self.domid is not None else ""
        meaning = os.strerror(self.errno) if self.errno else "failed"
        extra = f": {self.detail}" if self.detail else ""
        return f"{self.op}{where} failed: {self.errno_name} ({meaning}){extra}"


class XenstoreError(XenError):
    """A xenstore operation failed; ``path`` is the node it was about."""

    def __init__(self, op: str, errno: int, path: str, domid: int | None = None, detail: str = "") -> None:
        self.path = path
        super().__init__(op, errno, domid, detail)

    def __str__(self) -> str:
        meaning = os.strerror(self.errno) if self.errno else "failed"
        extra = f": {self.detail}" if self.detail else ""
        return f"xenstore {self.op} {self.path} failed: {self.errno_name} ({meaning}){extra}"


class TransactionConflict(XenstoreError):
    """The transaction saw a concurrent change (EAGAIN); the caller retries the whole transaction."""

    def __init__(self, path: str = "") -> None:
        super().__init__("transaction_end", errno_module.EAGAIN, path or "(transaction)")


class BackendUnavailable(HypervisorError):
    """The requested backend cannot be used on this machine (no Xen, missing library, bad URL).

    ``hint`` tells the user what to do about it (install a package, use the lab or the simulator).
    """

    def __init__(self, message: str, hint: str = "") -> None:
        self.message = message
        self.hint = hint
        super().__init__(f"{message}; {hint}" if hint else message)
