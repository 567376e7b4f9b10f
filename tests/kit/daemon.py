"""A xentool daemon of a test's own, on the simulator, with its sockets, lock and log in the test's
directory (XENTOOL_RUN_DIR, XENTOOL_LOG_DIR): never the host's."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path


def daemon_env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "XENTOOL_RUN_DIR": str(tmp_path / "run"), "XENTOOL_LOG_DIR": str(tmp_path / "log"),
           "XENTOOL_CONNECT": f"sim://{tmp_path / 'sim'}"}
    for name in ("XENTOOL_NO_SERVER", "XENTOOL_NO_DAEMON", "XENTOOL_COMMAND_SOCKET"):
        env.pop(name, None)
    return env


def sim_guest(folder: Path, name: str, comment: str = "", **settings: object) -> Path:
    """A PV guest's config in ``folder`` (made if need be), with a kernel the simulator's builder
    takes beside it: no file of the host's is needed."""
    folder.mkdir(parents=True, exist_ok=True)
    kernel = folder / "vmlinuz"
    if not kernel.exists():
        kernel.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(4089))
    settings = {"name": name, "type": "pv", "kernel": kernel, "memory": 128, **settings}
    path = folder / f"{name}.yaml"
    path.write_text(comment + "".join(f"{key}: {value}\n" for key, value in settings.items()))
    return path


def start_daemon(env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`xentool daemon run` in the background, once it serves commands and its API."""
    daemon = subprocess.Popen([sys.executable, "-m", "xentool", "daemon", "run"],
                              env={**env, "XENTOOL_NO_DAEMON": "1"}, stderr=subprocess.PIPE)
    run = Path(env["XENTOOL_RUN_DIR"])
    wait_for_socket(run / "command.sock", daemon)
    wait_for_socket(run / "xentoold.sock", daemon)
    return daemon


def wait_for_socket(sock: Path, daemon: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not sock.exists():
        if daemon.poll() is not None:
            raise AssertionError(f"the daemon ended: {daemon.stderr.read().decode() if daemon.stderr else ''}")
        assert time.monotonic() < deadline, f"the daemon did not make {sock}"
        time.sleep(0.05)


def stop_daemon(daemon: subprocess.Popen[bytes]) -> int:
    daemon.terminate()
    return daemon.wait(30)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now, for a daemon to listen on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
