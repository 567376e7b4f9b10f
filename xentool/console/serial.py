"""An HVM guest's emulated serial port as a console source.

QEMU serves the guest's first serial port on a UNIX socket (xentool.devicemodel.argv); this adapter
gives the socket the two faces :class:`pvdrivers.console.ConsoleBackend` serves — the ring's
(``read_output``/``write_input``) and the event channel's (``fileno``/``consume``/``notify``) — so the
same backend logs it and serves `xentool console` as it does a PV console ring.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable


class SerialGone(Exception):
    """QEMU exited before its serial socket took a connection."""


class SerialStream:
    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.ended = False  # QEMU closed the socket: the device model is gone

    @classmethod
    def connect(cls, path: str, timeout: float = 10.0, alive: Callable[[], bool] = lambda: True) -> SerialStream:
        """Connect to QEMU's serial socket, which QEMU makes early in its start (xentool connects
        while QEMU is still starting); SerialGone once ``alive`` says QEMU is not."""
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return cls(sock)
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if not alive():
                    raise SerialGone(path) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)

    # -- the ring's face ------------------------------------------------------------------------
    def output_pending(self) -> bool:
        return False  # the socket's readability says so; nothing is ever missed between polls

    def read_output(self) -> bytes:
        chunks = []
        while not self.ended:
            try:
                chunk = self.sock.recv(65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                chunk = b""
            if not chunk:
                self.ended = True
                break
            chunks.append(chunk)
        return b"".join(chunks)

    def write_input(self, data: bytes) -> int:
        if self.ended:
            return len(data)  # nobody to type to: drop it rather than hold it forever
        try:
            return self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:
            self.ended = True
            return len(data)

    # -- the event channel's face ---------------------------------------------------------------
    def fileno(self) -> int:
        return self.sock.fileno()

    def consume(self) -> None:
        pass

    def notify(self) -> None:
        pass

    def close(self) -> None:
        self.sock.close()
