"""The daemon's client side: whether xentoold runs, starting it, and calls and events over its socket.

The CLI and the Python API start the daemon when a guest is created and none runs (someone must
keep the guest's on_* promises from then on, and the next command is then served warm); a service
manager may start it first (contrib/systemd).  Starting it is a process of its own
(``python -m xentool daemon run``), not a fork of the caller: it must not inherit the caller's
hypervisor handles, and it takes tens of seconds to import the toolstack in a slow dom0, which the
caller does not wait for.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from hypercalls.interface import DomainInfo, Hypervisor
from xentool.domains import state_of, wait_until
from xentool.errors import UsageError, WaitTimeout, XentoolError
from xentool.events import Event, GuestView, changes
from xentool.wire import (
    API_RO_SOCKET,
    API_SOCKET,
    LOCK_PATH,
    LOG_PATH,
    MAX_MESSAGE,
    TLS_CA,
    TLS_CLIENT_CERT,
    TLS_CLIENT_KEY,
    ProtocolError,
    decode,
    encode,
    error_from_wire,
    request,
)

RECONNECT_SECONDS = 120.0  # how long an event stream waits for a daemon that went away to come back
CONNECT_SECONDS = 30.0
DEFAULT_TLS_PORT = 16514  # libvirt's, for the same job
START_SECONDS = 300.0  # how long a client waits for a daemon it started: importing takes tens of seconds in the lab


class DaemonUnavailable(XentoolError):
    """No daemon answers on its socket."""

    exit_code = 7


def tls_socket(host: str, port: int, tls_dir: Path, timeout: float | None) -> ssl.SSLSocket:
    """A connection to the daemon at ``host``:``port`` over mutual TLS, with the CA and this client's
    certificate and key from ``tls_dir`` (what ``--connect tls://`` and ``migrate ... tls://`` use)."""
    files = {name: tls_dir / name for name in (TLS_CA, TLS_CLIENT_CERT, TLS_CLIENT_KEY)}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise UsageError(f"TLS needs the CA's certificate and this client's certificate and key: missing {', '.join(missing)}")
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(files[TLS_CA]))
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(files[TLS_CLIENT_CERT]), str(files[TLS_CLIENT_KEY]))
    try:
        raw = socket.create_connection((host, port), timeout=CONNECT_SECONDS)
    except OSError as e:
        raise DaemonUnavailable(f"no xentool daemon answers on tls://{host}:{port} ({e.strerror or e})") from e
    try:
        stream = context.wrap_socket(raw, server_hostname=host)
    except (ssl.SSLError, OSError) as e:
        raw.close()
        raise DaemonUnavailable(f"tls://{host}:{port} refused the connection: {e}") from e
    stream.settimeout(timeout)
    return stream


def running_pid(lock_path: Path = LOCK_PATH) -> int | None:
    """The running daemon's pid, or None when none holds the lock."""
    try:
        with open(lock_path) as f:
            try:
                fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = f.read().strip()
                return int(text) if text.isdigit() else -1
            return None
    except FileNotFoundError:
        return None


def ensure_running() -> int | None:
    """Start the daemon in the background unless one runs; returns the running one's pid (None
    for one just started: it takes its lock a moment later, and a second start is harmless, as
    the second daemon finds the lock taken and ends)."""
    pid = running_pid()
    if pid is not None:
        return pid
    env = {key: value for key, value in os.environ.items() if key != "NOTIFY_SOCKET"}
    subprocess.Popen([sys.executable, "-m", "xentool", "daemon", "run", "--quiet-if-running"], env=env,
                     start_new_session=True, close_fds=True, cwd="/",
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return None


def await_daemon(timeout: float = START_SECONDS) -> int:
    """Start the daemon unless one runs, and wait until it answers; returns its pid."""
    ensure_running()
    deadline = time.monotonic() + timeout
    while True:
        try:
            with DaemonConnection(timeout=10) as conn:
                return int(conn.call("hello")["pid"])
        except (DaemonUnavailable, OSError):
            if time.monotonic() > deadline:
                raise WaitTimeout("the xentool daemon to start", timeout,
                                  f"`xentool daemon run` in the foreground shows why; so does {LOG_PATH}") from None
            time.sleep(0.2)


def wait_with_events(hv: Hypervisor, domid: int, uuid: str, done: Callable[[DomainInfo | None], bool], what: str,
                     timeout: float, hint: str = "") -> DomainInfo | None:
    """Wait for ``done(info)`` (info None once the domain is gone), woken by the daemon's events
    for the guest; the hypervisor's word decides.  Without a daemon, or if it goes away meanwhile,
    xenstore watches wake the wait instead (xentool.domains.wait_until)."""
    deadline = time.monotonic() + timeout
    try:
        conn = DaemonConnection(timeout=10)
    except DaemonUnavailable:
        return wait_until(hv, domid, done, what, timeout, hint)
    with conn:
        try:
            conn.call("events", names=[uuid])
            while True:
                info = state_of(hv, domid)
                if info is not None and info.uuid != uuid:
                    info = None  # that domid is another domain's now
                if done(info):
                    return info
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise WaitTimeout(what, timeout, hint)
                try:
                    conn.receive(timeout=remaining)
                except TimeoutError:
                    continue
        except (DaemonUnavailable, ProtocolError, OSError):
            pass  # the daemon went away: the watches take over for the time left
    return wait_until(hv, domid, done, what, max(0.0, deadline - time.monotonic()), hint)


class Stream(Protocol):
    """What a connection runs over: a unix socket, a TLS socket, or ssh's pipes (xentool.remote)."""

    def sendall(self, data: bytes, /) -> None: ...
    def recv(self, size: int, /) -> bytes: ...
    def settimeout(self, seconds: float | None, /) -> None: ...
    def close(self) -> None: ...


class DaemonConnection:
    """One connection to a daemon's API: calls, or one event stream.  Over the local daemon's
    socket (``path``; by default the full one for root, the read-only one for others), or over
    ``stream`` (a remote daemon's, named ``where``)."""

    def __init__(self, path: Path | str | None = None, timeout: float | None = 300.0, stream: Stream | None = None,
                 where: str | None = None) -> None:
        if stream is None:
            path = Path(path) if path is not None else (API_SOCKET if os.geteuid() == 0 else API_RO_SOCKET)
            stream = _unix_stream(path, timeout)
        self.path = where or str(path)
        self._sock: Stream = stream
        self._buffer = b""
        self._ids = 0

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> DaemonConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def call(self, call: str, /, **args: Any) -> Any:
        """The call's result; the daemon's error raised as the exception it stands for."""
        self._ids += 1
        try:
            self._sock.sendall(encode(request(call, args, self._ids)))
        except TimeoutError:
            raise
        except OSError as e:  # TLS's refusals come here too (a certificate the daemon does not take)
            raise DaemonUnavailable(f"the xentool daemon at {self.path} ended the connection: {e}") from e
        reply = self.receive()
        if "error" in reply:
            raise error_from_wire(reply["error"])
        if reply.get("id") != self._ids or "result" not in reply:
            raise ProtocolError(f"the daemon's reply does not answer call {self._ids}: {reply!r}")
        return reply["result"]

    def receive(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message; TimeoutError when ``timeout`` passes first (if given)."""
        if timeout is not None:
            self._sock.settimeout(timeout)
        while b"\n" not in self._buffer:
            if len(self._buffer) > MAX_MESSAGE:
                raise ProtocolError("the daemon sent a message over the protocol's size")
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise
            except OSError as e:
                raise DaemonUnavailable(f"the xentool daemon at {self.path} ended the connection: {e}") from e
            if not chunk:
                raise DaemonUnavailable(f"the xentool daemon closed the connection ({self.path})")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return decode(line)


def relay_stdio() -> int:
    """Carry the protocol between stdin/stdout and this host's daemon (`xentool daemon pipe`, what
    a client's ``ssh HOST xentool daemon pipe`` runs): the full socket for root and the `xentool`
    group, the read-only one for anyone else.  Returns the exit status."""
    if os.geteuid() == 0:
        await_daemon()
    sock = None
    for path in (API_SOCKET, API_RO_SOCKET):
        try:
            sock = _unix_stream(path, None)
            break
        except DaemonUnavailable as e:
            failure = e
            if not isinstance(e.__cause__, PermissionError):
                raise
    if sock is None:
        raise failure
    with sock:
        while True:
            ready, _, _ = select.select([0, sock.fileno()], [], [])
            if 0 in ready:
                data = os.read(0, 65536)
                if not data:
                    return 0
                sock.sendall(data)
            if sock.fileno() in ready:
                data = sock.recv(65536)
                if not data:
                    return 0
                while data:
                    data = data[os.write(1, data):]


def _unix_stream(path: Path, timeout: float | None) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(path))
    except OSError as e:
        sock.close()
        raise DaemonUnavailable(f"the xentool daemon does not answer on {path} ({e.strerror or e}); "
                                f"`xentool daemon start` starts it, {LOG_PATH} says why it stopped") from e
    return sock


def follow_events(names: Sequence[str] = (), path: Path | str | None = None,
                  reconnect_seconds: float = RECONNECT_SECONDS,
                  subscribed: Callable[[], None] | None = None,
                  connect: Callable[[], DaemonConnection] | None = None) -> Iterator[Event]:
    """Events as they happen (for guests called ``names``, or all), from the moment of this call:
    the subscription is made here, not at the first ``next()``.  When the daemon goes away
    (restarted, upgraded, killed), the iterator waits for it to come back and goes on: the events
    it missed are replayed when the daemon still has them, and otherwise made up from what changed
    (those carry ``detail["resync"] = True``), so that no change is lost from the caller's view.
    ``subscribed`` is called once the subscription is made.  ``connect`` makes the connections (a
    remote daemon's), else they are made to ``path``."""
    if connect is None:
        def connect() -> DaemonConnection:
            return DaemonConnection(path, timeout=30)
    names = list(names)
    conn = connect()
    try:
        result = conn.call("events", since=None, names=names)
    except BaseException:
        conn.close()
        raise
    if subscribed is not None:
        subscribed()
    return _follow(conn, result, names, connect, reconnect_seconds)


def _follow(conn: DaemonConnection, result: dict[str, Any], names: list[str], connect: Callable[[], DaemonConnection],
            reconnect_seconds: float) -> Iterator[Event]:
    known = {view.domid: view for view in map(_view, result["guests"])}
    token: str = result["token"]
    while True:
        with conn:
            try:
                while True:
                    message = conn.receive(timeout=None)
                    data = message.get("event")
                    if not isinstance(data, dict):
                        raise ProtocolError(f"an event stream holds events, not {message!r}")
                    guest, domid = message.get("guest"), data.get("domid")
                    if isinstance(domid, int):
                        if isinstance(guest, dict):
                            known[domid] = _view(guest)
                        else:
                            known.pop(domid, None)
                    token = message.get("token", token)
                    yield Event.from_json(data)
            except (DaemonUnavailable, OSError):
                pass  # the daemon went away: reconnect and catch up
        conn, result = _resubscribe(connect, token, names, reconnect_seconds)
        now = {view.domid: view for view in map(_view, result["guests"])}
        if result.get("missed") is not None:
            yield from (Event.from_json(e) for e in result["missed"])
        else:
            for event in changes(known, now):
                yield Event(event.kind, event.name, event.uuid, event.domid, {**event.detail, "resync": True})
        known, token = now, result["token"]


def _resubscribe(connect: Callable[[], DaemonConnection], token: str, names: list[str],
                 seconds: float) -> tuple[DaemonConnection, dict[str, Any]]:
    """A new subscription from ``token``, once the daemon is back: a connection made while the
    old daemon's socket is still being torn down can be reset, which is "not back yet" too."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            conn = connect()
        except DaemonUnavailable:
            conn = None
        if conn is not None:
            try:
                return conn, conn.call("events", since=token, names=names)
            except DaemonUnavailable:
                conn.close()
        if time.monotonic() > deadline:
            raise WaitTimeout("the xentool daemon to come back", seconds, f"{LOG_PATH} says why it stopped")
        time.sleep(0.5)


def _view(data: dict[str, Any]) -> GuestView:
    devices = frozenset((str(kind), int(devid)) for kind, devid in data.get("devices", ()))
    return GuestView(int(data["domid"]), str(data["uuid"]), data.get("name"), str(data.get("type", "")),
                     str(data["state"]), data.get("reason"), devices)


__all__ = [
    "DaemonConnection", "DaemonUnavailable", "await_daemon", "ensure_running", "follow_events", "relay_stdio", "running_pid",
    "wait_with_events",
]
