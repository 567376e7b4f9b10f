"""The Ansible collection (ansible_collections/xentool/xen) driven by ansible-playbook against the
simulator, on this machine: guests made real, nothing changed the second time, check mode and diff,
stopped and absent, a config error's place, and the facts.  (tests/lab/test_two_hosts.py runs it
from one dom0 against both.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kit.ansible import ANSIBLE_PLAYBOOK, ROOT, ansible_env, playbook_file, report_of
from kit.daemon import daemon_env, sim_guest

PLAYBOOK_SECONDS = 120


def playbook(tmp_path: Path, tasks: list[dict[str, Any]], *options: str) -> tuple[int, dict[str, Any]]:
    """ansible-playbook on localhost with ``tasks``: its exit status and the json callback's report."""
    book = playbook_file(tmp_path, "localhost", tasks, connection="local",
                         vars={"ansible_python_interpreter": sys.executable})
    ran = subprocess.run([ANSIBLE_PLAYBOOK, "-i", "localhost,", str(book), *options], env=env(tmp_path),
                         capture_output=True, text=True, timeout=PLAYBOOK_SECONDS, stdin=subprocess.DEVNULL)
    return ran.returncode, report_of(ran.stdout, ran.stderr, ran.returncode)


def env(tmp_path: Path) -> dict[str, str]:
    return {**daemon_env(tmp_path), "XENTOOL_NO_DAEMON": "1", **ansible_env(tmp_path)}


def results(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [task["hosts"]["localhost"] for play in report["plays"] for task in play["tasks"]]


def changed(report: dict[str, Any]) -> int:
    return int(report["stats"]["localhost"]["changed"])


def xentool(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xentool", *args], env=env(tmp_path), capture_output=True, text=True,
                          timeout=60)


def guests(tmp_path: Path) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for d in json.loads(xentool(tmp_path, "list", "--all", "--json").stdout)}


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "guests"


def guest_tasks(folder: Path, memory: int = 128) -> list[dict[str, Any]]:
    web = sim_guest(folder, "web", memory=memory, maxmem=512)
    return [{"xentool.xen.xentool_guest": {"config_file": str(web), "state": "running"}},
            {"xentool.xen.xentool_guest": {"config": {"name": "tiny", "type": "pv", "memory": 64,
                                                      "kernel": str(folder / "vmlinuz")}, "state": "present"}}]


def test_a_playbook_makes_guests_real_then_changes_nothing_then_checks_without_changing(tmp_path: Path, folder: Path) -> None:
    rc, report = playbook(tmp_path, guest_tasks(folder))
    assert rc == 0 and changed(report) == 2, report
    web, tiny = results(report)
    assert web["changes"] == ["define (new)", "start"] and web["state"] == "running"
    assert tiny["changes"] == ["define (new)"] and tiny["state"] == "stopped"
    running = guests(tmp_path)
    assert running["web"]["domid"] and running["tiny"]["domid"] is None  # tiny defined, not started
    # The same playbook again: nothing to do.
    rc, report = playbook(tmp_path, guest_tasks(folder))
    assert rc == 0 and changed(report) == 0, report
    assert [r["changes"] for r in results(report)] == [[], []]
    # A changed config in check mode: says what it would do, with the diff, and does nothing.
    rc, report = playbook(tmp_path, guest_tasks(folder, memory=256), "--check", "--diff")
    assert rc == 0 and changed(report) == 1, report
    web = results(report)[0]
    assert web["changes"] == ["redefine (memory)", "change live: memory 128 -> 256 MiB", "record the guest's new config"]
    assert web["diff"]["before"]["definition"]["memory"] == 128 and web["diff"]["after"]["definition"]["memory"] == 256
    assert json.loads(xentool(tmp_path, "info", "--json", "web").stdout)["target_memory_mib"] == 128
    # Done for real, then stopped and absent.
    rc, report = playbook(tmp_path, guest_tasks(folder, memory=256))
    assert rc == 0 and changed(report) == 1, report
    assert json.loads(xentool(tmp_path, "info", "--json", "web").stdout)["target_memory_mib"] == 256
    gone = [{"xentool.xen.xentool_guest": {"name": "web", "state": "absent"}},
            {"xentool.xen.xentool_guest": {"name": "tiny", "state": "absent"}}]
    rc, report = playbook(tmp_path, gone)
    assert rc == 0 and [r["changes"] for r in results(report)] == [["undefine", f"destroy (domain {running['web']['domid']})"],
                                                                   ["undefine"]], report
    assert set(guests(tmp_path)) == {"Domain-0"}
    rc, report = playbook(tmp_path, gone)
    assert rc == 0 and changed(report) == 0


def test_stopped_powers_a_guest_off_and_keeps_it_defined(tmp_path: Path, folder: Path) -> None:
    web = str(sim_guest(folder, "web"))
    assert playbook(tmp_path, [{"xentool.xen.xentool_guest": {"config_file": web}}])[0] == 0
    stop = [{"xentool.xen.xentool_guest": {"config_file": web, "state": "stopped", "shutdown_timeout": 30}}]
    rc, report = playbook(tmp_path, stop)
    assert rc == 0 and results(report)[0]["changes"] == ["stop (power off)"], report
    assert guests(tmp_path)["web"]["domid"] is None  # defined, not running
    assert changed(playbook(tmp_path, stop)[1]) == 0


def test_a_bad_config_fails_its_task_with_the_files_line_and_column(tmp_path: Path, folder: Path) -> None:
    bad = sim_guest(folder, "bad", memory="lots")
    rc, report = playbook(tmp_path, [{"xentool.xen.xentool_guest": {"config_file": str(bad)}}])
    assert rc == 2, report
    failed = results(report)[0]
    assert failed["failed"] and failed["msg"].startswith(f"{bad}:4:9: memory:"), failed["msg"]
    assert set(guests(tmp_path)) == {"Domain-0"}


def test_info_gives_the_host_and_every_guest_as_facts(tmp_path: Path, folder: Path) -> None:
    web = str(sim_guest(folder, "web"))
    tasks = [{"xentool.xen.xentool_guest": {"config_file": web}},
             {"xentool.xen.xentool_guest": {"config": {"name": "later", "type": "pv", "memory": 64,
                                                       "kernel": str(folder / "vmlinuz")}, "state": "present"}},
             {"xentool.xen.xentool_info": {}},
             {"ansible.builtin.debug": {"msg": "{{ xentool_guests | map(attribute='state') | list }}"}}]
    rc, report = playbook(tmp_path, tasks)
    assert rc == 0, report
    info, said = results(report)[2:]
    assert info["host"]["backend"].startswith("sim") and not info["changed"]
    assert [(g["name"], g["defined"], g["domid"] is None) for g in info["guests"]] == [("later", True, True), ("web", True, False)]
    assert said["msg"] == ["stopped", info["guests"][1]["state"]]


def test_the_collection_builds_with_ansible_galaxy(tmp_path: Path) -> None:
    built = subprocess.run([str(Path(ANSIBLE_PLAYBOOK).parent / "ansible-galaxy"), "collection", "build",
                            str(ROOT / "ansible_collections/xentool/xen"), "--output-path", str(tmp_path)],
                           capture_output=True, text=True, timeout=PLAYBOOK_SECONDS, env={**os.environ, "LC_ALL": "C.UTF-8"})
    assert built.returncode == 0, built.stdout + built.stderr
    assert (tmp_path / "xentool-xen-0.1.0.tar.gz").is_file()
