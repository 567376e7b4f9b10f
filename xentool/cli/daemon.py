"""`xentool daemon ...`: run, start, stop and show the host's daemon (xentool.xentoold)."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Optional

import typer

from xentool.cli.command_server import Entry, serve, socket_path, warm_up
from xentool.cli.protocol import run_on_server
from xentool.wire import DAEMON_CONFIG, LOG_PATH, SERVER_TLS_DIR

daemon_app = typer.Typer(help="The host's daemon (xentoold): supervises guests, serves commands, the API and events.",
                         no_args_is_help=True)

COMMAND_SOCKET_SECONDS = 30.0
STOP_TIMEOUT = 30.0


@daemon_app.command("run")
def run(
    ctx: typer.Context,
    quiet_if_running: bool = typer.Option(False, "--quiet-if-running", help="Exit with 0, saying nothing, if one runs."),
    wait: bool = typer.Option(False, "--wait", help="If one runs (started on demand), wait for it to end, then take over "
                              "(what a service manager wants)."),
    listen: Optional[list[str]] = typer.Option(None, "--listen", help="Also serve the API on tls://ADDR:PORT (mutual TLS, "
                                               f"certificates in {SERVER_TLS_DIR}); besides {DAEMON_CONFIG}'s listen."),
) -> None:
    """Be the daemon, in the foreground (what a service manager runs; `xentoold` is the same)."""
    from xentool import api, xentoold

    entry = ctx.find_root().obj
    if not isinstance(entry, Entry):  # the CLI's main() hands it over; typer alone does not
        raise typer.BadParameter("run it as `xentool daemon run` or `xentoold`", ctx)
    listeners = xentoold.listeners(list(listen or ()))  # bad addresses or settings: one line, before anything starts
    parts = xentoold.DaemonParts(
        warm_up=lambda: warm_up(entry),
        serve_commands=lambda: serve(socket_path(), entry, warmed=True),
        connect=lambda: api.connect(),
        run_command=run_on_server,
    )
    try:
        code = xentoold.run(parts, to_stderr=sys.stderr is not None and not _is_devnull(2), wait=wait, listen=listeners)
    except xentoold.DaemonRunning:
        if quiet_if_running:
            return
        raise
    raise typer.Exit(code)


def _is_devnull(fd: int) -> bool:
    try:
        return os.path.samestat(os.fstat(fd), os.stat(os.devnull))
    except OSError:
        return True


@daemon_app.command("call", hidden=True)
def call(request: str = typer.Argument(..., help='{"call": NAME, "args": {...}}, as xentool.wire has them.')) -> None:
    """One call of the daemon's API that changes the host, run by the daemon in a child of its
    command forker (xentool.xentoold.api_server): the reply, as the API sends it, on stdout."""
    import json

    from xentool import api
    from xentool.wire import error_to_wire
    from xentool.xentoold.api_server import answer

    asked = json.loads(request)
    try:
        with api.connect() as xt:
            reply = answer(xt, str(asked["call"]), dict(asked["args"]))
    except Exception as e:  # noqa: BLE001 - no hypervisor to call: the client is told, as of any failure
        reply = {"error": error_to_wire(e)}
    sys.stdout.write(json.dumps(reply) + "\n")
    sys.stdout.flush()


@daemon_app.command("pipe")
def pipe() -> None:
    """Relay the daemon's API between stdin/stdout and its socket (what `--connect ssh://HOST` runs there)."""
    from xentool.daemon_client import relay_stdio

    raise typer.Exit(relay_stdio())


@daemon_app.command("start")
def start() -> None:
    """Start the daemon in the background unless one runs, and wait until it serves."""
    from xentool.daemon_client import await_daemon

    pid = await_daemon()
    deadline = time.monotonic() + COMMAND_SOCKET_SECONDS
    while not socket_path().exists():  # its command forker binds once the daemon has warmed up: soon after
        if time.monotonic() > deadline:
            print(f"xentool: error: the daemon (pid {pid}) answers but serves no commands on {socket_path()}; "
                  f"see {LOG_PATH}", file=sys.stderr)
            raise typer.Exit(6)
        time.sleep(0.1)
    print(f"xentoold running (pid {pid})")


@daemon_app.command("stop")
def stop() -> None:
    """Stop the daemon (guests go on running; commands then run in their own process)."""
    from xentool.daemon_client import running_pid

    pid = running_pid()
    if pid is None:
        print("xentoold not running")
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while running_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.1)
    if running_pid() is not None:
        print(f"xentool: error: the daemon (pid {pid}) did not stop within {STOP_TIMEOUT:.0f} s", file=sys.stderr)
        raise typer.Exit(6)
    print("xentoold stopped")


@daemon_app.command("status")
def status(as_json: bool = typer.Option(False, "--json", help="Machine-readable output (docs/json.md).")) -> None:
    """Whether the daemon runs, and whether it serves yet."""
    import json

    from xentool.daemon_client import running_pid

    pid = running_pid()
    if pid is None:
        print(json.dumps({"running": False, "pid": None, "serving": False}) if as_json else "xentoold not running")
        raise typer.Exit(3)
    from xentool.daemon_client import DaemonConnection, DaemonUnavailable

    try:
        with DaemonConnection(timeout=10) as conn:
            conn.call("hello")
        serving = True
    except (DaemonUnavailable, OSError):
        serving = False
    if as_json:
        print(json.dumps({"running": True, "pid": pid, "serving": serving}))
        return
    print(f"xentoold running (pid {pid})" + ("" if serving else ", starting (not serving yet)"))
