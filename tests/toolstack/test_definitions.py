"""Defined guests on the simulator: define, start by name with the same uuid, list --all, config
show, undefine; bad input as one line; and the daemon's autostart, once per boot, in order."""

from __future__ import annotations

import json
import subprocess
import sys
import time

from kit.daemon import daemon_env, sim_guest, start_daemon, stop_daemon


def xentool(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xentool", *args], env={**env, "XENTOOL_NO_DAEMON": "1"},
                          capture_output=True, text=True, timeout=60)


def listed(env: dict[str, str]) -> dict[str, dict]:
    result = xentool(env, "list", "--all", "--json")
    assert result.returncode == 0, result.stderr
    return {d["name"]: d for d in json.loads(result.stdout)}


def test_a_defined_guest_starts_by_name_with_its_uuid_every_time(tmp_path):
    env = daemon_env(tmp_path)
    example = sim_guest(tmp_path, "pv-hello", comment="# the web front end\n", memory=256)
    defined = xentool(env, "define", str(example), "memory=192")
    assert defined.returncode == 0 and defined.stdout.startswith("defined guest pv-hello (uuid "), defined.stderr
    off = listed(env)["pv-hello"]
    assert (off["state"], off["domid"], off["memory_mib"]) == ("shut off", None, 192)
    assert "pv-hello" not in [d["name"] for d in json.loads(xentool(env, "list", "--json").stdout)]  # --all only
    uuids = []
    for _ in range(2):
        started = xentool(env, "start", "pv-hello")
        assert started.returncode == 0, started.stderr
        running = listed(env)["pv-hello"]
        assert running["state"] != "shut off" and running["memory_mib"] == 192
        uuids.append(running["uuid"])
        assert xentool(env, "start", "pv-hello").returncode == 4  # it runs already
        assert xentool(env, "destroy", "pv-hello").returncode == 0
    assert uuids[0] == uuids[1] == off["uuid"]
    # Defined again (the file's own memory, 256): the uuid and the autostart setting stay.
    assert xentool(env, "autostart", "pv-hello", "on", "--order", "3").returncode == 0
    assert xentool(env, "define", str(example)).returncode == 0
    again = listed(env)["pv-hello"]
    assert (again["uuid"], again["autostart"], again["memory_mib"]) == (off["uuid"], True, 256)
    shown = xentool(env, "config", "show", "pv-hello")
    assert shown.stdout == example.read_text()  # the YAML as written, comments and all
    resolved = xentool(env, "config", "show", "--resolved", "pv-hello")
    assert f"uuid: {off['uuid']}" in resolved.stdout
    assert xentool(env, "undefine", "pv-hello").returncode == 0
    assert "pv-hello" not in listed(env)


def test_bad_input_to_the_defined_guests_commands_is_one_line(tmp_path):
    env = daemon_env(tmp_path)
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\ntype: pv\nkernel: /nonexistent\nmemory: lots\n")
    for args, code, words in ((("define", str(bad)), 2, f"{bad}:4:9: memory:"),
                              (("start", "nosuch"), 3, "no defined guest 'nosuch'"),
                              (("start", "../../etc/passwd"), 3, "no defined guest"),
                              (("undefine", "nosuch"), 3, "no defined guest"),
                              (("autostart", "nosuch", "maybe"), 2, "say on or off"),
                              (("config", "show", "nosuch"), 3, "no defined guest")):
        result = xentool(env, *args)
        assert result.returncode == code and words in result.stderr, (args, result.stderr)
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_the_daemon_starts_autostart_guests_once_per_boot_in_their_order(tmp_path):
    env = daemon_env(tmp_path)
    for name, order in (("late", 2), ("early", 1), ("manual", None)):
        config = sim_guest(tmp_path, name)
        assert xentool(env, "define", str(config)).returncode == 0
        if order is not None:
            assert xentool(env, "autostart", name, "on", "--order", str(order)).returncode == 0
    daemon = start_daemon(env)
    try:
        deadline = time.monotonic() + 30
        while {"early", "late"} - {n for n, d in listed(env).items() if d["state"] != "shut off"}:
            assert time.monotonic() < deadline, listed(env)
            time.sleep(0.2)
        assert listed(env)["manual"]["state"] == "shut off"
        log = (tmp_path / "log" / "xentoold.log").read_text()
        assert log.index("autostart: started early") < log.index("autostart: started late")
        assert xentool(env, "destroy", "early").returncode == 0  # stopped on purpose...
    finally:
        assert stop_daemon(daemon) == 0
    daemon = start_daemon(env)  # ...and the daemon starting again is not a boot: it stays down
    try:
        time.sleep(2)
        assert listed(env)["early"]["state"] == "shut off"
    finally:
        assert stop_daemon(daemon) == 0
