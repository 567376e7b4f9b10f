"""The `xentool` program: hands the command to a running command server, or runs it here.

Kept to the standard library so that, when a server runs (``xentool server start``), a command
costs the interpreter's start-up and a socket round trip rather than importing the toolstack.
Interactive commands (consoles, `create -c`) and the lab's run in this process, where the terminal
and its signals are.
"""

from __future__ import annotations

import os
import socket
import sys

from xentool.cli.command_server import decode_reply, encode_request, socket_path

NO_SERVER_ENV = "XENTOOL_NO_SERVER"
# Commands that neither read the terminal nor drive the lab: the server runs them as they are.
FORWARDED = frozenset({
    "create", "destroy", "list", "info", "shutdown", "reboot", "pause", "unpause", "rename",
    "mem-set", "vcpu-set", "block-attach", "block-detach", "block-list", "network-attach", "network-detach",
    "network-list", "save", "restore",
})
LOCAL_FLAGS = frozenset({"-c", "--console", "--lab", "--connect=lab", "--help"})


def main() -> None:
    argv = sys.argv[1:]
    if _forwardable(argv):
        code = _run_on_server(argv)
        if code is not None:
            sys.exit(code)
    from xentool.cli.main import main as run_here

    run_here(argv)


def _forwardable(argv: list[str]) -> bool:
    if os.environ.get(NO_SERVER_ENV) or os.environ.get("XENTOOL_CONNECT") == "lab":
        return False
    if LOCAL_FLAGS.intersection(argv) or any(a == "--connect" and b == "lab" for a, b in zip(argv, argv[1:])):
        return False
    command = first_command_index(argv)
    return command < len(argv) and argv[command] in FORWARDED


def first_command_index(argv: list[str]) -> int:
    """Where the subcommand starts: the first word that is not an option or --connect's value."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-") and not (i > 0 and argv[i - 1] == "--connect"):
            return i
    return len(argv)


def _run_on_server(argv: list[str]) -> int | None:
    """The command's exit status from the server; None when there is no (current) server."""
    path = socket_path()
    try:
        if os.stat(path).st_uid != os.geteuid():
            return None  # never hand our terminal to someone else's socket
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(str(path))
    except OSError:
        return None
    with conn:
        try:
            socket.send_fds(conn, [encode_request(argv, os.getcwd(), dict(os.environ))], [0, 1, 2])
        except OSError:
            return None  # a stale server hangs up before reading: nothing ran there
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
        try:
            return decode_reply(bytes(reply))
        except ValueError as e:
            print(f"xentool: error: {e}; the command may have run in part (`xentool list` shows the domains)",
                  file=sys.stderr)
            return 1
