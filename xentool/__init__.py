"""xentool: a Xen toolstack in Python.

    import xentool
    with xentool.connect("sim:///tmp/xen-sim") as xt:
        xt.create("configs/examples/pv-hello.yaml")
        for domain in xt.list_domains():
            print(domain.name, domain.state)
"""

from __future__ import annotations

import importlib

TYPE_CHECKING = False  # typing itself costs an import where dom0's Python starts slowly
if TYPE_CHECKING:
    from typing import Any

# Imported on first use, so that `xentool lab ...` and `--help` do not pay for the whole toolstack
# (Python in the lab's dom0 starts slowly: every module counts).
_EXPORTS = {
    "connect": "xentool.remote",
    "Toolstack": "xentool.api",
    "DomainSummary": "xentool.api",
    "DomainDetails": "xentool.api",
    "HostInfo": "xentool.api",
    "XentoolError": "xentool.errors",
    "ConfigError": "xentool.errors",
    "CreationError": "xentool.errors",
    "DeviceError": "xentool.errors",
    "DomainNotFound": "xentool.errors",
    "NameInUse": "xentool.errors",
    "NoHypervisor": "xentool.errors",
    "WaitTimeout": "xentool.errors",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xentool' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = sorted(_EXPORTS)
