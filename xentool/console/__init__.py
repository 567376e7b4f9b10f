"""xentool's PV console service: one backend process per guest, a log per guest, and attaching.

On real Xen the guest's primary console is a shared ring page plus an event channel; xentool serves it
itself (``console/type`` is ``xentool`` in xenstore, so a xenconsoled running in the same dom0 leaves
it alone, as it leaves QEMU's consoles).  The backend process is forked at creation, before the
guest runs, so the log holds the guest's first line; it ends when the domain shuts down or is
destroyed.  ``xentool console`` talks to it over a Unix socket; ``console --log`` reads the log.

The modules are imported by name (xentool.console.paths, .service, ...), not re-exported here: the
device model's process module needs the paths, and the service needs that module back.
"""
