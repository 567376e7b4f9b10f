"""The real backend: cffi bindings (API mode) to Xen 4.17's own libraries.

``open_xen()`` loads the compiled bindings (compiling them first where gcc and libxen-dev are
present) and opens the control interface.  Importing this package needs neither: installing
xentool and using the simulator work on machines without Xen's headers or libraries.

Modules: ``ctrl`` (:class:`XenHypervisor` over libxenctrl), ``store`` (xenstore over libxenstore),
``domain_builder`` (PV/PVH with libxenguest's xc_dom_*), ``evtchn``/``gnttab``/``foreignmem`` (for
the backends in dom0), ``build`` (``python -m hypercalls.xen.build`` compiles the bindings).
"""

from __future__ import annotations

from types import ModuleType

from hypercalls.xen import _lib
from hypercalls.xen.ctrl import XenHypervisor


def load_bindings() -> ModuleType:
    """The compiled module (``.ffi``, ``.lib``); raises BackendUnavailable saying what is missing."""
    return _lib.load()


def open_xen() -> XenHypervisor:
    return XenHypervisor(load_bindings())


__all__ = ["open_xen", "load_bindings"]
