"""The daemon's API: the protocol of xentool.wire on two unix sockets, one thread per connection.

- API_SOCKET (0600 root, or 0660 with a `xentool` group when the host has one): every call.
- API_RO_SOCKET (0666): the calls that change nothing (hello, list, info, host_info, events), for
  any local user, as libvirt's read-only socket.
Each connection's peer is asked for its credentials (SO_PEERCRED) and the full socket refuses a
peer that is neither root nor in the `xentool` group, whatever the file's mode says.  A connection
has a toolstack of its own (its own hypervisor handle), made at its first call, for the calls that
change nothing.  A call that changes the host runs in a child of the command forker, as a served
`xentool` command does (`xentool daemon call`; a migration taken in over TLS runs as
`xentool migrate-receive` there): never in this process's threads, since such a call forks
(a guest's console service, its QEMU) and a fork of a threaded process can inherit a lock that no
thread will release.  A call runs to its end even when the client hangs up meanwhile (a create is
finished or rolled back, not abandoned half-way; the events say which).
"""

from __future__ import annotations

import grp
import json
import os
import select
import socket
import ssl
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any, Protocol

from xentool.api import Toolstack
from xentool.daemon_client import DaemonUnavailable
from xentool.errors import UsageError, XentoolError
from xentool.migration.relay import SocketRelay
from xentool.wire import (
    API_RO_SOCKET,
    API_SOCKET,
    LOG_PATH,
    MAX_MESSAGE,
    MIGRATE_RECEIVE_CALL,
    PROTOCOL_VERSION,
    ProtocolError,
    check_request,
    decode,
    encode,
    error_to_wire,
)
from xentool.xentoold.eventlog import EventLog
from xentool.xentoold.tls import TlsListener

HANDSHAKE_SECONDS = 30.0  # a TLS client that does not finish its handshake in this long is dropped
MAX_CONNECTIONS = 64  # beyond this a client is told to come back later, so a flood cannot exhaust the daemon
ADMIN_GROUP = "xentool"
READ_ONLY_CALLS = frozenset({"hello", "list", "info", "host_info", "events", "defined", "defined_guest", "wait", "vcpu_list",
                             "sched_get", "stats", "cpupools", "block_list", "network_list", "pool_sched_get"})
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_json"):
        return value.to_json()
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list):
        return [_jsonable(item) for item in value]
    return value


def _ref(args: dict[str, Any]) -> str | int:
    ref = args.get("domain")
    if not isinstance(ref, str | int) or isinstance(ref, bool):
        raise UsageError('this call names a domain: "args": {"domain": NAME, ID or UUID}')
    return ref


def _optional_int(args: dict[str, Any], key: str) -> int | None:
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise UsageError(f'"{key}" is a whole number, not {value!r}')
    return value


# The calls: each takes the connection's toolstack and the request's arguments.
CALLS: dict[str, Callable[[Toolstack, dict[str, Any]], Any]] = {
    "list": lambda xt, a: xt.list_domains(),
    "info": lambda xt, a: xt.info(_ref(a)),
    "host_info": lambda xt, a: xt.host_info(),
    "create": lambda xt, a: xt.create(a["config"], a.get("overrides", ()), bool(a.get("paused", False))),
    "destroy": lambda xt, a: xt.destroy(_ref(a)),
    "pause": lambda xt, a: xt.pause(_ref(a)),
    "unpause": lambda xt, a: xt.unpause(_ref(a)),
    "resume": lambda xt, a: xt.resume(_ref(a)),
    "shutdown": lambda xt, a: xt.shutdown(_ref(a), bool(a.get("wait", False)), float(a.get("timeout", 60.0)),
                                          bool(a.get("acpi", False))),
    "reboot": lambda xt, a: xt.reboot(_ref(a), bool(a.get("wait", False)), float(a.get("timeout", 60.0))),
    "rename": lambda xt, a: xt.rename(_ref(a), str(a["new_name"])),
    "mem_set": lambda xt, a: xt.mem_set(_ref(a), int(a["memory_mib"])),
    "mem_max": lambda xt, a: xt.mem_max(_ref(a), int(a["max_mib"])),
    "vcpu_set": lambda xt, a: xt.vcpu_set(_ref(a), int(a["vcpus"])),
    "vcpu_pin": lambda xt, a: xt.vcpu_pin(_ref(a), a.get("vcpu", "all"), str(a["cpus"]), str(a.get("soft", "-"))),
    "vcpu_list": lambda xt, a: xt.vcpu_list(_ref(a) if a.get("domain") is not None else None),
    "sched_get": lambda xt, a: xt.sched_get(_ref(a)),
    "cpupools": lambda xt, a: xt.cpupools(),
    "cpupool_create": lambda xt, a: xt.cpupool_create(str(a["name"]), str(a.get("scheduler", "credit2")),
                                                      [int(c) for c in a.get("cpus", ())]),
    "cpupool_destroy": lambda xt, a: xt.cpupool_destroy(str(a["name"])),
    "cpupool_cpu_add": lambda xt, a: xt.cpupool_cpu_add(str(a["name"]), int(a["cpu"])),
    "cpupool_cpu_remove": lambda xt, a: xt.cpupool_cpu_remove(str(a["name"]), int(a["cpu"])),
    "cpupool_migrate": lambda xt, a: xt.cpupool_migrate(_ref(a), str(a["pool"])),
    "pool_sched_get": lambda xt, a: xt.pool_sched_get(str(a.get("pool", "Pool-0")), str(a.get("scheduler", "credit2"))),
    "pool_sched_set": lambda xt, a: xt.pool_sched_set(str(a.get("pool", "Pool-0")), str(a.get("scheduler", "credit2")),
                                                      _optional_int(a, "ratelimit_us"), _optional_int(a, "tslice_ms"),
                                                      _optional_int(a, "migration_delay_us")),
    "stats": lambda xt, a: xt.stats(_ref(a) if a.get("domain") is not None else None, float(a.get("interval", 1.0))),
    "sched_set": lambda xt, a: xt.sched_set(_ref(a), _optional_int(a, "weight"), _optional_int(a, "cap"), a.get("scheduler")),
    "define": lambda xt, a: xt.define(a["config"], a.get("overrides", ())),
    "undefine": lambda xt, a: xt.undefine(str(a["name"])),
    "start": lambda xt, a: xt.start(str(a["name"]), bool(a.get("paused", False))),
    "autostart": lambda xt, a: xt.set_autostart(str(a["name"]), bool(a["on"]), a.get("order"), a.get("delay")),
    "defined": lambda xt, a: xt.defined(),
    "defined_guest": lambda xt, a: xt.defined_guest(str(a["name"])),
    "wait": lambda xt, a: xt.wait_for_state(_ref(a), [str(s) for s in a.get("states", ())], float(a.get("timeout", 60.0))),
    # Hot plug; and save and restore, whose file is the daemon's host's.
    "block_list": lambda xt, a: xt.block_list(_ref(a)),
    "network_list": lambda xt, a: xt.network_list(_ref(a)),
    "block_attach": lambda xt, a: xt.block_attach(_ref(a), a["disk"]),
    "block_detach": lambda xt, a: xt.block_detach(_ref(a), str(a["vdev"]), bool(a.get("force", False))),
    "network_attach": lambda xt, a: xt.network_attach(_ref(a), a["vif"]),
    "network_detach": lambda xt, a: xt.network_detach(_ref(a), a["which"], bool(a.get("force", False))),
    "save": lambda xt, a: xt.save(_ref(a), str(a["path"]), bool(a.get("checkpoint", False))),
    "restore": lambda xt, a: xt.restore(str(a["path"]), bool(a.get("paused", False))),
}


def answer(xt: Toolstack, call: str, args: dict[str, Any]) -> dict[str, Any]:
    """The reply to a known call, as the API sends it (less its id): its result, or its error."""
    try:
        return {"result": _jsonable(CALLS[call](xt, args))}
    except Exception as e:  # noqa: BLE001 - every failure crosses the socket as an error reply
        return {"error": error_to_wire(e)}


class RunCommand(Protocol):
    """xentool.cli.launch.run_on_server, handed down by the CLI: ``xentool ARGV`` run by the command
    forker on ``fds`` (stdin, stdout, stderr); its exit status, or None when no forker takes it."""

    def __call__(self, argv: list[str], fds: tuple[int, int, int] = (0, 1, 2), env: dict[str, str] | None = None,
                 cwd: str | None = None) -> int | None: ...


# What in the daemon's environment would make the forker hand a command back to be run in
# process (xentool.cli.protocol's NO_DAEMON_ENV and NO_SERVER_ENV): a test's daemon has it.
_IN_PROCESS_ENV = frozenset({"XENTOOL_NO_DAEMON", "XENTOOL_NO_SERVER"})
FORKER_SECONDS = 30.0  # how long a call waits for the command forker (bound soon after the daemon starts)


class ApiServer:
    def __init__(self, connect: Callable[[], Toolstack], run_command: RunCommand, log: EventLog,
                 note: Callable[[str], None], stopping: threading.Event) -> None:
        self._connect = connect
        self._run_command = run_command
        self._log = log
        self._note = note
        self._stopping = stopping
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)
        self._listeners: list[socket.socket] = []

    def start(self, tls: Sequence[TlsListener] = ()) -> None:
        group = _admin_gid()
        for path, read_only, mode in ((API_SOCKET, False, 0o660 if group is not None else 0o600), (API_RO_SOCKET, True, 0o666)):
            listener = _listen(path, mode, group if not read_only else None)
            self._listeners.append(listener)
            threading.Thread(target=self._accept, args=(listener, read_only), name=f"api-{path.name}", daemon=True).start()
        for wanted in tls:
            try:
                listener = socket.create_server((wanted.host, wanted.port), family=_family(wanted.host), reuse_port=False)
            except OSError as e:
                raise UsageError(f"cannot listen on {wanted.url}: {e.strerror or e}") from e
            self._listeners.append(listener)
            self._note(f"API on {wanted.url} (mutual TLS)")
            threading.Thread(target=self._accept_tls, args=(listener, wanted), name=f"api-{wanted.url}", daemon=True).start()

    def _accept_tls(self, listener: socket.socket, tls: TlsListener) -> None:
        while not self._stopping.is_set():
            try:
                conn, peer = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve_tls, args=(conn, peer, tls), daemon=True).start()

    def _serve_tls(self, conn: socket.socket, peer: Any, tls: TlsListener) -> None:
        conn.settimeout(HANDSHAKE_SECONDS)
        try:
            secure = tls.context.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as e:
            self._note(f"{tls.url}: refused a client at {peer[0]}: {e}")
            conn.close()
            return
        why = tls.admits(secure)
        if why is not None:
            self._note(f"{tls.url}: refused a client at {peer[0]}: {why}")
            _send_error(secure, None, UsageError(f"this daemon does not take your certificate: {why}"))
            secure.close()
            return
        secure.settimeout(None)
        if not self._slots.acquire(blocking=False):
            _send_error(secure, None, ProtocolError(f"the daemon serves {MAX_CONNECTIONS} connections at most; try again"))
            secure.close()
            return
        self._serve(secure, read_only=False, vouched=True)

    def stop(self) -> None:
        for listener in self._listeners:
            listener.close()
        for path in (API_SOCKET, API_RO_SOCKET):
            path.unlink(missing_ok=True)

    def _accept(self, listener: socket.socket, read_only: bool) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return  # closed: the daemon is stopping
            if not self._slots.acquire(blocking=False):
                _send_error(conn, None, ProtocolError(f"the daemon serves {MAX_CONNECTIONS} connections at most; try again"))
                conn.close()
                continue
            threading.Thread(target=self._serve, args=(conn, read_only), daemon=True).start()

    def _serve(self, conn: socket.socket, read_only: bool, vouched: bool = False) -> None:
        """Serve one client (``vouched``: its TLS certificate stands for it, not its credentials)."""
        xt: Toolstack | None = None
        try:
            if not read_only and not vouched and not _may_administer(conn):
                _send_error(conn, None, UsageError("only root and the `xentool` group may use this socket; "
                                                   f"{API_RO_SOCKET} serves read-only calls to anyone"))
                return
            reader = _Lines(conn)
            while True:
                line = reader.next()
                if line is None:
                    return
                try:
                    ident, call, args = check_request(decode(line))
                except ProtocolError as e:
                    _send_error(conn, None, e)
                    return  # the stream cannot be trusted to be in step any more
                if read_only and call not in READ_ONLY_CALLS:
                    _send_error(conn, ident, UsageError(f"{call!r} changes the host: call it on {API_SOCKET} (root)"))
                    continue
                if call == "hello":
                    conn.sendall(encode({"id": ident, "result": {"protocol": PROTOCOL_VERSION, "pid": os.getpid(),
                                                                 "token": self._log.token()}}))
                    continue
                if call == "events":
                    self._stream_events(conn, ident, args)
                    return
                if call == MIGRATE_RECEIVE_CALL:
                    self._receive_migration(conn, reader.rest())
                    return
                handler = CALLS.get(call)
                if handler is None:
                    known = ", ".join(sorted({*CALLS, "hello", "events", MIGRATE_RECEIVE_CALL}))
                    _send_error(conn, ident, UsageError(f"no call {call!r}; the calls are {known}"))
                    continue
                if call not in READ_ONLY_CALLS:
                    reply = self._answer_in_forker(call, args)
                else:
                    try:
                        if xt is None:
                            xt = self._connect()
                    except Exception as e:  # noqa: BLE001 - as a call's own failure
                        _send_error(conn, ident, e)
                        continue
                    reply = answer(xt, call, args)
                conn.sendall(encode({"id": ident, **reply}))
        except OSError:
            pass  # the client went away
        finally:
            conn.close()
            if xt is not None:
                xt.close()
            self._slots.release()

    def _receive_migration(self, conn: socket.socket, already: bytes) -> None:
        """A guest migrated to this host over this connection (`xentool migrate NAME tls://HOST`):
        from here on it carries the migration protocol (xentool.migration.protocol), not calls.
        `xentool migrate-receive` takes it in, in a child of the command forker, on the relay's
        pipes (what it reads and writes over ssh); it says what it received in the daemon's log."""
        relay = SocketRelay(conn, already)
        try:
            code, said = self._in_forker(["migrate-receive"], relay.incoming, relay.outgoing)
            # What migrate-receive says ("received web (id 8), running", or why not) is the news.
            what = _one_line(said) or f"status {code}"
            self._note(f"took in a guest migrated here over the API: {what}" if code == 0 else
                       f"a migration to this host over the API failed: {what}")
        except XentoolError as e:
            self._note(f"a migration to this host over the API failed: {e}")
        finally:
            relay.close()

    def _answer_in_forker(self, call: str, args: dict[str, Any]) -> dict[str, Any]:
        """``call`` run by `xentool daemon call` in a child of the command forker: its reply."""
        request = json.dumps({"call": call, "args": args})
        try:
            with tempfile.TemporaryFile() as reply, open(os.devnull, "rb") as nothing:
                code, said = self._in_forker(["daemon", "call", request], nothing.fileno(), reply.fileno())
                reply.seek(0)
                data = reply.read()
            if said:  # a warning, or why it died
                self._note(f"API call {call}: {_one_line(said)}")
            answered = json.loads(data)
            if not isinstance(answered, dict) or not answered.keys() & {"result", "error"}:
                raise ValueError(f"not a reply: {data[:200]!r}")
            return answered
        except XentoolError as e:
            return {"error": error_to_wire(e)}
        except ValueError:  # the child died before it answered (what it said is in the daemon's log)
            return {"error": error_to_wire(XentoolError(
                f"the daemon's process for {call!r} ended (status {code}) without an answer; see {LOG_PATH}"))}

    def _in_forker(self, argv: list[str], stdin: int, stdout: int) -> tuple[int, str]:
        """``xentool ARGV`` run by the command forker on these descriptors: its exit status and
        what it said on stderr.  Waits for a forker that is not bound yet (the daemon is starting)."""
        env = {key: value for key, value in os.environ.items() if key not in _IN_PROCESS_ENV}
        deadline = time.monotonic() + FORKER_SECONDS
        with tempfile.TemporaryFile() as stderr:
            while True:
                code = self._run_command(argv, (stdin, stdout, stderr.fileno()), env=env, cwd="/")
                if code is not None:
                    stderr.seek(0)
                    return code, stderr.read().decode(errors="replace").strip()
                if self._stopping.is_set() or time.monotonic() > deadline:
                    raise DaemonUnavailable("the daemon is starting again (its code changed on disk, or it is "
                                         "stopping); call again in a few seconds")
                time.sleep(0.1)

    def _stream_events(self, conn: socket.socket, ident: Any, args: dict[str, Any]) -> None:
        names = set(args.get("names") or ())
        since = args.get("since")
        wanted = (lambda event: True) if not names else (
            lambda event: event.name in names or event.uuid in names or event.detail.get("old") in names)
        seq = self._log.last_seq
        missed = self._log.since(since) if isinstance(since, str) else None
        guests = [view.to_json() for view in self._log.guests().values() if not names or view.name in names or view.uuid in names]
        conn.sendall(encode({"id": ident, "result": {
            "token": self._log.token(seq), "guests": guests,
            "missed": None if missed is None else [e.to_json() for e in missed if e.seq <= seq and wanted(e)],
        }}))
        conn.setblocking(True)
        while not self._stopping.is_set():
            for event in self._log.wait_after(seq, 1.0):
                seq = event.seq
                if wanted(event):
                    view = self._log.guest(event.domid)
                    conn.sendall(encode({"event": event.to_json(), "token": self._log.token(seq),
                                         "guest": view.to_json() if view is not None else None}))
            if _hung_up(conn):
                return


class _Lines:
    """A connection's messages, one per line, each at most MAX_MESSAGE bytes."""

    def __init__(self, conn: socket.socket) -> None:
        self._conn = conn
        self._buffer = b""

    def next(self) -> bytes | None:
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_MESSAGE:
                _send_error(self._conn, None, ProtocolError(f"a message of over {MAX_MESSAGE} bytes"))
                return None
            chunk = self._conn.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    def rest(self) -> bytes:
        """What was read past the last message (a connection that stops carrying messages)."""
        rest, self._buffer = self._buffer, b""
        return rest


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())


def _send_error(conn: socket.socket, ident: Any, error: BaseException) -> None:
    try:
        conn.sendall(encode({"id": ident, "error": error_to_wire(error)}))
    except OSError:
        pass


def _hung_up(conn: socket.socket) -> bool:
    if isinstance(conn, ssl.SSLSocket):  # no peeking through TLS: a streaming client sends nothing, so read
        readable, _, _ = select.select([conn], [], [], 0)
        if not readable:
            return False
        try:
            conn.setblocking(False)
            return conn.recv(1) == b""
        except (ssl.SSLWantReadError, BlockingIOError):
            return False
        except OSError:
            return True
        finally:
            conn.setblocking(True)
    try:
        return conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _admin_gid() -> int | None:
    try:
        return grp.getgrnam(ADMIN_GROUP).gr_gid
    except KeyError:
        return None


def _may_administer(conn: socket.socket) -> bool:
    pid, uid, gid = _PEERCRED.unpack(conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    if uid == 0:
        return True
    admin = _admin_gid()
    if admin is None:
        return False
    if gid == admin:
        return True
    try:  # the peer's supplementary groups, as the kernel has them now
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Groups:"):
                return str(admin) in line.split()[1:]
    except OSError:
        pass
    return False


def _listen(path: Path, mode: int, group: int | None) -> socket.socket:
    path.unlink(missing_ok=True)  # left by a daemon that was killed: this one holds the lock now
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # no moment at which the socket is open to more than root
    try:
        listener.bind(os.fspath(path))
    finally:
        os.umask(old_umask)
    if group is not None:
        os.chown(path, 0, group)
    os.chmod(path, mode)
    listener.listen(32)
    return listener


__all__ = ["CALLS", "READ_ONLY_CALLS", "ApiServer"]
