"""The supervisor: keeps the promises of on_poweroff, on_reboot, on_crash and on_watchdog for every
guest xentool created, whether or not the command that created it still runs.

One process per host (a lock file says which), started by the first `create` that finds none, or by
`xentool supervise` (in the foreground, for a service manager).  It holds no state of its own: the
hypervisor says which domains exist and which are down, xentool's records say what each one's
config wants.  So a supervisor that was killed and started again takes over where the old one
stopped, handling at once any guest that went down meanwhile, and restarts no guest by mistake (it
acts only on domains that are shut down, under the same per-guest lock the commands take).

It wakes on xenstored's @releaseDomain watch (fired when a domain shuts down or dies) and, in
case a watch event is lost, every POLL_SECONDS.  Domains without a record (xl's) are left alone:
xl's own monitor keeps their promises.  What it does goes to LOG_PATH, one line per action.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from hypercalls.interface import Hypervisor, ShutdownReason
from xentool.daemon import become_daemon
from xentool.domains import summarize
from xentool.errors import XentoolError
from xentool.records import RecordStore
from xentool.shutdown_actions import apply_shutdown_action

# What the supervisor runs on: its own connection to the hypervisor and the guests' records, made
# in the forked supervisor (a connection must not be shared across a fork).
Connect = Callable[[], tuple[Hypervisor, RecordStore]]

RUN_DIR = Path("/run/xentool")
LOCK_PATH = RUN_DIR / "supervisor.lock"  # holds the running supervisor's pid, locked while it runs
LOG_PATH = Path("/var/log/xentool/supervisor.log")
POLL_SECONDS = 5.0
WATCH_TOKEN = "xentool-supervisor"


class SupervisorRunning(XentoolError):
    exit_code = 4

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        super().__init__(f"a supervisor already runs (pid {pid}); there is one per host")


def running_pid() -> int | None:
    """The running supervisor's pid, or None when none holds the lock."""
    try:
        with open(LOCK_PATH) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = f.read().strip()
                return int(text) if text.isdigit() else -1
            return None
    except FileNotFoundError:
        return None


def _take_lock() -> int:
    """The supervisor's lock, as an fd kept open for the process's life."""
    RUN_DIR.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise SupervisorRunning(running_pid()) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _log(line: str) -> None:
    LOG_PATH.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(LOG_PATH, "a") as log:
        log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {line}\n")


def sweep(hv: Hypervisor, records: RecordStore, reported: set[tuple[int, str]], log: Callable[[str], None] = _log) -> None:
    """Act on every xentool guest that is down.  ``reported`` keeps (domid, outcome) pairs already
    logged, so a preserved guest or a failing action is logged once, not every poll."""
    for info in hv.domain_list():
        if info.domid == 0 or not info.shutdown or info.dying or info.shutdown_reason == ShutdownReason.SUSPEND:
            continue  # running, already going, or suspended for a save that decides what comes next
        if records.load(info.uuid) is None:
            continue  # not ours
        domain = summarize(hv, info)
        reason = info.shutdown_reason.name.lower() if info.shutdown_reason is not None else "shutdown"
        try:
            outcome = apply_shutdown_action(hv, records, domain)
        except Exception as e:  # noqa: BLE001 - one guest's failure must not end the others' supervision
            outcome = f"failed: {e}"
        if (info.domid, outcome) not in reported:
            reported.add((info.domid, outcome))
            log(f"domain {domain.name} (id {info.domid}, uuid {info.uuid}) went down ({reason}): {outcome}")


def _stop(signum: int, frame: object) -> None:
    raise SystemExit(0)  # unwinds serve(): the log line, the lock


def serve(connect: Connect, lock_fd: int | None = None) -> None:
    """Run the supervisor in this process until SIGTERM (``lock_fd``: the lock, if already taken)."""
    if lock_fd is None:
        lock_fd = _take_lock()
    signal.signal(signal.SIGTERM, _stop)
    reported: set[tuple[int, str]] = set()
    hv, records = connect()
    try:
        xs = hv.xenstore()
        xs.watch("@releaseDomain", WATCH_TOKEN)  # also fires once now: the first sweep is the take-over
        _log(f"supervisor started (pid {os.getpid()})")
        try:
            while True:
                xs.read_watch(POLL_SECONDS)
                sweep(hv, records, reported)
                live = {info.domid for info in hv.domain_list()}
                reported = {entry for entry in reported if entry[0] in live}
        finally:
            _log(f"supervisor stopped (pid {os.getpid()})")
            os.close(lock_fd)
    finally:
        hv.close()


def ensure_running(connect: Connect) -> int:
    """Start a supervisor in the background unless one runs; returns its pid."""
    pid = running_pid()
    if pid is not None:
        return pid
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the forked supervisor
        os.close(read_fd)
        _daemonize(connect, write_fd)
    os.close(write_fd)
    os.waitpid(child, 0)
    with os.fdopen(read_fd) as ready:
        line = ready.readline().strip()
    if line.startswith("ready "):
        return int(line.split()[1])
    if line.startswith("running "):  # another create started one first
        return int(line.split()[1])
    raise XentoolError(f"the supervisor did not start: {line or 'no reason given'}; see {LOG_PATH}")


def _daemonize(connect: Connect, ready_fd: int) -> None:  # pragma: no cover - forked
    code = 1
    try:
        ready_fd = become_daemon(ready_fd)
        try:
            lock_fd = _take_lock()
        except SupervisorRunning as e:
            os.write(ready_fd, f"running {e.pid}\n".encode())
            os._exit(0)
        os.write(ready_fd, f"ready {os.getpid()}\n".encode())
        os.close(ready_fd)
        serve(connect, lock_fd)
        code = 0
    except BaseException as e:  # noqa: BLE001 - told to the parent if it still listens, else logged
        try:
            os.write(ready_fd, f"error {e}\n".encode())
        except OSError:
            _log(f"supervisor ended: {e}")
    finally:
        os._exit(code)
