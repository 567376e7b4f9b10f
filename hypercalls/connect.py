"""Choosing a backend from a connection URL.

``sim:///PATH`` is the simulator with its state kept in PATH (shared by every command that names the
same PATH); ``xen`` is the real hypervisor through Xen's libraries.  With no URL, the real backend is
chosen only where this is a dom0 (``/proc/xen/capabilities`` says ``control_d``); anywhere else the
answer is an error that says how to reach a Xen, never a silent switch to the simulator.
"""

from __future__ import annotations

from pathlib import Path

from hypercalls.errors import BackendUnavailable
from hypercalls.interface import Hypervisor

XEN_CAPABILITIES = Path("/proc/xen/capabilities")

NO_XEN_HINT = (
    "run it in the Xen lab with `xentool --lab ...` (real Xen in QEMU), "
    "or use the simulator with `--connect sim:///PATH`"
)


def is_dom0(capabilities: Path = XEN_CAPABILITIES) -> bool:
    try:
        return "control_d" in capabilities.read_text()
    except OSError:
        return False


def open_hypervisor(url: str | None = None) -> Hypervisor:
    # Each backend is imported when it is asked for: the simulator's users need no compiled Xen
    # bindings (a machine without Xen has none), and a dom0 loads no simulator.
    if url is None or url == "":
        if not is_dom0():
            raise BackendUnavailable("no Xen hypervisor here (this is not a Xen dom0)", NO_XEN_HINT)
        url = "xen"
    if url.startswith("sim://"):
        from hypercalls.sim import SimHypervisor

        path = url[len("sim://"):]
        if not path.startswith("/"):
            raise BackendUnavailable(
                f"simulator URL {url!r} needs an absolute state path", "write it as sim:///PATH, e.g. sim:///tmp/xen-sim"
            )
        return SimHypervisor(Path(path))
    if url == "xen":
        from hypercalls.xen import open_xen

        return open_xen()
    raise BackendUnavailable(f"unknown connection {url!r}", "use xen, lab, or sim:///PATH")
