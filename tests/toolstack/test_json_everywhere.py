"""`--json` on every command that prints a result (docs/json.md), and a failed command's one line
as JSON on stderr when --json was given.  Driven on the simulator as a script would drive it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import typer.main

from kit.cli import run
from xentool.cli.main import app

# Commands with no --json, each for a reason: they print nothing when they succeed (their exit
# status is the result), they are interactive or stream (console, top has --json), they start or
# stop what serves (daemon, lab), or another program reads them (daemon pipe, migrate-receive).
WITHOUT_JSON = {
    "block-detach": "silent", "cpupool-cpu-add": "silent", "cpupool-cpu-remove": "silent", "cpupool-destroy": "silent",
    "cpupool-migrate": "silent", "destroy": "silent", "mem-max": "silent", "mem-set": "silent", "network-detach": "silent",
    "pause": "silent", "rename": "silent", "resume": "silent", "unpause": "silent", "vcpu-pin": "silent", "vcpu-set": "silent",
    "console": "interactive", "daemon call": "the daemon's own channel (its reply is JSON)",
    "daemon pipe": "a program's channel", "daemon run": "the daemon itself", "daemon start": "starts what serves",
    "daemon stop": "stops what serves", "lab console": "the lab's serial log",
    "lab down": "the lab", "lab exec": "runs a command in dom0, whose output it is", "migrate-receive": "a program's channel",
}


def commands() -> dict[str, bool]:
    """Every command (`group sub` for subcommands) and whether it takes --json."""
    found: dict[str, bool] = {}

    def walk(command, prefix: list[str]) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk(sub, [*prefix, name])
            return
        options = [opt for param in command.params for opt in getattr(param, "opts", [])]
        found[" ".join(prefix)] = "--json" in options

    walk(typer.main.get_command(app), [])
    return found


def test_every_command_takes_json_or_says_why_not():
    without = {name for name, has_json in commands().items() if not has_json}
    assert without == set(WITHOUT_JSON), (without - set(WITHOUT_JSON), set(WITHOUT_JSON) - without)


@pytest.fixture
def js(capsys, sim_url):
    """`xentool --connect SIM ARGS --json`, which must succeed: its output, parsed."""
    def run_json(*argv: str) -> Any:
        code, out, err = run(capsys, "--connect", sim_url, *argv, "--json")
        assert code == 0, (argv, err)
        return json.loads(out)
    return run_json


def test_a_guests_life_in_json(capsys, sim_url, js, tmp_path: Path, kernel: Path):
    config = tmp_path / "g.yaml"
    config.write_text(f"name: g1\ntype: pv\nmemory: 128\nkernel: {kernel}\n")

    assert js("config", "check", str(config)) == [{"file": str(config), "ok": True, "type": "pv", "name": "g1", "issues": []}]
    created = js("create", str(config))
    assert created["name"] == "g1"
    assert js("info", "g1")["uuid"] == created["uuid"]
    assert [d["name"] for d in js("list")] == ["Domain-0", "g1"]
    assert js("wait", "g1", "running", "blocked")["state"] in ("running", "blocked")
    # The simulator cannot save a guest's memory: what a script reads then.
    code, out, err = run(capsys, "--connect", sim_url, "save", "g1", str(tmp_path / "g1.save"), "--json")
    assert (code, out, json.loads(err)["code"], json.loads(err)["where"]) == (5, "", 5, "domain g1")
    assert js("shutdown", "-w", "g1") == {"domain": "g1", "state": "gone", "waited": True}
    assert isinstance(js("dmesg")["lines"], list)
    assert {"hostname", "xen_version"} <= set(js("host", "info"))


def test_defined_guests_in_json(js, tmp_path: Path, kernel: Path):
    config = tmp_path / "d.yaml"
    config.write_text(f"name: d1\ntype: pv\nmemory: 128\nkernel: {kernel}\n")

    defined = js("define", str(config))
    assert defined["name"] == "d1" and defined["resolved"]["memory"] == 128
    assert js("config", "show", "d1")["uuid"] == defined["uuid"]
    assert js("autostart", "d1", "on")["autostart"] is True
    assert js("start", "d1")["uuid"] == defined["uuid"]
    plan = js("apply", "--dry-run", str(config))
    assert plan["changes_pending"] is False and plan["guests"]["d1"]["changes"] == []
    assert js("undefine", "d1") == {"name": "d1", "defined": False}


def test_errors_are_one_json_object_on_stderr_with_where(capsys, sim_url, tmp_path: Path):
    code, out, err = run(capsys, "--connect", sim_url, "info", "nosuch", "--json")
    assert (code, out) == (3, "")
    assert json.loads(err) == {"error": "no domain 'nosuch'; `xentool list` shows the domains there are", "code": 3,
                               "where": "domain nosuch"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: b\ntype: pv\nmemory: lots\n")
    code, out, err = run(capsys, "--connect", sim_url, "create", str(bad), "--json")
    problem = json.loads(err)
    assert code == 2 and problem["code"] == 2 and problem["where"] == f"{bad}:3:9", problem
    code, out, err = run(capsys, "--connect", sim_url, "config", "check", str(bad), "--json")
    checked = json.loads(out)
    assert code == 2 and checked[0]["ok"] is False and checked[0]["issues"][0]["where"] == f"{bad}:3:9"
    code, out, err = run(capsys, "--connect", sim_url, "list", "--no-such-option", "--json")
    assert code == 2 and json.loads(err)["code"] == 2 and "--no-such-option" in json.loads(err)["error"]
