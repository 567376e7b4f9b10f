"""The real backend: cffi bindings to Xen's own libraries (issue 4 brings it).

Until then this module says plainly that the real backend is not there, rather than pretending.
"""

from __future__ import annotations

from hypercalls.errors import BackendUnavailable
from hypercalls.interface import Hypervisor


def open_xen() -> Hypervisor:
    raise BackendUnavailable(
        "the real Xen backend (cffi bindings to libxenctrl and friends) is not built yet",
        "use the simulator with `--connect sim:///PATH` meanwhile",
    )
