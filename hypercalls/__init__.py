"""Bindings to the Xen hypervisor: one interface (``interface``), two backends (``sim``, ``xen``).

The names below are imported on first use: ``hypercalls.errors`` alone (what the CLI needs to
report a failure) should not pull in the interface and the backend chooser.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hypercalls.connect import open_hypervisor
    from hypercalls.errors import BackendUnavailable, HypervisorError, TransactionConflict, XenError, XenstoreError
    from hypercalls.interface import Hypervisor, XenStore

_EXPORTS = {
    "BackendUnavailable": "hypercalls.errors",
    "Hypervisor": "hypercalls.interface",
    "HypervisorError": "hypercalls.errors",
    "TransactionConflict": "hypercalls.errors",
    "XenError": "hypercalls.errors",
    "XenStore": "hypercalls.interface",
    "XenstoreError": "hypercalls.errors",
    "open_hypervisor": "hypercalls.connect",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hypercalls' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


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
