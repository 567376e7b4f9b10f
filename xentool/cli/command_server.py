"""The command server: a warm xentool in dom0 that runs commands for the `xentool` launcher.

Python is slow to start where dom0 is slow (the lab's dom0 runs under QEMU TCG: the interpreter,
typer, pydantic and the toolstack's modules cost more than xl's whole create).  The server imports
all of that once; for each command the launcher (``xentool.cli.launch``, or the native
launcher.c) connects, passes its stdin, stdout and stderr (SCM_RIGHTS), its argv, working
directory and environment, and a child the server forked in advance runs the command exactly as
``xentool`` would, on those descriptors, then sends back the exit status.  This is Mercurial's
chg pattern.

- Run by the host's daemon (xentool.xentoold) in its *command forker*, a child forked before the
  daemon connects to anything; the daemon starts when a guest is created and none runs.
- Same code as on disk: the modification times of the modules the server loaded are compared
  with the files' after each request and every few seconds while commands come (FRESH_SECONDS:
  an edit is seen by the commands started that long after it), or on the request's path after a
  long pause; if any changed, the server exits (the daemon then starts again with the new code)
  and a launcher whose request it held is told to run the command itself.
- Root only: the socket is 0600 and the launcher checks that its owner is the launcher's own user
  before handing over its terminal.
- A child never inherits an open hypervisor handle: the server only imports, it connects to nothing.
- Ctrl-C: the launcher closing the connection interrupts the child (KeyboardInterrupt), so a
  create rolls back as it would in-process.
- What the launcher and the server say, and which commands the server runs: xentool.cli.protocol.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import io
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xentool.cli import protocol
from xentool.cli.protocol import CODE, LENGTH, LOCAL, STALE, Request, decode_request, forwardable
from xentool.daemon import end_with_parent

_PROJECT_PACKAGES = ("xentool", "hypercalls", "pvdrivers")
GO = b"GO"  # the server to its child: the code on disk is the code loaded
# The code on disk is checked (a stat per module: 0.15 s in the lab's dom0, where each stat crosses
# 9p) SETTLE_SECONDS after each request and then every CHECK_SECONDS while no request waits, for
# WATCH_SECONDS after the last one: commands come in runs (a script, a benchmark, a test), and each then finds a
# check made at most FRESH_SECONDS ago and runs at once.  After a longer pause the check is on the
# request's path (measured: a `list` 2 s after the previous one took 0.6-0.8 s with the check on its
# path, 0.34-0.47 s without).  Checking all the time would cost an idle daemon a sliver of the
# lab's CPU for ever.
CHECK_SECONDS = 2.0
WATCH_SECONDS = 120.0
FRESH_SECONDS = CHECK_SECONDS + 0.5


def socket_path() -> Path:
    return Path(protocol.socket_path())


def pid_path(sock: Path) -> Path:
    return sock.with_suffix(".pid")


def running_pid(sock: Path) -> int | None:
    """The pid of the live server whose pid file sits beside ``sock``, if any."""
    try:
        pid = int(pid_path(sock).read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


# What a forwarded command imports on its way (measured in the lab: a create imported 61 modules
# after the toolstack's own, asyncio and qemu.qmp the dearest).  Imported once here, so that each
# forked child starts with them.
# The toolstack's modules import what they use at their top, so these few bring in the rest.
_WARM_MODULES = (
    "xentool.api", "xentool.config.loader", "xentool.create", "xentool.lifecycle", "xentool.saving",
    "xentool.shutdown_actions", "xentool.supervisor", "xentool.live_devices",
    "asyncio", "qemu.qmp", "rich.console", "rich.table",
)
# typer's argument parsing, imported on a command's first parse; private, so only if they are there.
_WARM_IF_PRESENT = ("typer._adapters", "typer._click.decorators")


# The commands a waiting child rehearses (their output thrown away) before it takes a request: the
# ones run most, and read-only.
REHEARSED = (("list",), ("list", "--json"))
# What the forker and a new waiting child do for the next request (a check of the code, a
# rehearsal) waits until the last request's command has ended (its process has exited), at most
# this long (a command may run for ever: `events`), unless the next request comes first: the
# command runs alone, on a dom0 of two vCPUs.
SETTLE_SECONDS = 2.0


@dataclass(frozen=True)
class Entry:
    """The command line the server runs, handed to it by the CLI (which sits above it):
    ``run(argv)`` is the program's main (it exits with the command's status), ``prepare()``
    makes what parsing needs (typer's click group) before the server forks."""

    run: Callable[[list[str]], None]
    prepare: Callable[[], object]


def warm_up(entry: Entry) -> None:
    """Import what the forwarded commands use, so that each forked child starts with it."""
    for name in _WARM_MODULES:
        importlib.import_module(name)
    for name in _WARM_IF_PRESENT:
        try:
            importlib.import_module(name)
        except ImportError:
            pass
    _build_converters(entry.prepare())
    # Here, not at the top: `xentool --help` imports this module (through `server`), and must not
    # load the hypervisor interface (tests/toolstack/test_cli_imports.py).
    from hypercalls.connect import is_dom0

    if is_dom0():
        from hypercalls.xen import load_bindings  # the real backend, which a dom0's commands use

        load_bindings()


def _build_converters(command: object) -> None:
    """typer makes each parameter's converter (a pydantic TypeAdapter, a tenth of a second each in
    the lab's dom0) on the parameter's first use and keeps it: make them all before forking."""
    for param in getattr(command, "params", ()):
        make = getattr(param, "get_runtime_param", None)  # typer's own, not click's
        if make is not None:
            make()
    for subcommand in getattr(command, "commands", {}).values():
        _build_converters(subcommand)


def source_stamps() -> dict[str, int]:
    """mtime of every project module loaded here (compiled bindings included)."""
    stamps = {}
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] not in _PROJECT_PACKAGES:
            continue
        path = getattr(module, "__file__", None)
        if path:
            try:
                stamps[path] = os.stat(path).st_mtime_ns
            except OSError:
                stamps[path] = -1
    return stamps


def serve(sock: Path, entry: Entry, warmed: bool = False) -> None:
    """Run the server until SIGTERM, or until the code on disk changes (``warmed``: warm_up ran)."""
    other = running_pid(sock)
    if other is not None:
        raise SystemExit(f"xentool: error: a command server already serves {sock} (pid {other}); "
                         "`xentool daemon stop` ends it")
    if not warmed:
        warm_up(entry)
    # What is loaded now stays: out of the garbage collector's sight, whose passes would otherwise
    # write to every object and so copy every page into each forked child (a copy costs a
    # hypercall in a PV dom0).
    gc.freeze()
    # The directory is the daemon's, and holds its read-only socket for every user too; this
    # socket is root's alone by its own mode (the umask below), which connecting needs.
    sock.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
    sock.unlink(missing_ok=True)  # no live server owns it: left by one that was killed
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o077)
    try:
        listener.bind(str(sock))
    finally:
        os.umask(old_umask)
    listener.listen(16)
    pid_path(sock).write_text(f"{os.getpid()}\n")
    stamps = source_stamps()

    def stop(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    idle: int | None = None
    served_at = checked_at = time.monotonic()  # the stamps were just taken
    serving: int | None = None  # a pidfd of the child that runs the last request's command
    try:
        while True:
            # A child is forked before the request comes and accepts it itself: the fork (a
            # fifth of a second in the lab's PV dom0) is off the command's path.  The child runs
            # the command only on this process's word that the code on disk is the code loaded.
            idle, taken_r, verdict_w = _fork_waiting_child(listener, entry, serving)
            watched = _watch_code_until_taken(taken_r, stamps, served_at, checked_at, serving)
            if serving is not None:
                os.close(serving)
                serving = None
            if watched is None:  # the code changed while no request waited: step aside now
                os.kill(idle, signal.SIGTERM)
                idle = None
                os.close(taken_r)
                os.close(verdict_w)
                return
            checked_at = watched
            try:
                taken = os.read(taken_r, 1)
            finally:
                os.close(taken_r)
            if taken:
                serving = _pidfd(idle)  # before the reaping below, so that it is this child's
            idle = None  # it has a request: no longer idle
            served_at = time.monotonic()
            _reap()
            if not taken:  # it died waiting: the next one takes over
                os.close(verdict_w)
                time.sleep(0.1)
                continue
            stale = False
            if time.monotonic() - checked_at > FRESH_SECONDS:  # after a long pause: on the request's path
                checked_at = time.monotonic()
                stale = source_stamps() != stamps
            try:
                os.write(verdict_w, STALE if stale else GO)
            except BrokenPipeError:
                pass  # the child is gone already (its launcher hung up)
            finally:
                os.close(verdict_w)
            if stale:
                return
    finally:
        if serving is not None:
            os.close(serving)
        if idle is not None:  # waiting in accept(): it goes with the server
            os.kill(idle, signal.SIGTERM)
        listener.close()
        # Only the server the pid file names takes the socket away: not a process forked deeper
        # down that unwinds through here, nor a server whose socket a later one has taken over.
        if running_pid(sock) == os.getpid():
            for path in (sock, pid_path(sock)):
                path.unlink(missing_ok=True)


def _watch_code_until_taken(taken_r: int, stamps: dict[str, int], served_at: float, checked_at: float,
                            serving: int | None = None) -> float | None:
    """Check the code on disk once the last request's command has ended (``serving``: a pidfd of
    its process) or SETTLE_SECONDS after it came, then every CHECK_SECONDS until the waiting child
    says on ``taken_r`` that a request came (or, WATCH_SECONDS after the last request, no more:
    just wait).  Returns when the last check began (``checked_at``, the one before, if none did),
    or None once a check finds the code changed."""
    if _settle([taken_r], serving, served_at + SETTLE_SECONDS):
        return checked_at
    while True:
        checked_at = time.monotonic()
        if source_stamps() != stamps:
            return None
        watching = checked_at - served_at < WATCH_SECONDS
        if select.select([taken_r], [], [], CHECK_SECONDS if watching else None)[0]:
            return checked_at


def _settle(awaited: list[int], serving: int | None, deadline: float) -> bool:
    """Wait until the command ``serving`` (a pidfd) has ended or ``deadline`` has passed; True if
    one of ``awaited`` became readable first (a request came: no time for anything else)."""
    watched = awaited + ([serving] if serving is not None else [])
    while (left := deadline - time.monotonic()) > 0:
        ready = select.select(watched, [], [], left)[0]
        if set(ready) & set(awaited):
            return True
        if ready:
            return False  # the command has ended
    return False


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (None where the kernel has none)."""
    try:
        return os.pidfd_open(pid)
    except OSError:
        return None


def _fork_waiting_child(listener: socket.socket, entry: Entry, serving: int | None = None) -> tuple[int, int, int]:
    """A child that accepts the next connection, says so on the first pipe and waits for the
    verdict on the second; returns its pid and this end of both pipes.  Until a connection comes,
    it rehearses, once the command ``serving`` (a pidfd) runs alone no more."""
    taken_r, taken_w = os.pipe()
    verdict_r, verdict_w = os.pipe()
    server = os.getpid()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        # Whatever happens, the child ends here: returning into the server's loop (or its
        # finally, which removes the socket) is the server's business only.
        code = 70
        try:
            os.close(taken_r)
            os.close(verdict_w)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            end_with_parent(server)
            if not _settle([listener.fileno()], serving, time.monotonic() + SETTLE_SECONDS):
                _rehearse(entry, listener)  # no request yet, and the last command has ended
            if serving is not None:
                os.close(serving)
            conn, _ = listener.accept()
            end_with_parent(None)  # from here on it runs a command, which finishes even if the server goes
            listener.close()
            os.write(taken_w, b"T")
            os.close(taken_w)
            code = _run_request(conn, verdict_r, entry)
        finally:
            os._exit(code)
    os.close(taken_w)
    os.close(verdict_r)
    return child, taken_r, verdict_w


def _rehearse(entry: Entry, listener: socket.socket | None = None) -> None:
    """Run REHEARSED, their output and outcome thrown away, before taking a request.

    A forked child writes to pages it shares with the server (reference counts, the parser's
    state, the bindings' objects), and each first write copies a page: in a PV dom0 a fault that
    costs a hypercall.  Measured in the lab's dom0: a `list` in a fresh child took 0.08-0.10 s
    and 530 page faults, 0.024 s and 2 faults after a rehearsal; the command that comes shares
    most of those pages (the parser, the connection to the hypervisor); `list --json` without its
    own rehearsal took 0.19 s more than `list` with 30 guests.  The rehearsal runs while no request
    waits: a request that comes meanwhile waits in ``listener``'s queue for the command being
    rehearsed, not for the ones after it.  Only on
    this host's hypervisor (or the simulator): never the lab's or another host's."""
    connect = os.environ.get("XENTOOL_CONNECT", "xen")
    if connect != "xen" and not connect.startswith("sim://"):
        return
    for argv in REHEARSED:
        if listener is not None and select.select([listener], [], [], 0)[0]:
            return  # a request came: it goes first
        try:
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull), contextlib.redirect_stderr(devnull):
                entry.run(list(argv))
        except BaseException:  # noqa: BLE001 - its exit, or an error, is the rehearsal's alone
            pass


def _reap() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _run_request(conn: socket.socket, verdict_fd: int, entry: Entry) -> int:  # pragma: no cover - runs in the forked child
    """Run the request on ``conn`` once the server's verdict (GO, or STALE: its code changed on
    disk) arrives on ``verdict_fd``."""
    try:
        request, fds = _receive(conn)
    except (OSError, ValueError):
        return 70
    if os.read(verdict_fd, len(GO)) != GO:
        for fd in fds:
            os.close(fd)
        conn.sendall(STALE)
        return 0
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdin = io.TextIOWrapper(io.FileIO(0, "r", closefd=False))
    sys.stdout = io.TextIOWrapper(io.FileIO(1, "w", closefd=False), line_buffering=os.isatty(1))
    sys.stderr = io.TextIOWrapper(io.FileIO(2, "w", closefd=False), line_buffering=True)
    if not forwardable(request.argv, request.env):
        conn.sendall(LOCAL)
        return 0
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.env)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Thread(target=_interrupt_when_client_leaves, args=(conn,), daemon=True).start()
    code = _exit_code(request.argv, entry)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the command is over: the client leaving is no news
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except OSError:
            pass
    try:
        conn.sendall(CODE.pack(code))
    except OSError:
        pass
    return code


def _exit_code(argv: list[str], entry: Entry) -> int:  # pragma: no cover - runs in the forked child
    try:
        entry.run(argv)
    except SystemExit as e:
        if e.code is None:
            return 0
        if isinstance(e.code, int):
            return e.code
        print(e.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _interrupt_when_client_leaves(conn: socket.socket) -> None:  # pragma: no cover - forked child
    try:
        while conn.recv(64):
            pass
    except OSError:
        pass
    os.kill(os.getpid(), signal.SIGINT)


def _receive(conn: socket.socket) -> tuple[Request, list[int]]:
    data, fds, _flags, _addr = socket.recv_fds(conn, 1 << 16, 3)
    if len(fds) != 3 or len(data) < LENGTH.size:
        for fd in fds:
            os.close(fd)
        raise ValueError("a request is its length, its strings and three descriptors")
    (length,) = LENGTH.unpack_from(data)
    body = bytearray(data[LENGTH.size:])
    while len(body) < length:
        chunk = conn.recv(length - len(body))
        if not chunk:
            raise ValueError("the request ended early")
        body += chunk
    return decode_request(bytes(body)), list(fds)


__all__ = ["serve", "socket_path", "pid_path", "running_pid", "warm_up"]
