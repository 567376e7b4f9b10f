"""`xentool server ...`: start, stop and show the command server (xentool.cli.command_server)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import typer

from xentool.cli.command_server import Entry, running_pid, serve, socket_path

server_app = typer.Typer(help="The command server: a warm xentool that runs commands without Python's start-up.")

START_TIMEOUT = 300.0  # seconds; importing the toolstack takes tens of seconds in the lab's dom0


@server_app.command("run")
def run(ctx: typer.Context) -> None:
    """Serve in the foreground (for a supervisor such as systemd)."""
    entry = ctx.find_root().obj
    if not isinstance(entry, Entry):  # the CLI's main() hands it over; typer alone does not
        raise typer.BadParameter("run it as `xentool server run`", ctx)
    serve(socket_path(), entry)


@server_app.command("start")
def start() -> None:
    """Start the server in the background and wait until it answers."""
    sock = socket_path()
    pid = running_pid(sock)
    if pid is not None:
        print(f"command server already running (pid {pid}, {sock})")
        return
    env = {**os.environ, "XENTOOL_NO_SERVER": "1"}
    subprocess.Popen([sys.executable, "-m", "xentool", "server", "run"], env=env, start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        pid = running_pid(sock)
        if pid is not None and sock.exists():
            print(f"command server running (pid {pid}, {sock})")
            return
        time.sleep(0.2)
    print(f"xentool: error: the command server did not start within {START_TIMEOUT:.0f} s; "
          "run `xentool server run` to see why", file=sys.stderr)
    raise typer.Exit(6)


@server_app.command("stop")
def stop() -> None:
    """Stop the server (commands then run in their own process again)."""
    sock = socket_path()
    pid = running_pid(sock)
    if pid is None:
        print("command server not running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while running_pid(sock) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    print("command server stopped")


@server_app.command("status")
def status() -> None:
    """Whether the server runs, and where."""
    sock = socket_path()
    pid = running_pid(sock)
    print(f"command server running (pid {pid}, {sock})" if pid else "command server not running")
