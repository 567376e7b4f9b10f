"""The console backend's serving loop, with a bytearray as the shared page and a pipe as the event
channel (the lab tests drive it against a real guest)."""

from __future__ import annotations

import io
import os
import socket
import threading
import time

from pvdrivers.console import ConsoleBackend
from pvdrivers.console_ring import ConsoleRing, GuestSide


class PipeChannel:
    """An event channel stand-in: the guest's kick is a byte in a pipe."""

    def __init__(self) -> None:
        self.read_fd, self.write_fd = os.pipe()
        self.notifications = 0

    def fileno(self) -> int:
        return self.read_fd

    def kick(self) -> None:
        os.write(self.write_fd, b"!")

    def consume(self) -> None:
        os.read(self.read_fd, 4096)

    def notify(self) -> None:
        self.notifications += 1


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def start(tmp_path, shared: bytearray, log: io.BytesIO):
    channel = PipeChannel()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(tmp_path / "console.sock"))
    listener.listen()
    backend = ConsoleBackend(ConsoleRing(shared), channel, log, listener)
    running = threading.Event()
    running.set()
    thread = threading.Thread(target=backend.serve, args=(running.is_set, 0.05), daemon=True)
    thread.start()
    return backend, channel, running, thread


def test_what_the_guest_printed_before_the_backend_started_is_logged(tmp_path):
    shared, log = bytearray(4096), io.BytesIO()
    GuestSide(shared).print(b"early boot line\n")
    backend, channel, running, thread = start(tmp_path, shared, log)
    wait_for(lambda: log.getvalue() == b"early boot line\n")
    running.clear()
    thread.join(2)
    assert not thread.is_alive()


def test_client_gets_the_log_offset_then_new_output_and_its_input_reaches_the_guest(tmp_path):
    shared, log = bytearray(4096), io.BytesIO()
    guest = GuestSide(shared)
    guest.print(b"before attach\n")
    backend, channel, running, thread = start(tmp_path, shared, log)
    wait_for(lambda: backend.log_length == 14)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(str(tmp_path / "console.sock"))
    client.settimeout(5)
    assert client.recv(64) == b"14\n"
    guest.print(b"after attach\n")
    channel.kick()
    assert client.recv(64) == b"after attach\n"
    client.sendall(b"ls\n")
    got = bytearray()
    wait_for(lambda: got.extend(guest.read_input()) or bytes(got) == b"ls\n")
    assert log.getvalue() == b"before attach\nafter attach\n"
    assert channel.notifications > 0
    client.close()
    running.clear()
    thread.join(2)


def test_output_larger_than_the_ring_arrives_whole_when_the_guest_waits_for_kicks(tmp_path):
    shared, log = bytearray(4096), io.BytesIO()
    guest = GuestSide(shared)
    backend, channel, running, thread = start(tmp_path, shared, log)
    message = b"".join(b"line %05d\n" % i for i in range(2000))
    sent = 0
    while sent < len(message):
        sent += guest.print(message[sent : sent + 512])
        channel.kick()
        time.sleep(0.001)
    wait_for(lambda: log.getvalue() == message)
    running.clear()
    thread.join(2)


def test_output_whose_kick_was_lost_is_drained_on_the_next_poll(tmp_path):
    """A guest with a full ring waits for the backend and kicks no more: if the one kick before
    that was lost, only the poll gets the console going again."""
    shared, log = bytearray(4096), io.BytesIO()
    backend, channel, running, thread = start(tmp_path, shared, log)
    wait_for(lambda: channel.notifications == 1)  # the first pump, with nothing printed yet
    GuestSide(shared).print(b"printed, never kicked\n")
    wait_for(lambda: log.getvalue() == b"printed, never kicked\n")
    running.clear()
    thread.join(2)
