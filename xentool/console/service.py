"""The per-guest console backend process: started at creation, gone with the guest.

It is forked rather than started as a new program: Python starts slowly in the lab's dom0 (seconds),
and a fork has xentool already loaded.  The fork is doubled and the service put in its own session,
so it outlives the command that created the guest and is nobody's zombie.  Before the guest runs,
the parent waits for one line on a pipe: ``ready PID``, or ``error MESSAGE`` when the ring could not
be mapped or the channel bound, which fails the creation step like any other.
"""

from __future__ import annotations

import contextlib
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import BinaryIO

from hypercalls.interface import Hypervisor, ShutdownReason
from pvdrivers.console import ConsoleBackend
from pvdrivers.console_ring import ConsoleRing
from xentool import events, obituaries
from xentool.console.paths import LOG_DIR, RUN_DIR, console_log_path, console_pid_path, console_socket_path
from xentool.console.serial import SerialGone, SerialStream
from xentool.daemon import become_daemon
from xentool.devicemodel.paths import device_model_log_path, dm_state_path
from xentool.devicemodel.privilege import remove_chroot
from xentool.devicemodel.process import START_TIMEOUT, last_log_line
from xentool.domains import state_of
from xentool.errors import DeviceError
from xentool.events import DEVICE_MODEL_DIED, Event

READY_TIMEOUT = 30.0  # seconds; generous for a loaded lab
DYING_TIMEOUT = 30.0  # seconds for a destroyed domain to be gone (xl destroy returns before that)
DM_EXIT_WAIT = 5.0  # seconds for QEMU to exit once its serial socket closed


def start_console_backend(hv: Hypervisor, domid: int, uuid: str, ring_ref: int, remote_port: int,
                          name: str = "", serial: DeviceModelWatch | None = None) -> int:
    """Fork the backend for ``domid``'s console; returns its pid once it serves the ring, or, for
    an HVM guest (``serial``), its QEMU's serial port."""
    for directory in (RUN_DIR, LOG_DIR):
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    read_fd, write_fd = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked process
        os.close(read_fd)
        _daemonize_and_serve(hv.reopen, domid, uuid, ring_ref, remote_port, write_fd, serial)
    os.close(write_fd)
    try:
        os.waitpid(child, 0)  # the first child exits as soon as it has forked the service
        line = _read_line(read_fd, _ready_timeout(serial))
    finally:
        os.close(read_fd)
    who = name or f"domain {domid}"
    if line.startswith("ready "):
        return int(line.split()[1])
    if not line:
        raise DeviceError(who, "console", "the console backend did not start within "
                          f"{READY_TIMEOUT:.0f} s; see the host's load and try again")
    raise DeviceError(who, "console", line.removeprefix("error ").strip())


def _ready_timeout(serial: DeviceModelWatch | None) -> float:
    if serial is None:
        return READY_TIMEOUT
    return READY_TIMEOUT + START_TIMEOUT  # an HVM guest's service first waits for its starting QEMU


def stop_console_backend(domid: int, timeout: float = 5.0) -> None:
    """End the backend of ``domid`` if it still runs (it also ends by itself once the guest is gone)."""
    pid_path = console_pid_path(domid)
    try:
        pid = int(pid_path.read_text())
    except (OSError, ValueError):
        return
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.02)
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for path in (pid_path, console_socket_path(domid)):
        path.unlink(missing_ok=True)


def _read_line(fd: int, timeout: float) -> str:
    data = b""
    deadline = time.monotonic() + timeout
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            break
        chunk = os.read(fd, 512)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def _daemonize_and_serve(reopen: Callable[[], Hypervisor], domid: int, uuid: str, ring_ref: int,
                         remote_port: int, ready_fd: int,
                         serial: DeviceModelWatch | None) -> None:  # pragma: no cover - forked process
    code = 1
    try:
        ready_fd = become_daemon(ready_fd)
        signal.signal(signal.SIGTERM, _exit_cleanly)
        if serial is None:
            serve_console(reopen(), domid, uuid, ring_ref, remote_port, ready_fd)
        else:
            serve_serial(reopen(), domid, uuid, serial, ready_fd)
        code = 0
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which is still waiting
        try:
            os.write(ready_fd, f"error {e}\n".encode())
        except OSError:
            pass
    finally:
        os._exit(code)


def _exit_cleanly(signum: int, frame: object) -> None:  # pragma: no cover - forked process
    raise SystemExit(0)  # unwinds serve_console's finally: socket, pid file, mapping


def serve_console(hv: Hypervisor, domid: int, uuid: str, ring_ref: int, remote_port: int,
                  ready_fd: int | None = None) -> None:
    """Serve ``domid``'s console until the domain shuts down or is destroyed."""
    console = hv.open_guest_console(domid, ring_ref, remote_port)
    try:
        with _console_listener(domid) as listener, open(console_log_path(uuid), "ab") as log:
            if ready_fd is not None:
                os.write(ready_fd, f"ready {os.getpid()}\n".encode())
                os.close(ready_fd)
            backend = ConsoleBackend(ConsoleRing(console.page), console, log, listener)
            backend.serve(lambda: _guest_running(hv, domid))
    finally:
        console.close()
        hv.close()


class DeviceModelGone(Exception):
    """An HVM guest's QEMU exited before its serial port could be served."""


@dataclass(frozen=True)
class DeviceModelWatch:
    """An HVM guest's console: QEMU's serial socket, and QEMU itself, whose death ends the guest."""

    socket_path: str
    dm_pid: int
    name: str
    # How to destroy the half-alive domain QEMU's death leaves: the lifecycle's destroy, handed
    # down by the creation step (the lifecycle sits above the console, and stops its backend).
    destroy_domain: Callable[[Hypervisor, int], None]


@contextlib.contextmanager
def _console_listener(domid: int):
    """The socket `xentool console` attaches to (root only) and the pid file that names us."""
    sock_path, pid_path = console_socket_path(domid), console_pid_path(domid)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock_path.unlink(missing_ok=True)
        old_umask = os.umask(0o077)  # only root may attach: the console is a root shell, often
        try:
            listener.bind(str(sock_path))
        finally:
            os.umask(old_umask)
        listener.listen(8)
        pid_path.write_text(f"{os.getpid()}\n")
        yield listener
    finally:
        listener.close()
        sock_path.unlink(missing_ok=True)
        pid_path.unlink(missing_ok=True)


def serve_serial(hv: Hypervisor, domid: int, uuid: str, watch: DeviceModelWatch, ready_fd: int | None = None) -> None:
    """Serve an HVM guest's serial port until the guest shuts down or its QEMU dies.

    A guest whose device model died is half alive: its vcpus run, but every emulated device is
    gone and the next I/O it makes hangs it.  libxl leaves it so; xentool destroys it, logs why in
    the console log and leaves a note `xentool info` shows (:mod:`xentool.obituaries`).
    """
    pidfd = os.pidfd_open(watch.dm_pid)
    try:
        # QEMU is still starting (xentool.create waits for it after this service is up).
        stream = SerialStream.connect(watch.socket_path, START_TIMEOUT,
                                      alive=lambda: not select.select([pidfd], [], [], 0)[0])
    except SerialGone:
        os.close(pidfd)
        raise DeviceModelGone(f"its device model (QEMU, pid {watch.dm_pid}) exited while starting: "
                              f"{last_log_line(device_model_log_path(uuid))}") from None
    except BaseException:
        os.close(pidfd)
        raise
    try:
        with _console_listener(domid) as listener, open(console_log_path(uuid), "ab") as log:
            if ready_fd is not None:
                os.write(ready_fd, f"ready {os.getpid()}\n".encode())
                os.close(ready_fd)
            backend = ConsoleBackend(stream, stream, log, listener)  # type: ignore[arg-type]

            def alive() -> bool:
                return _guest_running(hv, domid) and not select.select([pidfd], [], [], 0)[0]

            backend.serve(alive)
            if select.select([pidfd], [], [], 0)[0] and _guest_running(hv, domid):
                _device_model_died(hv, domid, uuid, watch, log)
    finally:
        # Once QEMU is dead, the domain goes: xl's destroy ended QEMU first and is removing the
        # devices before the domain (that can take seconds), or we destroyed it above.  The serial
        # socket closes as QEMU exits, which may end the loop a moment before QEMU is gone.
        dm_dead = bool(select.select([pidfd], [], [], DM_EXIT_WAIT)[0])
        os.close(pidfd)
        stream.close()
        if _domain_gone(hv, domid, wait=DYING_TIMEOUT, even_if_alive=dm_dead):
            # xl destroy leaves these: a restricted QEMU ends inside its chroot, where it cannot
            # remove its socket, and libxl keeps the empty chroot for the domid's next QEMU.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(watch.socket_path)
            remove_chroot(domid)
        hv.close()


def _device_model_died(hv: Hypervisor, domid: int, uuid: str, watch: DeviceModelWatch, log: BinaryIO) -> None:
    if hv.xenstore().read_or(dm_state_path(domid)) is None:
        return  # a toolstack (xl, or xentool) is destroying the domain and ended QEMU on purpose
    reason = (f"its device model (QEMU, pid {watch.dm_pid}) exited unexpectedly; QEMU's last words: "
              f"{last_log_line(device_model_log_path(uuid))}")
    log.write(f"\r\n[xentool] domain {watch.name} ({domid}): {reason}; destroying the domain\r\n".encode())
    log.flush()
    obituaries.record(uuid, watch.name, domid, reason)
    watch.destroy_domain(hv, domid)
    events.publish(Event(DEVICE_MODEL_DIED, watch.name, uuid, domid, {"pid": watch.dm_pid, "then": "destroyed"}))


def _domain_gone(hv: Hypervisor, domid: int, wait: float = 0.0, even_if_alive: bool = False) -> bool:
    """Whether the domain no longer exists; one that is dying (its backends still hold pages, a
    loop device still closing), or with ``even_if_alive`` one that still lives, is waited for up
    to ``wait`` seconds."""
    deadline = time.monotonic() + wait
    while True:
        info = state_of(hv, domid)
        if info is None:
            return True
        if not (info.dying or even_if_alive) or time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def _guest_running(hv: Hypervisor, domid: int) -> bool:
    info = state_of(hv, domid)
    if info is None or info.dying:
        return False
    # A guest suspended for a save goes on after a checkpoint (or is destroyed after a save, which
    # ends this service through "dying"): its console must still be served when it resumes.
    return not info.shutdown or info.shutdown_reason == ShutdownReason.SUSPEND
