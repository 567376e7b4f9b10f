"""A PV console backend: serves one guest's console ring to a log and to attached clients.

The guest prints into the ``out`` ring of its console page and kicks its event channel; the backend
takes the bytes, appends them to the domain's log (so nothing the guest printed is lost, from its
first line, whether or not anyone is attached) and forwards them to every attached client.  Bytes
a client sends go into the ``in`` ring as keyboard input.  After every move the backend kicks the
guest back: a guest whose ``out`` ring is full waits for that kick before it prints more.

Clients attach over a Unix socket.  On accept the backend sends one line with the log's length at
that moment, so a client can print the log up to exactly there and then stream what follows
without losing or repeating a byte.

This module knows the protocol only: mapping the page, binding the event channel and deciding when
the domain is gone are the caller's (``xentool.console``).
"""

from __future__ import annotations

import selectors
import socket
from collections.abc import Callable
from typing import BinaryIO, Protocol

from pvdrivers.console_ring import ConsoleRing


class EventChannel(Protocol):
    """The backend's end of the guest's console event channel (an interdomain binding)."""

    def fileno(self) -> int: ...

    def consume(self) -> None:
        """Take the pending notification and unmask the port so the next one arrives."""

    def notify(self) -> None: ...


class ConsoleBackend:
    def __init__(self, ring: ConsoleRing, channel: EventChannel, log: BinaryIO, listener: socket.socket | None = None):
        self.ring = ring
        self.channel = channel
        self.log = log
        self.listener = listener
        self.clients: list[socket.socket] = []
        self.pending_input = bytearray()  # what a client typed that did not fit in the ring yet
        self.log_length = log.tell()
        self._selector: selectors.BaseSelector | None = None

    def pump(self) -> None:
        """Move whatever is waiting in both directions, then kick the guest once."""
        output = self.ring.read_output()
        if output:
            self.log.write(output)
            self.log.flush()
            self.log_length += len(output)
            for client in list(self.clients):
                try:
                    client.sendall(output)
                except OSError:
                    self._drop(client)
        if self.pending_input:
            taken = self.ring.write_input(bytes(self.pending_input))
            del self.pending_input[:taken]
        self.channel.notify()

    def serve(self, alive: Callable[[], bool], poll_interval: float = 1.0) -> None:
        """Serve until ``alive()`` says the domain is gone (asked every ``poll_interval`` seconds)."""
        selector = self._selector = selectors.DefaultSelector()
        selector.register(self.channel.fileno(), selectors.EVENT_READ, "evtchn")
        if self.listener is not None:
            self.listener.setblocking(False)
            selector.register(self.listener, selectors.EVENT_READ, "listener")
        self.pump()  # what the guest printed before we were here
        try:
            while alive():
                ready = selector.select(poll_interval)
                if not ready and self.ring.output_pending():
                    # A kick we never saw (a guest whose ring is full prints nothing more, and so
                    # kicks no more, until we drain it): drain on the poll as well, so a lost
                    # event costs a second, not the rest of the guest's console.
                    self.pump()
                for key, _ in ready:
                    if key.data == "evtchn":
                        self.channel.consume()
                        self.pump()
                        if getattr(self.ring, "ended", False):
                            # A stream source (an HVM guest's serial socket) that closed would
                            # read as ready forever; a ring never ends.
                            selector.unregister(key.fileobj)
                    elif key.data == "listener":
                        self._accept()
                    else:
                        self._read_client(key.fileobj)  # type: ignore[arg-type]
            self.pump()  # the last words of a guest that just shut down
        finally:
            for client in list(self.clients):
                self._drop(client)
            selector.close()
            self._selector = None

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()  # type: ignore[union-attr]
        except BlockingIOError:
            return
        try:
            client.sendall(b"%d\n" % self.log_length)
        except OSError:
            client.close()
            return
        self.clients.append(client)
        if self._selector is not None:
            self._selector.register(client, selectors.EVENT_READ, "client")

    def _read_client(self, client: socket.socket) -> None:
        try:
            data = client.recv(4096)
        except OSError:
            data = b""
        if not data:
            self._drop(client)
            return
        self.pending_input += data
        self.pump()

    def _drop(self, client: socket.socket) -> None:
        if client in self.clients:
            self.clients.remove(client)
        if self._selector is not None:
            try:
                self._selector.unregister(client)
            except (KeyError, ValueError):
                pass
        client.close()
