"""The primary console: its xenstore nodes (its frontend is /local/domain/N/console, not under
device/, a history Xen keeps).  It needs nothing of the host that creation does not make itself
(the console backend process, xentool.console.service)."""

from __future__ import annotations

from xentool.devices.disk import INITIALISING
from xentool.devices.nodes import XsNode, device_nodes

# Which daemon serves the primary console.  xenconsoled serves only type "xenconsoled" (it skips the
# "ioemu" consoles QEMU serves, and so ours), so both can run in one dom0 without fighting over a ring.
CONSOLE_TYPE = "xentool"
CONSOLE_LIMIT = 1048576  # LIBXL_XENCONSOLE_LIMIT

# Undone first, before the rest of /local/domain/N goes: xenconsoled reads a console's ring-ref and
# port, then its type, and one that found the first two but no type (the directory removed in
# between) took our console for its own in the lab, mapping its ring (the domain stayed dying) and
# writing console/tty back.  Without ring-ref and port it leaves the console alone.
CONSOLE_RING_NODES = ("/local/domain/{domid}/console/ring-ref", "/local/domain/{domid}/console/port")


def console_nodes(name: str, backend_domid: int = 0) -> tuple[XsNode, ...]:
    return device_nodes(
        "console",
        0,
        backend_domid,
        front={"backend-id": str(backend_domid)},
        ro_front={
            "limit": str(CONSOLE_LIMIT),
            "type": CONSOLE_TYPE,
            "output": "pty",
            "tty": "",
            "port": "{console_port}",
            "ring-ref": "{console_mfn}",
        },
        back={"frontend-id": "{domid}", "online": "1", "state": INITIALISING, "domain": name, "protocol": "vt100"},
        frontend="/local/domain/{domid}/console",
    )
