"""The command server (the daemon's command forker): commands run by the warm daemon give what they
give in-process, the launcher then imports none of the toolstack, and a daemon whose code changed
on disk steps aside and starts again.  Each test runs with both launchers: the Python one
(xentool.cli.launch) and the native one (launcher.c), which execs a wrapper of the interpreter
here that says when it ran.  The daemon runs on the simulator, in a directory of its own."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import xentool.cli.daemon as daemon_cli
from kit.daemon import daemon_env, start_daemon, stop_daemon
from xentool.cli import command_server, native_launcher
from xentool.cli.command_server import FRESH_SECONDS
from xentool.cli.protocol import LOCAL, decode_reply, decode_request, encode_request, forwardable

LAUNCH = ("import sys\nfrom xentool.cli import launch\ncode = 0\ntry:\n    launch.main()\n"
          "except SystemExit as e:\n    code = e.code\n"
          "print('IN-PROCESS' if 'xentool.cli.main' in sys.modules else 'SERVED', file=sys.stderr)\n"
          "sys.exit(code)\n")


MARK = "IN-PROCESS"


@pytest.fixture(scope="module")
def native(tmp_path_factory) -> Path:
    """The native launcher, built for a wrapper that marks the runs that did not go to a server."""
    where = tmp_path_factory.mktemp("native")
    wrapper = where / "python"
    wrapper.write_text(f"#!/bin/sh\necho {MARK} >&2\nexec {sys.executable} \"$@\"\n")
    wrapper.chmod(0o755)
    return native_launcher.build(where / "xentool", python=str(wrapper))


@pytest.fixture(params=["python", "native"])
def launcher(request, native) -> list[str]:
    return [sys.executable, "-c", LAUNCH] if request.param == "python" else [str(native)]


@pytest.fixture
def served(tmp_path, launcher):
    env = daemon_env(tmp_path)
    daemon = start_daemon(env)
    yield {**env, "TEST_LAUNCHER": json.dumps(launcher)}, daemon
    assert stop_daemon(daemon) == 0


def xentool(env, *args, local=False):
    """The launcher's result, its stderr ending with where the command ran (SERVED or IN-PROCESS)."""
    env = {**env, "XENTOOL_NO_DAEMON": "1"} if local else env
    result = subprocess.run([*json.loads(env["TEST_LAUNCHER"]), *args], env=env, capture_output=True, text=True, timeout=60)
    lines = [line for line in result.stderr.splitlines() if line not in (MARK, "SERVED")]
    where = MARK if MARK in result.stderr.splitlines() else "SERVED"
    result.stderr = "".join(line + "\n" for line in lines) + where
    return result


def test_a_served_command_gives_what_it_gives_in_process(served):
    env, _ = served
    assert xentool(env, "create", "configs/examples/pv-hello.yaml").returncode == 0
    remote, local = xentool(env, "list", "--json"), xentool(env, "list", "--json", local=True)
    assert remote.stderr.strip() == "SERVED" and local.stderr.strip() == "IN-PROCESS"
    assert [d["name"] for d in json.loads(remote.stdout)] == [d["name"] for d in json.loads(local.stdout)]
    assert "pv-hello" in remote.stdout  # the server saw the client's XENTOOL_CONNECT


def test_a_failing_command_exits_and_complains_the_same_served_or_not(served):
    env, _ = served
    remote, local = xentool(env, "destroy", "nosuch"), xentool(env, "destroy", "nosuch", local=True)
    assert remote.returncode == local.returncode != 0
    assert remote.stderr.replace("SERVED", "") == local.stderr.replace("IN-PROCESS", "")


def test_interactive_and_lab_commands_stay_in_process(served):
    env, _ = served
    assert xentool(env, "lab", "status", "--name", "no-such-lab").stderr.strip().endswith("IN-PROCESS")
    assert xentool(env, "config", "check", "configs/examples/pv-hello.yaml").stderr.strip().endswith("SERVED")
    assert xentool(env, "create", "-c", "--dry-run", "configs/examples/pv-hello.yaml").stderr.strip().endswith("IN-PROCESS")


def test_a_daemon_whose_code_changed_steps_aside_and_starts_again(served, tmp_path):
    """While commands come, the daemon looks at its code on disk every few seconds: an edit makes
    it start again with no command needed, and the next command is served by the new code."""
    env, daemon = served
    assert xentool(env, "list", "--json").stderr.strip() == "SERVED"  # a run of commands begins
    module = Path(daemon_cli.__file__)
    log = tmp_path / "log" / "xentoold.log"
    before = module.stat()
    os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    try:
        deadline = time.monotonic() + FRESH_SECONDS + 10
        while "xentoold starts again" not in log.read_text():
            assert time.monotonic() < deadline, "the daemon did not see its code change"
            time.sleep(0.1)
    finally:
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
    sock = tmp_path / "run" / "command.sock"
    deadline = time.monotonic() + 10
    while xentool(env, "list", "--json").stderr.strip() != "SERVED":  # in process while it starts again
        assert time.monotonic() < deadline and daemon.poll() is None
        time.sleep(0.2)
    assert sock.exists()


def test_the_code_is_watched_while_commands_come_and_checked_on_the_path_after_a_pause(monkeypatch):
    """The forker's watch: once the last request has had SETTLE_SECONDS alone, a check, then one
    every CHECK_SECONDS while commands come; after WATCH_SECONDS without one it only waits, and
    the next request's check is on its path."""
    checks: list[float] = []
    monkeypatch.setattr(command_server, "CHECK_SECONDS", 0.05)
    monkeypatch.setattr(command_server, "SETTLE_SECONDS", 0.1)
    monkeypatch.setattr(command_server, "source_stamps", lambda: checks.append(time.monotonic()) or {"a.py": 1})
    watch = command_server._watch_code_until_taken
    taken_r, taken_w = os.pipe()
    try:
        os.write(taken_w, b"T")  # a request within the settling time: no check, the one before stands
        assert watch(taken_r, {"a.py": 1}, served_at=time.monotonic(), checked_at=12.5) == 12.5 and checks == []
        assert os.read(taken_r, 1) == b"T"

        served = time.monotonic()
        threading.Timer(0.4, os.write, (taken_w, b"T")).start()
        checked_at = watch(taken_r, {"a.py": 1}, served_at=served, checked_at=12.5)
        assert checks[0] - served >= 0.1 and len(checks) >= 4  # settled, then watched while awaited
        assert checked_at == pytest.approx(checks[-1], abs=0.02)
        assert os.read(taken_r, 1) == b"T"

        checks.clear()
        threading.Timer(0.3, os.write, (taken_w, b"T")).start()
        long_ago = time.monotonic() - command_server.WATCH_SECONDS - 1
        checked_at = watch(taken_r, {"a.py": 1}, served_at=long_ago, checked_at=12.5)
        assert len(checks) == 1 and checked_at == pytest.approx(checks[0], abs=0.02)  # then only waits
        assert os.read(taken_r, 1) == b"T"

        assert watch(taken_r, {"a.py": 2}, served_at=long_ago, checked_at=12.5) is None
    finally:
        os.close(taken_r)
        os.close(taken_w)


def test_a_second_daemon_is_refused_and_the_first_keeps_its_socket(served, tmp_path):
    env, daemon = served
    second = subprocess.run([sys.executable, "-m", "xentool", "daemon", "run"], env={**env, "XENTOOL_NO_DAEMON": "1"},
                            capture_output=True, text=True, timeout=60)
    assert second.returncode == 4 and "a xentool daemon already runs" in second.stderr
    assert daemon.poll() is None and (tmp_path / "run" / "command.sock").exists()
    assert xentool(env, "list", "--json").stderr.strip() == "SERVED"


def test_the_protocol_carries_arguments_directory_and_environment_as_they_are():
    argv, env = ["create", "a b", "", "x=ü"], {"A": "1", "B": "with=equals", "EMPTY": ""}
    request = encode_request(argv, "/some dir", env)
    decoded = decode_request(request[4:])
    assert (decoded.argv, decoded.cwd, decoded.env) == (argv, "/some dir", env)
    with pytest.raises(ValueError):
        decode_request(b"/cwd\x009\x00only-one\x00")
    assert decode_reply(LOCAL) is None and decode_reply((3).to_bytes(4, "big")) == 3


def test_the_server_runs_only_commands_that_need_no_terminal_and_no_lab():
    assert forwardable(["create", "g.yaml"], {}) and forwardable(["--connect", "xen", "list"], {})
    assert not forwardable(["create", "-c", "g.yaml"], {}) and not forwardable(["console", "g"], {})
    assert forwardable(["console", "--log", "g"], {}) and forwardable(["config", "show", "g"], {})
    assert not forwardable(["top"], {}) and not forwardable(["daemon", "stop"], {}) and not forwardable(["lab", "up"], {})
    assert not forwardable(["--connect", "lab", "list"], {}) and not forwardable(["list"], {"XENTOOL_CONNECT": "lab"})
    assert not forwardable(["list"], {"XENTOOL_NO_DAEMON": "1"}) and not forwardable(["list", "-h"], {})
    assert not forwardable(["list"], {"XENTOOL_NO_SERVER": "1"})  # the older name


@pytest.mark.parametrize("connect", [None, "xen", "sim:///tmp/s", "lab", "ssh://elsewhere", "tls://elsewhere:16514"])
def test_a_waiting_child_rehearses_the_lists_quietly_and_only_on_this_hosts_hypervisor(connect, monkeypatch, capfd):
    """Before it takes a request, a forked child runs `list` to copy the pages a command writes
    (their first write is a page fault that costs a hypercall in a PV dom0): its output, its exit
    and its errors are its own, and it never reaches the lab or another host."""
    if connect is None:
        monkeypatch.delenv("XENTOOL_CONNECT", raising=False)
    else:
        monkeypatch.setenv("XENTOOL_CONNECT", connect)
    ran: list[list[str]] = []

    def run(argv: list[str]) -> None:
        ran.append(argv)
        print("a table", flush=True)
        print("a complaint", file=sys.stderr, flush=True)
        raise SystemExit(3)

    command_server._rehearse(command_server.Entry(run=run, prepare=lambda: None))
    local = connect in (None, "xen") or connect.startswith("sim://")
    assert ran == ([["list"], ["list", "--json"]] if local else [])
    assert capfd.readouterr() == ("", "")


def test_what_waits_for_the_next_request_starts_once_the_last_command_has_ended():
    """The forker's check and the waiting child's rehearsal wait for the last command's process to
    exit (a pidfd), up to a deadline, and give way at once to a request."""
    command = subprocess.Popen(["sleep", "0.3"])
    serving = command_server._pidfd(command.pid)
    awaited_r, awaited_w = os.pipe()
    try:
        assert serving is not None
        start = time.monotonic()
        assert command_server._settle([awaited_r], serving, start + 10) is False  # the command ended
        assert 0.25 < time.monotonic() - start < 5
        start = time.monotonic()
        assert command_server._settle([awaited_r], None, start + 0.2) is False  # nothing to wait for: the deadline
        assert time.monotonic() - start >= 0.2
        os.write(awaited_w, b"T")
        assert command_server._settle([awaited_r], serving, time.monotonic() + 10) is True  # a request first
    finally:
        command.wait()
        for fd in (awaited_r, awaited_w, *([serving] if serving is not None else [])):
            os.close(fd)


def test_a_rehearsal_gives_way_to_a_request_between_its_commands(monkeypatch):
    monkeypatch.delenv("XENTOOL_CONNECT", raising=False)
    ran: list[list[str]] = []
    listener, client = socket.socketpair()  # a readable listener stands for a waiting connection
    try:
        client.send(b"x")
        command_server._rehearse(command_server.Entry(run=ran.append, prepare=lambda: None), listener)
        assert ran == []
        listener.recv(1)
        command_server._rehearse(command_server.Entry(run=ran.append, prepare=lambda: None), listener)
        assert ran == [["list"], ["list", "--json"]]
    finally:
        listener.close()
        client.close()
