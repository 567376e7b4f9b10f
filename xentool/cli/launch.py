"""The `xentool` program in Python: hands the command to a running command server, or runs it here.

Kept to what Python imports at start-up anyway (os, sys, the C socket module, struct), so that
while the host's daemon runs (xentoold, started by the first create) a command costs the interpreter's start-up and a
socket round trip rather than importing the toolstack.  The server says which commands it runs
(xentool.cli.protocol.forwardable); the launcher asks first only to spare itself a round trip for
the others.  The native launcher (launcher.c, built by xentool.cli.native_launcher) does the same
without the interpreter.
"""

from __future__ import annotations

import _socket
import os
import sys

from xentool.cli.protocol import decode_reply, encode_request, forwardable, socket_path


def main() -> None:
    argv = sys.argv[1:]
    if forwardable(argv, dict(os.environ)):
        code = run_on_server(argv)
        if code is not None:
            sys.exit(code)
    from xentool.cli.main import main as run_here

    run_here(argv)


def run_on_server(argv: list[str], fds: tuple[int, int, int] = (0, 1, 2), env: dict[str, str] | None = None,
                  cwd: str | None = None) -> int | None:
    """The command's exit status from the server, which runs it on ``fds`` as its stdin, stdout and
    stderr (this process's own by default; the daemon passes others for its API's calls); None
    when there is no (current) server."""
    env = dict(os.environ) if env is None else env
    path = socket_path(env)
    try:
        if os.stat(path).st_uid != os.geteuid():
            return None  # never hand our terminal to someone else's socket
        conn = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    except OSError:
        return None
    try:
        try:
            conn.connect(path)
            request = encode_request(argv, os.getcwd() if cwd is None else cwd, env)
            descriptors = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, b"".join(fd.to_bytes(4, sys.byteorder) for fd in fds))]
            sent = conn.sendmsg([request], descriptors)
            conn.sendall(request[sent:])
        except OSError:
            return None  # no server, or a stale one that hung up before reading: nothing ran there
        reply = bytearray()
        try:
            while len(reply) < 4:
                chunk = conn.recv(4 - len(reply))
                if not chunk:
                    break
                reply += chunk
        except KeyboardInterrupt:
            return 130  # closing the connection interrupts the command on the server
        except OSError:
            pass  # reported below: the command may have run, so it is not run again here
    finally:
        conn.close()
    try:
        return decode_reply(bytes(reply))
    except ValueError as e:
        print(f"xentool: error: {e}; the command may have run in part (`xentool list` shows the domains)",
              file=sys.stderr)
        return 1
