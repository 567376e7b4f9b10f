"""The host side of the agent protocol (see :mod:`xentool.lab.agent` for the wire format).

Each agent port takes one client at a time; a client claims a port by an flock on agent-N.lock in
the state directory (the first free one, or waits for one), so several host processes can talk to
the same lab at once, up to the number of ports, and queue beyond that.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from xentool.lab.errors import AgentError, ExecTimeout
from xentool.lab.qemu import AGENT_PORTS


@dataclass
class ExecResult:
    argv: list[str]
    returncode: int
    stdout: bytes = b""
    stderr: bytes = b""

    @property
    def out(self) -> str:
        return self.stdout.decode(errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode(errors="replace")


class AgentConnection:
    """One claimed port: a connected socket and the lock that reserves it."""

    def __init__(self, state: Path, timeout: float | None = None) -> None:
        self.state = state
        self.lock_fd = -1
        self.port = -1
        self.sock: socket.socket | None = None
        self.buf = b""
        self._claim(timeout)
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(state / f"agent-{self.port}.sock"))
            self.sock = sock
        except OSError as e:
            self.close()
            raise AgentError(f"cannot reach the lab's agent socket in {state}: {e.strerror or e}") from e

    def _claim(self, timeout: float | None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for n in range(AGENT_PORTS):
                fd = os.open(self.state / f"agent-{n}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    continue
                self.lock_fd, self.port = fd, n
                return
            if deadline is not None and time.monotonic() > deadline:
                raise AgentError(f"all {AGENT_PORTS} agent ports of the lab are busy")
            time.sleep(0.05)

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1

    def __enter__(self) -> AgentConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, frame: dict) -> None:
        assert self.sock is not None
        try:
            self.sock.sendall((json.dumps(frame) + "\n").encode())
        except OSError as e:
            raise AgentError(f"lost the connection to the lab's agent: {e}") from e

    def frames(self, rid: str, timeout: float | None) -> Iterator[dict]:
        """Frames for request ``rid``, skipping leftovers of earlier requests; raises TimeoutError."""
        assert self.sock is not None
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            while b"\n" in self.buf:
                line, _, self.buf = self.buf.partition(b"\n")
                try:
                    frame = json.loads(line)
                except ValueError:
                    continue
                if frame.get("id") == rid:
                    yield frame
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                raise TimeoutError()
            self.sock.settimeout(wait)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise TimeoutError() from None
            except OSError as e:
                raise AgentError(f"lost the connection to the lab's agent: {e}") from e
            if not chunk:
                raise AgentError("the lab's agent closed the connection (is the lab going down?)")
            self.buf += chunk

    def request(self, op: str, timeout: float | None = 30.0, **fields: object) -> dict:
        rid = uuid.uuid4().hex
        self.send({"id": rid, "op": op, **fields})
        for frame in self.frames(rid, timeout):
            if frame.get("t") == "reply":
                if "error" in frame:
                    raise AgentError(f"the lab's agent refused {op!r}: {frame['error']}")
                return frame
        raise AgentError("unreachable")

    def exec(self, argv: list[str], cwd: str | None, env: dict[str, str] | None,
             on_output: Callable[[str, bytes], None], timeout: float | None = None) -> int:
        """Run argv in dom0, handing each chunk of output to ``on_output("out"|"err", data)`` as it
        arrives; returns the exit status.  Ctrl-C is passed on to the command (twice: SIGKILL)."""
        rid = uuid.uuid4().hex
        self.send({"id": rid, "op": "exec", "argv": argv, "cwd": cwd, "env": env})
        deadline = None if timeout is None else time.monotonic() + timeout
        interrupts = 0
        while True:
            try:
                left = None if deadline is None else max(0.0, deadline - time.monotonic())
                for frame in self.frames(rid, left):
                    kind = frame.get("t")
                    if kind in ("out", "err"):
                        on_output(kind, base64.b64decode(frame["d"]))
                    elif kind == "exit":
                        return int(frame["rc"])
                    elif kind == "reply" and "error" in frame:
                        raise AgentError(f"the lab's agent could not run {argv[0]!r}: {frame['error']}")
            except TimeoutError:
                self.send({"id": rid, "op": "signal", "sig": int(signal.SIGKILL)})
                self._drain(rid)
                raise ExecTimeout(argv, timeout or 0) from None
            except KeyboardInterrupt:
                interrupts += 1
                sig = signal.SIGINT if interrupts == 1 else signal.SIGKILL
                self.send({"id": rid, "op": "signal", "sig": int(sig)})
                if interrupts > 2:
                    raise

    def _drain(self, rid: str) -> None:
        try:
            for frame in self.frames(rid, 10.0):
                if frame.get("t") == "exit":
                    return
        except (TimeoutError, AgentError):
            pass
