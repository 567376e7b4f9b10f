"""A guest's console ring and event channel, as xentool's console backend uses them.

The page is mapped the way xenconsoled maps it: through the grant the domain builder put in the
guest's grant table for dom0 (GNTTAB_RESERVED_CONSOLE), and by frame number where there is no such
grant (the ring-ref in xenstore is the frame).
"""

from __future__ import annotations

from hypercalls.errors import XenError
from hypercalls.interface import GuestConsole
from hypercalls.xen.evtchn import EventChannels
from hypercalls.xen.foreignmem import ForeignMemory, MappedPages
from hypercalls.xen.gnttab import GrantTables

GNTTAB_RESERVED_CONSOLE = 0  # xen/include/public/grant_table.h


class XenGuestConsole(GuestConsole):
    def __init__(self, domid: int, ring_ref: int, remote_port: int) -> None:
        self._closers: list = []
        try:
            self._mapping = self._map(domid, ring_ref)
            self.page = memoryview(self._mapping.buffer)
            self._evtchn = EventChannels()
            self._closers.append(self._evtchn.close)
            self._local_port = self._evtchn.bind_interdomain(domid, remote_port)
            self._closers.append(lambda: self._evtchn.unbind(self._local_port))
        except BaseException:
            self.close()
            raise

    def _map(self, domid: int, ring_ref: int) -> MappedPages:
        grants = GrantTables()
        self._closers.append(grants.close)
        try:
            mapping = grants.map_grant_ref(domid, GNTTAB_RESERVED_CONSOLE)
        except XenError:
            foreign = ForeignMemory()
            self._closers.append(foreign.close)
            mapping = foreign.map(domid, [ring_ref])
        self._closers.append(mapping.unmap)
        return mapping

    def fileno(self) -> int:
        return self._evtchn.fd()

    def consume(self) -> None:
        port = self._evtchn.pending()
        self._evtchn.unmask(port)

    def notify(self) -> None:
        self._evtchn.notify(self._local_port)

    def close(self) -> None:
        if hasattr(self, "page"):
            self.page.release()
        while self._closers:
            closer = self._closers.pop()
            try:
                closer()
            except XenError:
                pass  # closing as much as can be closed; the domain's end goes with it anyway
