"""The PV console ring (xen/include/public/io/console.h), backend side.

One shared page holds two byte rings and their indexes::

    struct xencons_interface {
        char in[1024];            /* backend -> guest (keyboard input) */
        char out[2048];           /* guest -> backend (what the guest prints) */
        XENCONS_RING_IDX in_cons, in_prod;
        XENCONS_RING_IDX out_cons, out_prod;
    };

Indexes are free-running 32-bit counters; a position in a ring is the index masked by the ring size.
The backend consumes ``out`` and produces ``in``, and notifies the guest's event channel after each.
The guest writes the page too, so nothing read from it is trusted: an index that claims more data
than the ring holds is refused.  (x86 keeps stores in order, and each index is read and written
whole, which is what the barriers in the C backends stand for.)
"""

from __future__ import annotations

import struct

IN_SIZE = 1024
OUT_SIZE = 2048
IN_OFFSET = 0
OUT_OFFSET = IN_SIZE
INDEX_OFFSET = IN_SIZE + OUT_SIZE  # in_cons, in_prod, out_cons, out_prod: four uint32
INTERFACE_SIZE = INDEX_OFFSET + 16
_U32 = struct.Struct("<I")
IN_CONS, IN_PROD, OUT_CONS, OUT_PROD = (INDEX_OFFSET + 4 * i for i in range(4))
MASK32 = 0xFFFFFFFF


class RingError(Exception):
    """The guest left the ring in a state no honest frontend produces."""


class ConsoleRing:
    def __init__(self, page: memoryview | bytearray) -> None:
        if len(page) < INTERFACE_SIZE:
            raise ValueError(f"a console ring needs {INTERFACE_SIZE} bytes, got {len(page)}")
        self.page = memoryview(page)

    def _get(self, offset: int) -> int:
        return _U32.unpack_from(self.page, offset)[0]

    def _set(self, offset: int, value: int) -> None:
        _U32.pack_into(self.page, offset, value & MASK32)

    def output_pending(self) -> bool:
        """Whether the guest has printed something the backend has not taken yet."""
        return self._get(OUT_CONS) != self._get(OUT_PROD)

    def read_output(self) -> bytes:
        """Take everything the guest has printed since the last call (and free that space)."""
        cons, prod = self._get(OUT_CONS), self._get(OUT_PROD)
        pending = (prod - cons) & MASK32
        if pending > OUT_SIZE:
            raise RingError(f"guest claims {pending} bytes of output in a {OUT_SIZE}-byte ring")
        data = bytearray()
        while cons != prod:
            start = cons % OUT_SIZE
            chunk = min(OUT_SIZE - start, (prod - cons) & MASK32)
            data += self.page[OUT_OFFSET + start : OUT_OFFSET + start + chunk]
            cons = (cons + chunk) & MASK32
        self._set(OUT_CONS, cons)
        return bytes(data)

    def write_input(self, data: bytes) -> int:
        """Queue keyboard input for the guest; returns how many bytes fitted."""
        cons, prod = self._get(IN_CONS), self._get(IN_PROD)
        used = (prod - cons) & MASK32
        if used > IN_SIZE:
            raise RingError(f"guest claims {used} bytes of unread input in a {IN_SIZE}-byte ring")
        count = min(len(data), IN_SIZE - used)
        for byte in data[:count]:
            self.page[IN_OFFSET + prod % IN_SIZE] = byte
            prod = (prod + 1) & MASK32
        self._set(IN_PROD, prod)  # published last: the guest must not see the index before the bytes
        return count


class GuestSide:
    """The frontend's half of the protocol, for tests of the backend without a guest."""

    def __init__(self, page: memoryview | bytearray) -> None:
        self.ring = ConsoleRing(page)

    def print(self, data: bytes) -> int:
        page, get, put = self.ring.page, self.ring._get, self.ring._set
        cons, prod = get(OUT_CONS), get(OUT_PROD)
        count = min(len(data), OUT_SIZE - ((prod - cons) & MASK32))
        for byte in data[:count]:
            page[OUT_OFFSET + prod % OUT_SIZE] = byte
            prod = (prod + 1) & MASK32
        put(OUT_PROD, prod)
        return count

    def read_input(self) -> bytes:
        page, get, put = self.ring.page, self.ring._get, self.ring._set
        cons, prod = get(IN_CONS), get(IN_PROD)
        data = bytearray()
        while cons != prod:
            data.append(page[IN_OFFSET + cons % IN_SIZE])
            cons = (cons + 1) & MASK32
        put(IN_CONS, cons)
        return bytes(data)
