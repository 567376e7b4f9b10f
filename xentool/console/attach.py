"""Attaching to a guest's console: the client side of the backend's socket.

The backend's first line is the log's length when it accepted us; we print the log up to there
(all of it, or its tail) and then stream, so no byte is lost or shown twice.  Keys typed on a
terminal go to the guest raw; Ctrl-] detaches, as with xl console.
"""

from __future__ import annotations

import os
import select
import socket
import sys
import termios
import tty
from pathlib import Path
from typing import BinaryIO

DETACH_KEY = b"\x1d"  # Ctrl-]


class ConsoleUnavailable(Exception):
    """No backend serves this console now (the guest has shut down, or was not created by xentool)."""


def attach(socket_path: Path, log_path: Path, output: BinaryIO, input_fd: int | None = None,
           replay_bytes: int | None = None) -> str:
    """Stream the console to ``output`` (and ``input_fd`` to the guest) until the guest's console
    ends ("ended") or the user detaches ("detached").  ``replay_bytes``: how much of the log to show
    first (None: all of it)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(socket_path))
    except (FileNotFoundError, ConnectionRefusedError) as e:
        sock.close()
        raise ConsoleUnavailable(str(e)) from e
    try:
        offset, early = _read_offset(sock)
        output.write(_log_prefix(log_path, offset, replay_bytes))
        output.write(early)
        output.flush()
        return _stream(sock, output, input_fd)
    finally:
        sock.close()


def _read_offset(sock: socket.socket) -> tuple[int, bytes]:
    data = b""
    while b"\n" not in data:
        chunk = sock.recv(64)
        if not chunk:
            raise ConsoleUnavailable("the console backend closed the connection")
        data += chunk
    line, rest = data.split(b"\n", 1)
    return int(line), rest


def _log_prefix(log_path: Path, offset: int, replay_bytes: int | None) -> bytes:
    start = 0 if replay_bytes is None else max(0, offset - replay_bytes)
    try:
        with open(log_path, "rb") as log:
            log.seek(start)
            return log.read(offset - start)
    except OSError:
        return b""


def _stream(sock: socket.socket, output: BinaryIO, input_fd: int | None) -> str:
    interactive = input_fd is not None and os.isatty(input_fd)
    saved = termios.tcgetattr(input_fd) if interactive and input_fd is not None else None
    if interactive and input_fd is not None:
        tty.setraw(input_fd)
    try:
        watched: list[int | socket.socket] = [sock] + ([input_fd] if input_fd is not None else [])
        while True:
            ready, _, _ = select.select(watched, [], [])
            if sock in ready:
                data = sock.recv(4096)
                if not data:
                    return "ended"
                output.write(data)
                output.flush()
            if input_fd is not None and input_fd in ready:
                typed = os.read(input_fd, 1024)
                if not typed:  # end of input (a pipe): keep showing output
                    watched.remove(input_fd)
                    continue
                if interactive and DETACH_KEY in typed:
                    typed = typed.split(DETACH_KEY, 1)[0]
                    if typed:
                        sock.sendall(typed)
                    return "detached"
                sock.sendall(typed)
    finally:
        if saved is not None:
            termios.tcsetattr(input_fd, termios.TCSADRAIN, saved)  # type: ignore[arg-type]
            sys.stdout.write("\r\n")
