"""The console ring protocol, with a bytearray standing in for the shared page."""

import pytest

from pvdrivers.console_ring import _U32, OUT_CONS, OUT_PROD, OUT_SIZE, ConsoleRing, GuestSide, RingError


def page() -> bytearray:
    return bytearray(4096)


def test_backend_reads_what_the_guest_printed_once():
    shared = page()
    guest, backend = GuestSide(shared), ConsoleRing(shared)
    guest.print(b"Linux version 6.1\n")
    assert backend.read_output() == b"Linux version 6.1\n"
    assert backend.read_output() == b""


def test_output_wraps_around_the_ring_end():
    shared = page()
    guest, backend = GuestSide(shared), ConsoleRing(shared)
    seen = bytearray()
    for i in range(50):
        line = f"line {i:03d} ".encode() * 10
        assert guest.print(line) == len(line)
        seen += backend.read_output()
    assert seen == b"".join(f"line {i:03d} ".encode() * 10 for i in range(50))


def test_indexes_wrapping_past_2_to_the_32_keep_working():
    shared = page()
    start = 0xFFFFFFFF - 5
    _U32.pack_into(shared, OUT_CONS, start)
    _U32.pack_into(shared, OUT_PROD, start)
    guest, backend = GuestSide(shared), ConsoleRing(shared)
    guest.print(b"across the wrap")
    assert backend.read_output() == b"across the wrap"


def test_input_reaches_the_guest_and_a_full_ring_takes_only_what_fits():
    shared = page()
    guest, backend = GuestSide(shared), ConsoleRing(shared)
    assert backend.write_input(b"root\n") == 5
    assert guest.read_input() == b"root\n"
    assert backend.write_input(b"x" * 2000) == 1024
    assert guest.read_input() == b"x" * 1024


def test_a_guest_claiming_more_output_than_the_ring_holds_is_refused():
    shared = page()
    _U32.pack_into(shared, OUT_PROD, OUT_SIZE + 1)
    with pytest.raises(RingError):
        ConsoleRing(shared).read_output()
