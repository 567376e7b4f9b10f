"""A migration carried over a socket (the daemons' mutual-TLS connection) for code that reads and
writes file descriptors: xc_domain_save writes Xen's stream to an fd and xc_domain_restore reads it
from one, and neither can speak TLS.  Each end gets two pipes, and one thread moves the bytes
between them and the socket, both ways: one thread, because an OpenSSL connection must not be
read and written by two threads at once.

The answers that come back while a stream goes out are a few hundred bytes, far below what the
kernel buffers, so the thread blocking on a send never keeps the other end from being heard.
Closing the local writing end (or the peer closing the connection) ends the relay and the
connection: that is how either end of a migration says it has given up, as closing ssh's pipe does.
TCP keepalive ends a connection whose link has dropped within about half a minute (ssh's
ServerAlive does the same for the ssh transport).
"""

from __future__ import annotations

import os
import select
import socket
import ssl
import threading

from xentool.savefile import write_all

KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 5, 5, 6  # seconds, seconds, probes
CHUNK = 1 << 20


def keep_alive(sock: socket.socket) -> None:
    """Probe an idle connection, so one whose link dropped ends instead of waiting for ever."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if sock.family in (socket.AF_INET, socket.AF_INET6):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)
        # Unacknowledged data (a stream the peer stopped reading) also ends it, not only silence.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, 1000 * KEEPALIVE_INTERVAL * KEEPALIVE_COUNT)


class SocketRelay:
    """``outgoing``: an fd whose bytes go to the peer; ``incoming``: an fd the peer's bytes come
    out of.  ``already``: bytes read from the socket before the relay began (they come out first)."""

    def __init__(self, sock: socket.socket, already: bytes = b"", name: str = "migration-relay") -> None:
        self._sock = sock
        sock.settimeout(None)
        keep_alive(sock)
        out_read, self.outgoing = os.pipe2(os.O_CLOEXEC)
        self.incoming, in_write = os.pipe2(os.O_CLOEXEC)
        self._thread = threading.Thread(target=self._run, args=(out_read, in_write, already), name=name, daemon=True)
        self._thread.start()

    def _run(self, out_read: int, in_write: int, already: bytes) -> None:
        sock = self._sock
        try:
            if already:
                write_all(in_write, already)
            while True:
                pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0  # decrypted, not yet read
                readable: list[int] = [sock.fileno()] if pending else select.select([sock.fileno(), out_read], [], [])[0]
                if sock.fileno() in readable:
                    data = sock.recv(CHUNK)
                    if not data:
                        return  # the peer closed: our reader sees the end
                    write_all(in_write, data)
                if out_read in readable:
                    data = os.read(out_read, CHUNK)
                    if not data:
                        return  # our writer closed: the connection ends, and the peer sees it
                    sock.sendall(data)
        except (OSError, ValueError):
            return  # the connection broke (ssl.SSLError is an OSError), or our own ends were closed
        finally:
            for fd in (out_read, in_write):
                os.close(fd)
            try:
                sock.close()
            except OSError:
                pass

    def close(self, timeout: float = 30.0) -> None:
        """Close both local ends (the connection ends with them) and wait for the thread."""
        for fd in (self.outgoing, self.incoming):
            try:
                os.close(fd)
            except OSError:
                pass
        self._thread.join(timeout)


__all__ = ["SocketRelay", "keep_alive"]
