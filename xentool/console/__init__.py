"""xentool's PV console service: one backend process per guest, a log per guest, and attaching.

On real Xen the guest's primary console is a shared ring page plus an event channel; xentool serves it
itself (``console/type`` is ``xentool`` in xenstore, so a xenconsoled running in the same dom0 leaves
it alone, as it leaves QEMU's consoles).  The backend process is forked at creation, before the
guest runs, so the log holds the guest's first line; it ends when the domain shuts down or is
destroyed.  ``xentool console`` talks to it over a Unix socket; ``console --log`` reads the log.
"""

from xentool.console.paths import console_log_path, console_socket_path
from xentool.console.service import start_console_backend, stop_console_backend

__all__ = ["console_log_path", "console_socket_path", "start_console_backend", "stop_console_backend"]
