"""Starting the guests marked autostart when the host boots (libvirt's autostart, XAPI's
auto_poweron): in their autostart_order (then by name), each given its autostart_delay before the
next.  Once per boot: the marker lives in /run, which a boot empties, so a daemon that is started
again does not start guests that were stopped on purpose since.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from xentool.api import Toolstack
from xentool.errors import XentoolError
from xentool.wire import RUN_DIR

AUTOSTARTED = RUN_DIR / "autostarted"


def autostart(connect: Callable[[], Toolstack], note: Callable[[str], None], stopping: threading.Event) -> None:
    with connect() as xt:
        running = {d.name for d in xt.list_domains()}
        wanted = sorted((d for d in xt.defined() if d.autostart), key=lambda d: (d.autostart_order, d.name))
        for definition in wanted:
            if stopping.is_set():
                return
            if definition.name in running:
                note(f"autostart: {definition.name} already runs")
                continue
            try:
                domain = xt.start(definition.name)
            except XentoolError as e:  # one guest that cannot start does not keep the others down
                note(f"autostart: {definition.name} did not start: {e}")
                continue
            note(f"autostart: started {domain.name} (id {domain.domid})")
            stopping.wait(definition.autostart_delay)


__all__ = ["AUTOSTARTED", "autostart"]
