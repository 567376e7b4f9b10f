"""`make install` on this machine, into directories of the test's own: the environment, the two
programs and the daemon's systemd unit end up where the unit says, and they run from anywhere."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_make_install_puts_the_programs_and_the_daemons_unit_in_place(tmp_path: Path) -> None:
    dirs = {"INSTALL_DIR": tmp_path / "opt", "BIN_DIR": tmp_path / "bin", "SYSTEMD_DIR": tmp_path / "systemd"}
    made = subprocess.run(["make", "-C", str(ROOT), "install", "SYSTEMD_START=no", *(f"{k}={v}" for k, v in dirs.items())],
                          capture_output=True, text=True, timeout=900)
    assert made.returncode == 0, made.stdout + made.stderr
    unit = (dirs["SYSTEMD_DIR"] / "xentoold.service").read_text()
    exec_start = next(line for line in unit.splitlines() if line.startswith("ExecStart="))
    assert exec_start == f"ExecStart={dirs['BIN_DIR']}/xentoold --wait"
    assert "KillMode=process" in unit and "Type=notify" in unit and "@BINDIR@" not in unit
    assert (dirs["BIN_DIR"] / "xentool").resolve().read_bytes()[:4] == b"\x7fELF"  # the native launcher
    for program, words in (("xentoold", "--wait"), ("xentool", "daemon")):
        shown = subprocess.run([str(dirs["BIN_DIR"] / program), "--help"], cwd="/", capture_output=True, text=True,
                               timeout=120, env={"PATH": "/usr/bin:/bin", "XENTOOL_NO_DAEMON": "1"})
        assert shown.returncode == 0 and words in shown.stdout, shown.stdout + shown.stderr
