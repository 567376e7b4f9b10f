"""What a launcher and the command server (xentool.cli.command_server) say to each other, and
which commands the server runs.

Simple enough for C (xentool/cli/launcher.c speaks it too).  The request is a 4-byte big-endian
length, then NUL-terminated strings: the working directory, the number of arguments, the
arguments, then every ``KEY=VALUE`` of the environment; the launcher's stdin, stdout and stderr
ride along (SCM_RIGHTS).  The reply is 4 bytes: the command's exit status (big-endian int32), or
``STAL`` / ``LOCL``: run the command yourself.

The server decides what it runs (:func:`forwardable`), so a launcher needs no knowledge of the
commands.  Only os, struct, sys and the C socket module are imported: the Python launcher
imports this module, and in the lab's dom0 every module costs start-up time.
"""

from __future__ import annotations

import _socket
import os
import struct
import sys

SOCKET_ENV = "XENTOOL_COMMAND_SOCKET"
RUN_DIR_ENV = "XENTOOL_RUN_DIR"
DEFAULT_SOCKET = "/run/xentool/command.sock"
NO_DAEMON_ENV = "XENTOOL_NO_DAEMON"  # commands run in their own process, not in the daemon
NO_SERVER_ENV = "XENTOOL_NO_SERVER"  # its older name, still honoured
STALE = b"STAL"  # the server's code changed on disk: the launcher runs the command itself
LOCAL = b"LOCL"  # a command the server does not run (it reads the terminal, or drives the lab)
# Commands that neither read the terminal nor drive the lab: the server runs them as they are.
# (Not `top`, which draws on the terminal, nor `daemon` and `lab`, which start and stop what serves.)
FORWARDED = frozenset({
    "create", "destroy", "list", "info", "shutdown", "reboot", "pause", "unpause", "resume", "rename",
    "mem-set", "mem-max", "vcpu-set", "vcpu-pin", "vcpu-list", "sched-credit", "sched-credit2",
    "cpupool-list", "cpupool-create", "cpupool-destroy", "cpupool-cpu-add", "cpupool-cpu-remove", "cpupool-migrate",
    "block-attach", "block-detach", "block-list", "network-attach", "network-detach", "network-list",
    "save", "restore", "events", "wait", "define", "undefine", "start", "autostart", "apply", "migrate",
    "migrate-receive", "stats", "dmesg", "host", "config",
})
# `console --log` prints the log and returns: served; `console` alone attaches to the terminal.
# `daemon call` is how the daemon runs its API's calls that change the host in a forked child.
FORWARDED_WITH = {"console": "--log", "daemon": "call"}
LOCAL_FLAGS = frozenset({"-c", "--console", "--lab", "--connect=lab", "--help", "-h"})
LENGTH = struct.Struct("!I")
CODE = struct.Struct("!i")


def socket_path(env: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """$XENTOOL_COMMAND_SOCKET, else command.sock in $XENTOOL_RUN_DIR (the daemon's directory,
    moved for tests: xentool.wire), else DEFAULT_SOCKET."""
    if env.get(SOCKET_ENV):
        return env[SOCKET_ENV]
    return f"{env[RUN_DIR_ENV]}/command.sock" if env.get(RUN_DIR_ENV) else DEFAULT_SOCKET


VALUED_OPTIONS = frozenset({"--connect", "--host"})  # xentool's own options that take a value


def first_command_index(argv: list[str]) -> int:
    """Where the subcommand starts: the first word that is not an option or the value of one."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-") and not (i > 0 and argv[i - 1] in VALUED_OPTIONS):
            return i
    return len(argv)


def forwardable(argv: list[str], env: dict[str, str]) -> bool:
    """Whether the server runs ``argv`` (given the launcher's environment) or the launcher does."""
    if env.get(NO_DAEMON_ENV) or env.get(NO_SERVER_ENV) or env.get("XENTOOL_CONNECT") == "lab":
        return False
    if LOCAL_FLAGS.intersection(argv) or any(a == "--connect" and b == "lab" for a, b in zip(argv, argv[1:], strict=False)):
        return False
    command = first_command_index(argv)
    if command >= len(argv):
        return False
    name = argv[command]
    return name in FORWARDED or (name in FORWARDED_WITH and FORWARDED_WITH[name] in argv[command + 1:])


class Request:
    """A launcher's command: its arguments, working directory and environment."""

    __slots__ = ("argv", "cwd", "env")

    def __init__(self, argv: list[str], cwd: str, env: dict[str, str]) -> None:
        self.argv, self.cwd, self.env = argv, cwd, env


def encode_request(argv: list[str], cwd: str, env: dict[str, str]) -> bytes:
    strings = [cwd, str(len(argv)), *argv, *(f"{key}={value}" for key, value in env.items())]
    body = b"".join(os.fsencode(text) + b"\0" for text in strings)
    return LENGTH.pack(len(body)) + body


def decode_request(body: bytes) -> Request:
    """The request's strings (after the length); ValueError if they are not what a launcher sends."""
    strings = [os.fsdecode(part) for part in body.split(b"\0")]
    if len(strings) < 3 or strings.pop() != "" or not strings[1].isdigit() or int(strings[1]) > len(strings) - 2:
        raise ValueError("a request's strings are its directory, its argument count and arguments, its environment")
    count = int(strings[1])
    argv, env_entries = strings[2:2 + count], strings[2 + count:]
    env = dict(entry.split("=", 1) for entry in env_entries if "=" in entry)
    return Request(argv, strings[0], env)


def decode_reply(data: bytes) -> int | None:
    """The command's exit status, or None when the launcher is to run the command itself."""
    if data in (STALE, LOCAL):
        return None
    if len(data) != CODE.size:
        raise ValueError("the command server ended without an exit status")
    return CODE.unpack(data)[0]


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
