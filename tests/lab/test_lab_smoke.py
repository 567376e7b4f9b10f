"""The lab for real: Xen 4.17 under QEMU (TCG), a control domain, and xentool running inside it."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from kit.lab import XENTOOL
from xentool.lab import Lab, LabOptions

pytestmark = pytest.mark.lab


def xl_info(lab: Lab) -> dict[str, str]:
    result = lab.exec(["xl", "info"], capture=True, timeout=120)
    assert result.returncode == 0, result.err
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in result.out.splitlines())}


def qemu_processes_of(name: str) -> list[int]:
    """Live processes whose command line names this lab (QEMU is run with -name xentool-lab-NAME)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if f"xentool-lab-{name},".encode() in cmdline and state not in ("Z", "X"):
            found.append(int(proc.name))
    return found


def test_dom0_is_the_control_domain(lab: Lab) -> None:
    result = lab.exec(["cat", "/proc/xen/capabilities"], capture=True)
    assert result.returncode == 0
    assert result.out.strip() == "control_d"


def test_xl_info_reports_xen_4_17(lab: Lab) -> None:
    info = xl_info(lab)
    assert (info["xen_major"], info["xen_minor"]) == ("4", "17")
    assert "pv" in info["virt_caps"].split()


def test_xentool_host_info_in_dom0_matches_xl_info(lab: Lab) -> None:
    info = xl_info(lab)
    result = lab.exec([XENTOOL, "host", "info", "--json"], capture=True, timeout=300)
    assert result.returncode == 0, result.err
    ours = json.loads(result.out)
    assert ours["total_memory_mib"] == int(info["total_memory"])
    assert ours["xen_version"].startswith(f"{info['xen_major']}.{info['xen_minor']}")


def test_exec_returns_the_exit_status_and_runs_in_the_callers_cwd(lab: Lab, tmp_path: Path) -> None:
    result = lab.exec(["sh", "-c", "pwd; echo oops >&2; exit 7"], cwd=tmp_path, capture=True)
    assert result.returncode == 7
    assert result.out.strip() == str(tmp_path)
    assert result.err.strip() == "oops"
    here = lab.exec(["pwd"], capture=True)
    assert here.out.strip() == os.getcwd()


def test_exec_of_a_missing_program_says_so(lab: Lab) -> None:
    result = lab.exec(["no-such-program-xyz"], capture=True)
    assert result.returncode == 127
    assert "no-such-program-xyz" in result.err


def test_host_files_are_visible_and_the_share_goes_both_ways(lab: Lab, tmp_path: Path) -> None:
    (tmp_path / "from-host").write_text("hello dom0\n")
    seen = lab.exec(["cat", str(tmp_path / "from-host")], capture=True)
    assert seen.out == "hello dom0\n"
    back = lab.share_dir / "from-dom0"
    back.unlink(missing_ok=True)
    assert lab.exec(["sh", "-c", f"echo hello host > {back}"]).returncode == 0
    assert back.read_text() == "hello host\n"


def test_cli_exec_streams_and_exits_with_the_status(lab: Lab, tmp_path: Path) -> None:
    proc = subprocess.run([XENTOOL, "lab", "exec", "--name", lab.name, "--", "sh", "-c", "echo out; exit 3"],
                          cwd=tmp_path, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 3
    assert proc.stdout == "out\n"


def test_a_second_up_reports_the_running_lab(lab: Lab) -> None:
    status = lab.up()
    assert status.already_running and status.running and status.dom0_ready
    proc = subprocess.run([XENTOOL, "lab", "up", "--name", lab.name], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    assert proc.returncode == 0
    assert "already running" in proc.stdout


def test_status_reports_xen_memory_and_uptime(lab: Lab) -> None:
    proc = subprocess.run([XENTOOL, "lab", "status", "--name", lab.name, "--json"], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=120)
    status = json.loads(proc.stdout)
    assert status["running"] and status["dom0_ready"]
    assert status["xen_version"].startswith("4.17")
    assert 0 < status["free_memory_mib"] < status["total_memory_mib"]
    assert status["uptime_s"] > 0


def test_a_second_lab_runs_beside_and_down_leaves_nothing_behind(lab: Lab) -> None:
    other = Lab(f"{lab.name}-b")
    other.down()
    other.up(LabOptions(memory_mib=1536, dom0_memory_mib=512), timeout=600)
    try:
        pid = other.pid()
        assert pid and qemu_processes_of(other.name) == [pid]
        assert other.exec(["cat", "/proc/xen/capabilities"], capture=True).out.strip() == "control_d"
        assert lab.exec(["true"]).returncode == 0
    finally:
        started = time.monotonic()
        assert other.down()
    assert time.monotonic() - started < 60
    assert not Path(f"/proc/{pid}/cmdline").exists() or qemu_processes_of(other.name) == []
    assert qemu_processes_of(other.name) == []
    leftovers = {p.name for p in other.state.iterdir()} & {"qemu.pid", "lock"} | \
        {p.name for p in other.state.glob("agent-*")}
    assert leftovers == set()
    assert lab.is_running()
