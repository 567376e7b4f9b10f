"""xentoold: the host's daemon, one per host.

It keeps every xentool guest's on_* promises (xentool.supervisor), runs commands for the `xentool`
launchers warm (xentool.cli.command_server, in a forked child: the *command forker*), reports what
happens to guests as events (observer, eventlog) and serves the API of xentool.wire on its unix
sockets (api_server).  One lock, one socket directory (/run/xentool), one log.

Its guarantees:
- It keeps no state that the hypervisor and xentool's records cannot rebuild: killed with SIGKILL
  at any moment and started again, it takes over every guest (the supervisor's first sweep acts on
  any that went down meanwhile) and loses none.  Clients of its event stream are told what changed
  while it was away (xentool.daemon_client.follow_events).
- The command forker is forked before the daemon opens any hypervisor handle or starts a thread,
  so a command never inherits either; it ends with the daemon (PR_SET_PDEATHSIG).  When it stops
  because the code on disk changed, the daemon starts itself again (exec), new code and all.
- What changes the host runs in the forker's children, never in the daemon's own threads: an API
  call that creates a guest forks its console service and QEMU, and a fork of a process whose other
  threads may hold a lock (a log's, the allocator's) can leave the child waiting for it for ever.
- A part that fails (its hypervisor connection lost, say) ends the daemon with status 1, logged;
  the service manager, or the next `xentool create`, starts it again.
"""

from __future__ import annotations

import fcntl
import os
import queue
import signal
import socket
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from xentool.api import Toolstack
from xentool.daemon import end_with_parent
from xentool.daemon_client import running_pid
from xentool.errors import XentoolError
from xentool.events import DAEMON_STARTED, Event
from xentool.supervisor import supervise
from xentool.wire import LOCK_PATH, LOG_PATH, RUN_DIR
from xentool.xentoold.api_server import ApiServer, RunCommand
from xentool.xentoold.autostart import AUTOSTARTED, autostart
from xentool.xentoold.eventlog import EventLog
from xentool.xentoold.observer import SupervisorTells, observe, receive_publications
from xentool.xentoold.tls import TlsListener, listeners

STOP_SECONDS = 10.0  # how long the parts get to finish when the daemon stops


class DaemonRunning(XentoolError):
    exit_code = 4

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        super().__init__(f"a xentool daemon already runs (pid {pid}); there is one per host")


@dataclass(frozen=True)
class DaemonParts:
    """What the daemon is made of that lives above it (the CLI hands these over)."""

    warm_up: Callable[[], None]  # import what commands use, before the command forker is forked
    serve_commands: Callable[[], None]  # the command server, in the forker; returns when its code went stale
    connect: Callable[[], Toolstack]  # a toolstack with a hypervisor connection of its own
    run_command: RunCommand  # a command run by the command forker (xentool.cli.launch.run_on_server)


class DaemonLog:
    """The daemon's log: LOG_PATH, and stderr (a service manager's journal) when run in the foreground."""

    def __init__(self, to_stderr: bool) -> None:
        self._lock = threading.Lock()
        self._to_stderr = to_stderr
        LOG_PATH.parent.mkdir(parents=True, exist_ok=True, mode=0o700)

    def __call__(self, line: str) -> None:
        stamped = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}"
        with self._lock:
            with open(LOG_PATH, "a") as log:
                log.write(stamped + "\n")
            if self._to_stderr:
                print(line, file=sys.stderr, flush=True)


def take_lock(wait: bool = False) -> int:
    """The daemon's lock, as an fd kept open for the process's life (closed on exec).  With
    ``wait``, waits for a running daemon to end instead of raising DaemonRunning."""
    RUN_DIR.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        os.close(fd)
        raise DaemonRunning(running_pid()) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def run(parts: DaemonParts, to_stderr: bool = True, wait: bool = False, listen: Sequence[TlsListener] = ()) -> int:
    """Be the host's daemon until SIGTERM; returns the exit status.  Raises DaemonRunning if one
    runs, or with ``wait`` waits for it to end first.  ``listen``: TLS listeners (xentoold.tls)."""
    lock_fd = take_lock(wait)
    note = DaemonLog(to_stderr)
    note(f"xentoold starting (pid {os.getpid()})")
    parts.warm_up()
    forker = _fork_command_forker(parts.serve_commands, note)
    stopping = threading.Event()
    failed: list[str] = []
    log = EventLog()

    def stop(signum: int, frame: object) -> None:
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    api = ApiServer(parts.connect, parts.run_command, log, note, stopping)
    threads = _start_parts(parts, log, note, stopping, failed)
    restart = False
    try:
        api.start(listen)
        log.wait_for_first_look(30.0)
        log.add([Event(DAEMON_STARTED, detail={"pid": os.getpid(), "guests": len(log.guests())})])
        note(f"xentoold ready: {len(log.guests())} guests found, commands on the command socket, API on {RUN_DIR}")
        _tell_service_manager(b"READY=1")
        if not AUTOSTARTED.exists():  # /run is empty after a boot: this is the host's first daemon since
            AUTOSTARTED.touch()
            threads.append(_start_thread("autostart", lambda: autostart(parts.connect, note, stopping), note, stopping, failed))
        while not stopping.wait(1.0):
            if failed:
                break
            done, status = os.waitpid(forker, os.WNOHANG)
            if done:
                forker = 0
                # The forker ends by itself only when the code on disk changed (or it broke): the
                # daemon starts again as a whole, so that every part runs the code on disk.
                note(f"the command forker ended ({_status(status)}): xentoold starts again")
                restart = True
                break
    finally:
        stopping.set()
        _tell_service_manager(b"STOPPING=1")
        api.stop()
        if forker:
            os.kill(forker, signal.SIGTERM)
            os.waitpid(forker, 0)
        for thread in threads:
            thread.join(STOP_SECONDS)
        note(f"xentoold stopped (pid {os.getpid()})" + (f": {failed[0]}" if failed else ""))
        os.close(lock_fd)
    if restart:
        os.execv(sys.executable, sys.orig_argv)
    return 1 if failed else 0


def _start_parts(parts: DaemonParts, log: EventLog, note: Callable[[str], None], stopping: threading.Event,
                 failed: list[str]) -> list[threading.Thread]:
    wake = threading.Event()
    told: queue.SimpleQueue[Event] = queue.SimpleQueue()

    def observer() -> None:
        with parts.connect() as xt:
            observe(xt.hv, log, stopping, wake, told)

    def supervisor() -> None:
        with parts.connect() as xt:
            supervise(xt.hv, xt.records, stopping, note, SupervisorTells(told, wake))

    def publications() -> None:
        receive_publications(log, stopping, wake, told, note)

    return [_start_thread(name, body, note, stopping, failed)
            for name, body in (("observer", observer), ("supervisor", supervisor), ("publications", publications))]


def _start_thread(name: str, body: Callable[[], None], note: Callable[[str], None], stopping: threading.Event,
                  failed: list[str]) -> threading.Thread:
    thread = threading.Thread(target=_part, args=(name, body, note, stopping, failed), name=name, daemon=True)
    thread.start()
    return thread


def _part(name: str, body: Callable[[], None], note: Callable[[str], None], stopping: threading.Event,
          failed: list[str]) -> None:
    try:
        body()
    except BaseException as e:  # noqa: BLE001 - told, then the daemon ends: its parts stand or fall together
        if not stopping.is_set():
            failed.append(f"the {name} failed: {e}")
            note(f"the {name} failed:\n{traceback.format_exc()}")
            stopping.set()


def _fork_command_forker(serve_commands: Callable[[], None], note: Callable[[str], None]) -> int:
    daemon = os.getpid()
    child = os.fork()
    if child == 0:  # pragma: no cover - the forker, in its own process
        code = 70
        try:
            end_with_parent(daemon)
            signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C at the daemon's terminal is the daemon's
            serve_commands()
            code = 0
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 0
        except BaseException:  # noqa: BLE001 - told, then the daemon starts again
            note(f"the command forker failed:\n{traceback.format_exc()}")
        finally:
            os._exit(code)
    return child


def _status(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"status {os.WEXITSTATUS(status)}"


def _tell_service_manager(state: bytes) -> None:
    """sd_notify(3), for a Type=notify unit: the protocol is one datagram to $NOTIFY_SOCKET."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.sendto(state, address)
    except OSError:
        pass


__all__ = ["DaemonLog", "DaemonParts", "DaemonRunning", "TlsListener", "listeners", "run", "take_lock"]
