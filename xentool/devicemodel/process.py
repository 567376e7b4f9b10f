"""Starting and stopping QEMU, the device model of one HVM guest.

QEMU is started as libxl starts it (libxl__spawn_spawn): through a middle process that puts it in a
session of its own and exits, so QEMU belongs to no terminal, outlives the command that created the
guest and is never that command's zombie.  Its stdin is /dev/null, its output goes to the guest's
device-model log, and its environment is only what it needs: config values never pass through a
shell or an inherited environment.

The pid goes to ``<dom>/image/device-model-pid``, libxl's node, so that xl destroys a guest xentool
made (and the reverse); QEMU says it is ready by writing ``running`` to
``/local/domain/0/device-model/<domid>/state``, which :func:`wait_until_running` watches.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypercalls.errors import XenError
from hypercalls.interface import XenStore, perms
from xentool.console.paths import serial_socket_path
from xentool.devicemodel.paths import device_model_log_path, dm_pid_path, dm_state_path, qmp_socket_path
from xentool.devicemodel.privilege import Privilege, prepare_chroot, remove_chroot, restrict_this_process
from xentool.devicemodel.qmp import QmpFailed, qmp_execute

START_TIMEOUT = 60.0  # seconds: LIBXL_DEVICE_MODEL_START_TIMEOUT
STOP_TIMEOUT = 10.0
# QEMU's PATH: it starts no helpers of ours (taps are created with script=no), only its own.
QEMU_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class DeviceModelFailed(Exception):
    """QEMU did not start, or did not become ready; the message ends with its last log line."""


def device_model_env(domid: int) -> dict[str, str]:
    """What libxl adds to QEMU's environment (libxl__set_qemu_env_for_xsa_180 and XEN_DOMAIN_ID).

    libxl keeps an XEN_QEMU_CONSOLE_LIMIT the caller already has; merge these under os.environ's
    to match that.
    """
    # XSA-180: QEMU stops logging the guest's console output to its log file after 1 MiB.
    return {"XEN_QEMU_CONSOLE_LIMIT": "1048576", "XEN_DOMAIN_ID": str(domid)}


@dataclass(frozen=True)
class StartedDeviceModel:
    pid: int
    log_path: Path


LOG_ROTATE_BYTES = 128 * 1024  # a restricted QEMU may not grow a file past 256 KiB (RLIMIT_FSIZE)


def spawn(argv: list[str], env: dict[str, str], log_path: Path,
          preexec: Callable[[], None] | None = None) -> StartedDeviceModel:
    """Start ``argv`` detached, ``preexec`` run in the child just before exec; returns once it has
    exec'd (or raises with why it could not).  It inherits no descriptor beyond stdin, stdout and
    stderr."""
    log_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if log_path.exists() and log_path.stat().st_size > LOG_ROTATE_BYTES:
        log_path.replace(log_path.with_name(log_path.name + ".1"))  # as libxl rotates qemu-dm-NAME.log
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
    os.write(log_fd, f"\n--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(argv)}\n".encode())
    report_r, report_w = os.pipe2(os.O_CLOEXEC)
    try:
        middle = os.fork()
        if middle == 0:  # pragma: no cover - the forked middle process
            _middle(argv, {"PATH": QEMU_PATH, **env}, log_fd, report_w, preexec)
        os.close(report_w)
        report_w = -1
        os.waitpid(middle, 0)
        report = _read_all(report_r).decode(errors="replace").split("\n")
    finally:
        os.close(report_r)
        if report_w >= 0:
            os.close(report_w)
        os.close(log_fd)
    pid = next((int(line.split()[1]) for line in report if line.startswith("pid ")), None)
    failure = next((line.split(" ", 1)[1] for line in report if line.startswith("error ")), None)
    if pid is None or failure:
        raise DeviceModelFailed(f"could not start {argv[0]}: {failure or 'the spawning process died'}")
    return StartedDeviceModel(pid, log_path)


def _middle(argv: list[str], env: dict[str, str], log_fd: int, report_w: int,
            preexec: Callable[[], None] | None) -> None:  # pragma: no cover
    code = 0
    try:
        os.setsid()
        pid = os.fork()
        if pid == 0:
            try:
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(log_fd, 1)
                os.dup2(log_fd, 2)
                os.closerange(3, report_w)  # all but the report pipe, which closes at exec
                os.closerange(report_w + 1, os.sysconf("SC_OPEN_MAX"))
                signal.signal(signal.SIGINT, signal.SIG_DFL)
                signal.signal(signal.SIGPIPE, signal.SIG_DFL)
                if preexec is not None:
                    preexec()
                os.execve(argv[0], argv, env)
            except OSError as e:
                os.write(report_w, f"error {e.strerror or e}\n".encode())
            os._exit(127)
        # The report pipe closes on QEMU's exec: the reader's EOF means exec happened (or failed).
        os.write(report_w, f"pid {pid}\n".encode())
    except BaseException:  # noqa: BLE001 - nothing to report to but the pipe
        code = 1
    finally:
        os._exit(code)


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 4096):
        chunks.append(chunk)
    return b"".join(chunks)


def wait_until_running(xs: XenStore, domid: int, pid: int, log_path: Path, timeout: float = START_TIMEOUT) -> None:
    """Wait for QEMU's ``running`` in xenstore; raise :class:`DeviceModelFailed` if QEMU exits
    first or does not get there in ``timeout`` seconds."""
    path = f"{dm_state_path(domid)}/state"
    token = f"xentool-dm-{domid}-{os.getpid()}"
    pidfd = os.pidfd_open(pid)
    xs.watch(path, token)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if xs.read_or(path) == "running":
                return
            if select.select([pidfd], [], [], 0)[0]:
                raise DeviceModelFailed(f"QEMU (pid {pid}) exited while starting: {last_log_line(log_path)}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeviceModelFailed(
                    f"QEMU (pid {pid}) did not report running within {timeout:.0f} s: {last_log_line(log_path)}"
                )
            xs.read_watch(min(remaining, 0.2))
    finally:
        xs.unwatch(path, token)
        os.close(pidfd)


def wait_until_prelaunch(domid: int, pid: int, log_path: Path, commands: Sequence[tuple[str, dict[str, Any] | None]] = (),
                         timeout: float = START_TIMEOUT) -> list[Any]:
    """A restricted QEMU has no xenstore to say ``running`` in: started with -S, it is ready when
    QMP answers ``prelaunch`` (libxl's device_model_qmp_cb).  ``commands`` run in the same QMP
    session after that query-status; returns their results (connections cost, in a slow dom0)."""
    pidfd = os.pidfd_open(pid)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if select.select([pidfd], [], [], 0)[0]:
                raise DeviceModelFailed(f"QEMU (pid {pid}) exited while starting: {last_log_line(log_path)}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DeviceModelFailed(f"QEMU (pid {pid}) did not answer QMP within {timeout:.0f} s: "
                                        f"{last_log_line(log_path)}")
            if not os.path.exists(qmp_socket_path(domid)):
                time.sleep(0.02)  # QEMU creates it early; its greeting comes once it is ready
                continue
            try:
                results = qmp_execute(domid, [("query-status", None), *commands], timeout=remaining)
            except QmpFailed:
                time.sleep(0.1)  # the socket is there but not yet listening
                continue
            status = results[0].get("status")
            if status == "inmigrate":  # a restored guest's QEMU still loading its device state
                time.sleep(0.1)
                continue
            if status not in ("prelaunch", "paused", "running"):
                raise DeviceModelFailed(f"QEMU (pid {pid}) reports status {status!r} after starting")
            return results[1:]
    finally:
        os.close(pidfd)


def last_log_line(log_path: Path) -> str:
    """The last thing QEMU said (its error, when it failed), for the one-line message."""
    try:
        with open(log_path, "rb") as log:
            log.seek(0, os.SEEK_END)
            log.seek(max(0, log.tell() - 4096))
            lines = [line.strip() for line in log.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return f"see {log_path}"
    lines = [line for line in lines if not line.startswith("--- ")]
    return f"{lines[-1]} (log: {log_path})" if lines else f"no output (log: {log_path})"


def stop(pid: int, timeout: float = STOP_TIMEOUT) -> bool:
    """End QEMU: SIGHUP as libxl sends (QEMU takes it as a request to quit), SIGKILL if it has not
    gone within ``timeout``.  Returns False if there was no such process."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    try:
        signal.pidfd_send_signal(pidfd, signal.SIGHUP)
        if not select.select([pidfd], [], [], timeout)[0]:
            signal.pidfd_send_signal(pidfd, signal.SIGKILL)
            select.select([pidfd], [], [], timeout)
    except ProcessLookupError:
        pass
    finally:
        os.close(pidfd)
    return True


def is_device_model(pid: int, domid: int) -> bool:
    """Whether ``pid`` is a QEMU serving ``domid``: a pid read from xenstore may be stale and reused."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    try:
        return argv[argv.index(b"-xen-domid") + 1] == str(domid).encode()
    except (ValueError, IndexError):
        return False


def start_device_model(xs: XenStore, domid: int, uuid: str, argv: list[str], privilege: Privilege) -> StartedDeviceModel:
    """libxl__spawn_local_dm up to the wait: QEMU's xenstore directory (dom0's only), its chroot if
    restricted, the process, and its pid where xl looks for it.  What it made is undone by
    :func:`stop_device_model`, also after it failed midway."""
    Path("/var/run/xen").mkdir(parents=True, exist_ok=True)  # QMP's directory, libxl's run dir
    xs.mkdir(dm_state_path(domid))
    xs.set_perms(dm_state_path(domid), perms(0))
    prepare_chroot(privilege)
    started = spawn(argv, device_model_env(domid), device_model_log_path(uuid),
                    preexec=restrict_this_process if privilege.restricted else None)
    xs.write(dm_pid_path(domid), str(started.pid))
    return started


def stop_device_model(xs: XenStore, domid: int) -> None:
    """libxl__destroy_device_model: forget QEMU's xenstore directory, end the process whose pid the
    domain's ``image/device-model-pid`` names (if it is QEMU for this domain), remove its sockets."""
    pid_text = xs.read_or(dm_pid_path(domid))
    xs.rm_with_empty_parents(dm_state_path(domid))  # and /local/domain/0/device-model once empty
    if pid_text and pid_text.isdigit() and is_device_model(int(pid_text), domid):
        stop(int(pid_text))
    remove_chroot(domid)
    # A QEMU that was killed could not remove its sockets.
    for path in (qmp_socket_path(domid), str(serial_socket_path(domid))):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise XenError("unlink", e.errno or errno.EIO, domid, path) from e


__all__ = [
    "DeviceModelFailed",
    "StartedDeviceModel",
    "device_model_env",
    "is_device_model",
    "last_log_line",
    "spawn",
    "start_device_model",
    "stop",
    "stop_device_model",
    "wait_until_prelaunch",
    "wait_until_running",
]
