"""The command line, driven as a user drives it: arguments in, output and exit status out."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kit.cli import run


@pytest.fixture
def guest_file(tmp_path: Path, kernel: Path) -> Path:
    path = tmp_path / "guest.yaml"
    path.write_text(f"name: hello\ntype: pv\nmemory: 128\nkernel: {kernel}\ncmdline: console=hvc0\n")
    return path


def test_create_then_list_json_shows_the_domain(capsys, sim_url, guest_file):
    code, out, err = run(capsys, "--connect", sim_url, "create", str(guest_file))
    assert (code, err) == (0, "")
    assert "created domain hello" in out
    code, out, _ = run(capsys, "--connect", sim_url, "list", "--json")
    rows = json.loads(out)
    assert code == 0
    assert [r["name"] for r in rows] == ["Domain-0", "hello"]
    assert rows[1]["memory_mib"] == 128


def test_overrides_on_the_command_line_change_the_guest(capsys, sim_url, guest_file):
    code, _, err = run(capsys, "--connect", sim_url, "create", str(guest_file), "memory=256", "name=web2")
    assert code == 0, err
    _, out, _ = run(capsys, "--connect", sim_url, "info", "web2", "--json")
    assert json.loads(out)["memory_mib"] == 256


def test_dry_run_prints_the_plan_and_creates_nothing(capsys, sim_url, guest_file):
    code, out, _ = run(capsys, "--connect", sim_url, "create", "--dry-run", str(guest_file))
    assert code == 0
    assert "xc_domain_create" in out and "/local/domain/{domid}/name = 'hello'" in out
    assert "xs_introduce_domain" in out
    _, out, _ = run(capsys, "--connect", sim_url, "list", "--json")
    assert [r["name"] for r in json.loads(out)] == ["Domain-0"]


def test_dry_run_shows_only_the_steps_the_connected_hypervisor_runs(capsys, monkeypatch, sim_url, guest_file):
    # The simulator has no kernel backends and serves consoles itself: its plan leaves them out.
    monkeypatch.delenv("XENTOOL_CONNECT", raising=False)
    _, simulated, _ = run(capsys, "--connect", sim_url, "create", "--dry-run", str(guest_file))
    _, real, _ = run(capsys, "create", "--dry-run", str(guest_file))
    for step in ("start the console backend", "wait until blkback and netback"):
        assert step in real and step not in simulated
    assert "xc_domain_create" in simulated


def test_bad_config_gives_one_line_per_issue_and_exit_2(capsys, sim_url, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntype: pv\nkernel: /k\nmemory: lots\n")
    code, out, err = run(capsys, "--connect", sim_url, "create", str(bad))
    assert code == 2
    assert f"{bad}:4:9: memory:" in err
    assert "Traceback" not in err
    _, out, _ = run(capsys, "--connect", sim_url, "list", "--json")
    assert [r["name"] for r in json.loads(out)] == ["Domain-0"]


def test_unknown_domain_is_one_line_with_exit_3(capsys, sim_url):
    code, _, err = run(capsys, "--connect", sim_url, "destroy", "nosuch")
    assert code == 3
    assert err.strip() == "xentool: error: no domain 'nosuch'; `xentool list` shows the domains there are"


def test_without_xen_or_a_connection_the_error_says_how_to_reach_one(capsys, monkeypatch):
    monkeypatch.delenv("XENTOOL_CONNECT", raising=False)
    code, _, err = run(capsys, "list")
    assert code == 7
    assert "no Xen hypervisor here" in err and "--lab" in err and "sim:///" in err
    assert len(err.strip().splitlines()) == 1


def test_host_info_json(capsys, sim_url):
    code, out, _ = run(capsys, "--connect", sim_url, "host", "info", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["xen_version"].startswith("4.17")
    assert data["free_memory_mib"] < data["total_memory_mib"]


def test_lifecycle_commands_through_the_cli(capsys, sim_url, guest_file):
    assert run(capsys, "--connect", sim_url, "create", "-p", str(guest_file))[0] == 0
    assert json.loads(run(capsys, "--connect", sim_url, "info", "hello", "--json")[1])["state"] == "paused"
    assert run(capsys, "--connect", sim_url, "unpause", "hello")[0] == 0
    assert run(capsys, "--connect", sim_url, "mem-set", "hello", "100M")[0] == 0
    assert run(capsys, "--connect", sim_url, "rename", "hello", "hi")[0] == 0
    assert run(capsys, "--connect", sim_url, "shutdown", "-w", "hi")[0] == 0
    rows = json.loads(run(capsys, "--connect", sim_url, "list", "--json")[1])
    assert [r["name"] for r in rows] == ["Domain-0"]


def test_config_check_reports_every_file(capsys, tmp_path, guest_file):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntype: pv\nkernel: /k\nmemroy: 128\n")
    code, out, err = run(capsys, "config", "check", str(guest_file), str(bad))
    assert code == 2
    assert f"{guest_file}: ok" in out
    assert "memroy" in err and "did you mean" in err and "memory" in err


def test_dmesg_shows_the_hypervisor_ring(capsys, sim_url):
    code, out, _ = run(capsys, "--connect", sim_url, "dmesg")
    assert code == 0 and "Xen" in out


def test_top_once_json_and_stats_measure_every_domain_or_one(capsys, sim_url, guest_file):
    assert run(capsys, "--connect", sim_url, "create", str(guest_file))[0] == 0
    code, out, err = run(capsys, "--connect", sim_url, "top", "--json", "--delay", "0.2", "--sort", "memory")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["name"] for r in rows] == ["Domain-0", "hello"]  # busiest memory first: dom0 has more
    assert rows[1]["memory_mib"] == 128 and rows[1]["cpu_percent"] >= 0
    assert rows[1]["net_rx_rate"] is None  # the simulator has no backends to count traffic with
    code, out, err = run(capsys, "--connect", sim_url, "stats", "hello", "--json", "-i", "0.1")
    assert code == 0, err
    assert json.loads(out)["vcpus"] == 1
    code, _, err = run(capsys, "--connect", sim_url, "top", "--once", "--sort", "disk")
    assert code == 2 and "sort by one of cpu, memory, name, net, block" in err


def test_vcpu_list_and_sched_credit2_tables(capsys, sim_url, guest_file):
    assert run(capsys, "--connect", sim_url, "create", str(guest_file))[0] == 0
    assert run(capsys, "--connect", sim_url, "vcpu-pin", "hello", "0", "1-2")[0] == 0
    code, out, _ = run(capsys, "--connect", sim_url, "vcpu-list", "hello")
    assert code == 0 and "1-2 / all" in out
    assert run(capsys, "--connect", sim_url, "sched-credit2", "-d", "hello", "-w", "64")[0] == 0
    code, out, _ = run(capsys, "--connect", sim_url, "sched-credit2")
    assert code == 0 and "scheduler credit2" in out and any(line.split()[-2:] == ["64", "0"] for line in out.splitlines())
    code, _, err = run(capsys, "--connect", sim_url, "sched-credit2", "-w", "64")
    assert code == 2 and "name the domain (-d)" in err
    code, out, _ = run(capsys, "--connect", sim_url, "sched-credit2", "-p", "Pool-0", "--json")
    assert code == 0 and [row["name"] for row in json.loads(out)] == ["Domain-0", "hello"]
    code, _, err = run(capsys, "--connect", sim_url, "sched-credit2", "-p", "nowhere")
    assert code == 2 and "no cpupool named 'nowhere'" in err


def test_copy_progress_is_a_line_per_phase_off_a_terminal_and_nothing_when_quiet():
    import io

    from rich.console import Console

    from xentool.cli.progress import copy_progress

    written = io.StringIO()
    with copy_progress(Console(file=written, width=200), "saving web") as report:
        assert report is not None
        for what, done, total in (("Frames", 0, 32768), ("Frames", 512, 32768), ("Frames iteration 2 of 5", 10, 32768),
                                  ("Complete", 0, 0)):
            report(what, done, total)
    assert written.getvalue().splitlines() == ["saving web: Frames (32768 pages)", "saving web: Frames iteration 2 of 5 (32768 pages)",
                                               "saving web: Complete"]
    with copy_progress(Console(file=io.StringIO()), "saving web", quiet=True) as report:
        assert report is None
