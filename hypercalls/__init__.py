"""Bindings to the Xen hypervisor: one interface (``interface``), two backends (``sim``, ``xen``)."""

from hypercalls.connect import open_hypervisor
from hypercalls.errors import BackendUnavailable, HypervisorError, TransactionConflict, XenError, XenstoreError
from hypercalls.interface import Hypervisor, XenStore

__all__ = [
    "BackendUnavailable",
    "Hypervisor",
    "HypervisorError",
    "TransactionConflict",
    "XenError",
    "XenStore",
    "XenstoreError",
    "open_hypervisor",
]
