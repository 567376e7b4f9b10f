"""The command server: commands run by a warm server give what they give in-process, the launcher
then imports none of the toolstack, and a server whose code changed on disk steps aside."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import xentool.cli.server as server_cli

LAUNCH = ("import sys\nfrom xentool.cli import launch\ncode = 0\ntry:\n    launch.main()\n"
          "except SystemExit as e:\n    code = e.code\n"
          "print('IN-PROCESS' if 'xentool.cli.main' in sys.modules else 'SERVED', file=sys.stderr)\n"
          "sys.exit(code)\n")


@pytest.fixture
def served(tmp_path):
    env = {**os.environ, "XENTOOL_COMMAND_SOCKET": str(tmp_path / "run" / "command.sock"),
           "XENTOOL_CONNECT": f"sim://{tmp_path / 'sim'}"}
    env.pop("XENTOOL_NO_SERVER", None)
    server = subprocess.Popen([sys.executable, "-m", "xentool", "server", "run"],
                              env={**env, "XENTOOL_NO_SERVER": "1"}, stderr=subprocess.PIPE)
    sock = tmp_path / "run" / "command.sock"
    deadline = time.monotonic() + 60
    while not sock.exists():
        assert server.poll() is None, server.stderr.read().decode()
        assert time.monotonic() < deadline, "the command server did not start"
        time.sleep(0.05)
    yield env, server
    server.terminate()
    server.wait(10)


def xentool(env, *args, local=False):
    env = {**env, "XENTOOL_NO_SERVER": "1"} if local else env
    return subprocess.run([sys.executable, "-c", LAUNCH, *args], env=env, capture_output=True, text=True, timeout=60)


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
    assert xentool(env, "config", "check", "configs/examples/pv-hello.yaml").stderr.strip().endswith("IN-PROCESS")
    assert xentool(env, "create", "-c", "--dry-run", "configs/examples/pv-hello.yaml").stderr.strip().endswith("IN-PROCESS")


def test_a_server_whose_code_changed_steps_aside_and_the_command_still_runs(served):
    env, server = served
    module = Path(server_cli.__file__)
    before = module.stat()
    os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns + 1_000_000_000))
    try:
        result = xentool(env, "list", "--json")
    finally:
        os.utime(module, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert result.returncode == 0 and result.stderr.strip() == "IN-PROCESS"
    assert server.wait(10) == 0
    assert not Path(env["XENTOOL_COMMAND_SOCKET"]).exists()


def test_a_second_server_is_refused_and_the_first_keeps_its_socket(served):
    env, server = served
    second = subprocess.run([sys.executable, "-m", "xentool", "server", "run"], env={**env, "XENTOOL_NO_SERVER": "1"},
                            capture_output=True, text=True, timeout=60)
    assert second.returncode != 0 and "already serves" in second.stderr
    assert server.poll() is None and Path(env["XENTOOL_COMMAND_SOCKET"]).exists()
    assert xentool(env, "list", "--json").stderr.strip() == "SERVED"
