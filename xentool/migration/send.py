"""`xentool migrate NAME HOST`: the source's end of a migration (xentool.migration.protocol).

It runs the receiver on the target over ssh (as `xl migrate` runs `xl migrate-receive`), offers
the guest, sends Xen's migration stream as xc_domain_save makes it (live: the memory is copied
while the guest runs and it is suspended for the last round only), then QEMU's state for an HVM
guest, and gives the "go" once the target has the guest built.  The guest is destroyed here only
when the target says it runs there.

Until "go" any failure leaves the guest where it was: running here (resumed if it had been
suspended), and nothing on the target (closing the connection makes the receiver undo).  After
"go", a target that reports failure has undone its copy, so the guest is resumed here; a target
that says nothing more (the link dropped) may or may not run it: the guest is left suspended
here, never run twice, and the error says so.
"""

from __future__ import annotations

import collections
import dataclasses
import errno
import os
import select
import shlex
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from hypercalls.errors import XenError
from hypercalls.interface import GuestType, Hypervisor
from xentool import lifecycle
from xentool.console.paths import console_log_path
from xentool.create import OpTiming
from xentool.daemon_client import CONNECT_SECONDS, DEFAULT_TLS_PORT, tls_socket
from xentool.definitions import DefinitionStore
from xentool.devicemodel.qmp import QmpFailed
from xentool.devicemodel.state import save_device_state
from xentool.domains import DomainSummary
from xentool.errors import MigrationError, UsageError, XentoolError
from xentool.events import MIGRATED_OUT, Event, publish
from xentool.migration.compression import ZSTD, CompressingPipe, supported
from xentool.migration.protocol import (
    ACCEPTED,
    CONSOLE_LOG_MAGIC,
    DM_STATE_MAGIC,
    GO,
    HELLO,
    RESTORED,
    RUNNING,
    Offer,
    frame,
    parse_answer,
    write_all,
)
from xentool.migration.receive import disk_fingerprint
from xentool.migration.relay import SocketRelay
from xentool.records import RecordStore
from xentool.saving import logdirty_switch, resume_guest, suspend_guest, xentool_record
from xentool.wire import MIGRATE_RECEIVE_CALL, client_tls_dir, encode, request

# How long each answer may take: the receiver's start (Python in a dom0, ssh), the checks, the
# restore (its devices and, for HVM, QEMU), the start.
ANSWER_SECONDS = {HELLO: 120.0, ACCEPTED: 120.0, RESTORED: 600.0, RUNNING: 120.0}
REPORT_SECONDS = 5.0  # how long a broken stream's sender waits for the receiver to say why
CONSOLE_LOG_CARRIED = 256 * 1024  # bytes of the console log's end that go along
LOCK_SECONDS = 30.0


@dataclass(frozen=True)
class MigrationResult:
    name: str
    uuid: str
    target: str  # as given (HOST or user@HOST)
    target_hostname: str  # as the target names itself
    target_domid: int
    live: bool
    seconds: float  # from the start to the guest running on the target
    downtime_seconds: float  # from the guest's suspend here to its start there, as the toolstack sees it
    note: str | None = None  # why a live migration asked for was made non-live
    compression: str | None = None  # how the stream went (xentool.migration.compression), None: as it is
    timings: tuple[OpTiming, ...] = ()  # where the time went: each phase here ("source") and each step there ("target")


class Channel:
    """The sender's end of the connection to the receiver: ``data_fd`` takes the sender's words and
    the guest, ``expect`` reads the receiver's answers from ``answers_fd``, one JSON line each."""

    def __init__(self, data_fd: int, answers_fd: int) -> None:
        self.data_fd = data_fd
        self._answers_fd = answers_fd
        self._buffer = b""
        self._compressing: CompressingPipe | None = None

    def send(self, data: bytes) -> None:
        write_all(self.data_fd, data)

    def compress_from_now(self) -> None:
        """What is sent from here on (``data_fd`` changes) goes compressed (xentool.migration.compression)."""
        self._compressing = CompressingPipe(self.data_fd)
        self.data_fd = self._compressing.fd

    def _end_compression(self) -> None:
        """The compressed frame ends (all that was sent is on its way): before the connection closes."""
        if self._compressing is not None:
            self._compressing.close()

    def expect(self, phase: str) -> dict[str, Any]:
        try:
            line = self._next_line(time.monotonic() + ANSWER_SECONDS[phase])
        except TimeoutError:
            raise TimeoutError(f"the target did not answer within {ANSWER_SECONDS[phase]:g} s") from None
        except EOFError:
            raise ConnectionError(self.why_closed()) from None
        return parse_answer(line, phase)

    def why_closed(self) -> str:
        return "the target closed the connection"

    def reported_error(self, seconds: float = REPORT_SECONDS) -> BaseException | None:
        """After the stream broke: the receiver's own error, when it reported one (a restore that
        failed there says why, where the sender only saw its pipe close)."""
        deadline = time.monotonic() + seconds
        while True:
            try:
                line = self._next_line(deadline)
            except (OSError, EOFError):  # TimeoutError is an OSError
                return None
            try:
                parse_answer(line, "")
            except XentoolError as e:
                return e
            except ValueError:
                continue

    def _next_line(self, deadline: float) -> bytes:
        """The receiver's next line: TimeoutError if none came by ``deadline``, EOFError once the
        connection has ended."""
        while b"\n" not in self._buffer:
            ready, _, _ = select.select([self._answers_fd], [], [], max(deadline - time.monotonic(), 0))
            if not ready:
                raise TimeoutError
            chunk = os.read(self._answers_fd, 65536)
            if not chunk:
                raise EOFError
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def close(self) -> None:
        """Closing it tells the receiver to give up (it undoes what it made) if it has not ended."""
        raise NotImplementedError


class SshReceiver(Channel):
    """`xentool migrate-receive` on the target, over ssh: its stdin takes the stream, its stdout
    gives the answers, its stderr is kept for the error message."""

    def __init__(self, argv: list[str]) -> None:
        try:
            self._process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            raise UsageError(f"cannot run {argv[0]} ({e.strerror or e}): migration goes over ssh; install openssh-client") from e
        self._stdin: IO[bytes] = self._process.stdin  # type: ignore[assignment]
        self._stdout: IO[bytes] = self._process.stdout  # type: ignore[assignment]
        super().__init__(self._stdin.fileno(), self._stdout.fileno())
        self._said: collections.deque[str] = collections.deque(maxlen=20)
        threading.Thread(target=self._keep_stderr, daemon=True).start()

    def close(self) -> None:
        self._end_compression()
        for pipe in (self._stdin, self._stdout):
            try:
                pipe.close()
            except OSError:
                pass
        try:
            self._process.wait(30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def _keep_stderr(self) -> None:
        assert self._process.stderr is not None
        for line in self._process.stderr:
            self._said.append(line.decode(errors="replace").rstrip())

    def why_closed(self) -> str:
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            return "the target closed the connection"
        time.sleep(0.1)  # the stderr thread's last lines
        said = [line for line in self._said if line.strip()]
        return said[-1] if said else f"the connection ended (ssh exited with status {self._process.returncode})"


class DaemonReceiver(Channel):
    """The target's daemon, over its mutual-TLS API (``tls://HOST[:PORT]``): asked to take the
    guest in (call ``migrate_receive``), after which the connection carries the migration
    protocol as ssh's pipes do, through a relay (xentool.migration.relay)."""

    def __init__(self, url: str) -> None:
        host, port, tls_dir = tls_target(url)
        try:
            sock = tls_socket(host, port, tls_dir, timeout=CONNECT_SECONDS)
            sock.sendall(encode(request(MIGRATE_RECEIVE_CALL)))
        except OSError as e:
            raise ConnectionError(f"{url}: {e}") from e
        self._where = url
        self._relay = SocketRelay(sock)
        super().__init__(self._relay.outgoing, self._relay.incoming)

    def why_closed(self) -> str:
        return f"the daemon at {self._where} closed the connection"

    def close(self) -> None:
        self._end_compression()
        self._relay.close()


def receiver_argv(target: str, ssh_command: str = "ssh", remote_xentool: str = "xentool") -> list[str]:
    """ssh's argv: the target's xentool, quoted for the remote user's shell (never our own shell)."""
    if not target or target.startswith("-") or any(c.isspace() for c in target):
        raise UsageError(f"migrate to {target!r}: give the target as HOST or USER@HOST")
    # ServerAlive: a link that drops mid-stream ends ssh within half a minute, and with it the stream.
    return [*shlex.split(ssh_command), "-o", "BatchMode=yes", "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=6",
            "-e", "none", "--", target,
            shlex.join([*shlex.split(remote_xentool), "migrate-receive"])]


def tls_target(url: str) -> tuple[str, int, Path]:
    """``tls://HOST[:PORT][?tls_dir=DIR]``: the host, the port and this client's TLS directory."""
    parts = urlsplit(url)
    if parts.scheme != "tls" or not parts.hostname or parts.path not in ("", "/"):
        raise UsageError(f"migrate to {url!r}: give the target as HOST, USER@HOST (ssh) or tls://HOST[:PORT] (its daemon)")
    query = parse_qs(parts.query)
    return parts.hostname, parts.port or DEFAULT_TLS_PORT, Path(query["tls_dir"][0]) if "tls_dir" in query else client_tls_dir()


def why_not_live(hv: Hypervisor, guest_type: GuestType) -> str | None:
    """None when this Xen can track the guest's dirty pages while it runs (what a live copy needs),
    else why not: a PV guest's are tracked with shadow paging, an HVM or PVH guest's with HAP or
    shadow paging, and a hypervisor may be built without shadow paging (Debian's 4.17 is)."""
    caps = hv.physinfo().virt_caps
    needed = ("shadow",) if guest_type == GuestType.PV else ("hap", "shadow")
    if any(cap in caps for cap in needed):
        return None
    return (f"this Xen cannot track a {guest_type.value.upper()} guest's dirty pages while it runs (that needs "
            f"{' or '.join(needed)} paging; it has {' '.join(caps) or 'neither'}), so the guest was suspended for the whole copy")


def migrate_guest(hv: Hypervisor, records: RecordStore, definitions: DefinitionStore, domain: DomainSummary, target: str,
                  live: bool = True, keep_source_definition: bool = False, ssh_command: str = "ssh",
                  remote_xentool: str = "xentool", compress: bool = True,
                  progress: Callable[[str, int, int], None] | None = None) -> MigrationResult:
    record = xentool_record(records, domain, "send", "xl migrate")
    config = record.guest_config()
    hvm = config.type == GuestType.HVM
    note = why_not_live(hv, config.type) if live else None
    live = live and note is None
    definition = definitions.load(domain.name)
    if definition is not None and definition.uuid != domain.uuid:
        definition = None  # a definition of that name, but of another guest
    offer = Offer(domain.name, domain.uuid, config.type.value, record.config, live, os.uname().nodename,
                  str(hv.physinfo().xen_version), definition.to_json() if definition is not None else None,
                  {disk.target: disk_fingerprint(disk.target) for disk in config.disks if disk.target})
    argv = None if target.startswith("tls://") else receiver_argv(target, ssh_command, remote_xentool)
    if argv is None:
        tls_target(target)  # a bad URL is a usage error before anything is locked
    started = time.monotonic()
    suspended_at: float | None = None
    dm_state = b""
    marks = PhaseClock()
    method: str | None = None  # the stream's compression, once the target said what it reads

    def suspend() -> bool:
        nonlocal suspended_at, dm_state
        marks.mark("copy the memory while the guest runs" if live else "start the copy")
        suspend_guest(hv, domain)
        suspended_at = time.monotonic()
        marks.mark("suspend the guest")
        if hvm:
            dm_state = save_device_state(domain.domid)
            marks.mark("save QEMU's state")
        return True

    with records.lock(domain.uuid, timeout=LOCK_SECONDS):
        phase = "connecting to the target"
        went = False
        receiver: Channel | None = None
        try:
            receiver = SshReceiver(argv) if argv is not None else DaemonReceiver(target)
            hello = receiver.expect(HELLO)
            marks.mark("connect and start the receiver")
            if compress and ZSTD in hello.get("compression", ()) and ZSTD in supported():
                method = ZSTD
            receiver.send(dataclasses.replace(offer, compression=method).to_line())
            phase = "checking the guest on the target"
            receiver.expect(ACCEPTED)
            marks.mark("the target checks the guest")
            if method is not None:
                receiver.compress_from_now()
            phase = "sending the guest"
            hv.domain_save(domain.domid, receiver.data_fd, suspend, logdirty_switch(hv, domain.domid), live=live,
                           progress=progress)
            marks.mark("send the last round of the memory")
            if hvm:
                receiver.send(frame(DM_STATE_MAGIC, dm_state))
            # The log's end as it is now that the guest is suspended: what it printed during the copy too.
            receiver.send(frame(CONSOLE_LOG_MAGIC, _console_log_end(domain.uuid)))
            marks.mark("send QEMU's state and the console log" if hvm else "send the console log")
            phase = "restoring the guest on the target"
            restored = receiver.expect(RESTORED)
            marks.mark("wait for the target's restore to end")
            phase = "starting the guest on the target"
            receiver.send(GO)
            went = True
            running = receiver.expect(RUNNING)
            running_at = time.monotonic()
            marks.mark("go, until it runs there")
        except BaseException as e:
            reported = e if isinstance(e, XentoolError) or receiver is None else receiver.reported_error()
            problem = _problem(reported or e)
            if reported is None and receiver is not None and _connection_broke(e):
                problem = f"the connection to the target broke ({receiver.why_closed()})"
            if receiver is not None:
                receiver.close()
            outcome = _after_failure(hv, domain, hvm, suspended_at is not None, went, reported=reported is not None)
            raise MigrationError(domain.name, phase, problem, outcome) from e
        receiver.close()
        downtime = running_at - (suspended_at or started)
        lifecycle.destroy(hv, domain.domid)
        records.remove(domain.uuid)
        if definition is not None and not keep_source_definition:
            definitions.remove(domain.name)
    publish(Event(MIGRATED_OUT, domain.name, domain.uuid, domain.domid, {"to": str(hello.get("hostname", target)), "live": live}))
    return MigrationResult(domain.name, domain.uuid, target, str(hello.get("hostname", target)), int(running["domid"]), live,
                           round(time.monotonic() - started, 2), round(downtime, 3), note, method,
                           (*marks.timings, *_target_timings(restored), *_target_timings(running)))


class PhaseClock:
    """The sender's phases, each timed from the end of the one before."""

    def __init__(self) -> None:
        self.timings: list[OpTiming] = []
        self._last = time.monotonic()

    def mark(self, phase: str) -> None:
        now = time.monotonic()
        self.timings.append(OpTiming("source", phase, now - self._last))
        self._last = now


def _target_timings(answer: dict[str, Any]) -> list[OpTiming]:
    """The receiver's steps, as its answer lists them (an older receiver lists none)."""
    try:
        return [OpTiming(f"target {step}", str(op), float(seconds)) for step, op, seconds in answer.get("timings", [])]
    except (TypeError, ValueError):
        return []


def _console_log_end(uuid: str) -> bytes:
    try:
        with open(console_log_path(uuid), "rb") as log:
            log.seek(max(log.seek(0, os.SEEK_END) - CONSOLE_LOG_CARRIED, 0))
            return log.read()
    except OSError:
        return b""  # no log (xenconsoled's guest, or the log was removed): the target starts one


def _problem(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt):
        return "interrupted"
    return str(error) or type(error).__name__


def _connection_broke(error: BaseException) -> bool:
    """xc_domain_save's write into the connection failed, and the receiver said nothing: the link
    or ssh went (libxenguest's own words are "Save failed (32 = Broken pipe): Internal error")."""
    return isinstance(error, XenError) and error.errno in (errno.EPIPE, errno.ECONNRESET)


def _after_failure(hv: Hypervisor, domain: DomainSummary, hvm: bool, suspended: bool, went: bool, reported: bool) -> str:
    """Where the guest is after a failure, having resumed it here when that is safe."""
    if went and not reported:
        return (f"whether it runs on the target is unknown, so it stays suspended here (never run twice): see "
                f"`xentool list` on the target, then `xentool destroy {domain.name}` here if it runs there, "
                f"`xentool resume {domain.name}` here if it does not")
    if not suspended:
        return "it runs on here, as before; nothing was left on the target"
    try:
        resume_guest(hv, domain.domid, hvm)
    except (XenError, QmpFailed) as e:
        return f"it stays suspended here: resuming it failed ({e}); nothing was left on the target"
    return "it was resumed and runs on here; nothing was left on the target"


__all__ = ["MigrationResult", "migrate_guest", "receiver_argv", "tls_target"]
