"""`xentool apply` on the simulator: a folder of guests made real, nothing done the second time,
live changes, what needs a restart, --prune, every file's errors at once, a failure midway undone,
and two applies at once."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from kit.daemon import daemon_env, sim_guest

CHANGES_PENDING = 10


def xentool(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xentool", *args], env={**env, "XENTOOL_NO_DAEMON": "1"},
                          capture_output=True, text=True, timeout=60)


def guest(folder: Path, name: str, **settings: object) -> Path:
    return sim_guest(folder, name, **settings)


def domains(env: dict[str, str]) -> dict[str, dict]:
    return {d["name"]: d for d in json.loads(xentool(env, "list", "--all", "--json").stdout)}


def test_a_folder_is_made_real_and_a_second_apply_changes_nothing(tmp_path):
    env, folder = daemon_env(tmp_path), tmp_path / "guests"
    folder.mkdir()
    guest(folder, "web", maxmem=512)
    guest(folder, "db")
    planned = xentool(env, "apply", "--dry-run", str(folder))
    assert planned.returncode == CHANGES_PENDING, planned.stderr
    assert planned.stdout.splitlines() == ["db: define (new)", "db: start", "web: define (new)", "web: start"]
    assert set(domains(env)) == {"Domain-0"}  # a dry run changes nothing
    applied = xentool(env, "apply", str(folder))
    assert applied.returncode == 0, applied.stderr
    assert applied.stdout.splitlines()[-2:] == ["db: as the files say", "web: as the files say"]
    web = domains(env)["web"]
    assert web["state"] != "shut off" and domains(env)["db"]["state"] != "shut off"
    again = xentool(env, "apply", str(folder))
    assert (again.returncode, again.stdout) == (0, "no changes\n"), again.stdout + again.stderr
    assert xentool(env, "config", "show", "web").stdout == (folder / "web.yaml").read_text()  # the file, as written
    assert xentool(env, "apply", "--dry-run", str(folder)).returncode == 0
    # A live change, then one that needs a restart.
    guest(folder, "web", maxmem=512, memory=256, on_crash="preserve")
    live = xentool(env, "apply", str(folder))
    assert "web: change live: memory 128 -> 256 MiB" in live.stdout and "needs restart" not in live.stdout, live.stdout
    assert json.loads(xentool(env, "info", "--json", "web").stdout)["target_memory_mib"] == 256
    assert xentool(env, "apply", str(folder)).stdout == "no changes\n"
    guest(folder, "web", maxmem=512, memory=256, on_crash="preserve", cmdline='"console=hvc0 quiet"')
    later = xentool(env, "apply", str(folder))
    assert "web: needs restart (cmdline changed): apply --restart does it" in later.stdout, later.stdout
    assert domains(env)["web"]["domid"] == web["domid"]  # not restarted
    restarted = xentool(env, "apply", "--restart", str(folder))
    assert "web: restart (cmdline changed)" in restarted.stdout, restarted.stdout + restarted.stderr
    now = domains(env)["web"]
    assert now["domid"] != web["domid"] and now["uuid"] == web["uuid"]
    assert xentool(env, "apply", str(folder)).stdout == "no changes\n"
    # --prune: db is no longer in the files.
    (folder / "db.yaml").unlink()
    assert "db: remove" not in xentool(env, "apply", "--dry-run", str(folder)).stdout
    pruned = xentool(env, "apply", "--prune", str(folder))
    assert "db: remove: undefine (--prune)" in pruned.stdout and "db: remove: destroy (--prune)" in pruned.stdout
    assert "db" not in domains(env)


def test_every_files_errors_are_told_at_once_and_nothing_changes(tmp_path):
    env, folder = daemon_env(tmp_path), tmp_path / "guests"
    folder.mkdir()
    guest(folder, "good")
    guest(folder, "bad1", memory="lots")
    guest(folder, "bad2", vcpus=0)
    (folder / "twin.yaml").write_text((folder / "good.yaml").read_text())
    result = xentool(env, "apply", str(folder))
    assert result.returncode == 2
    assert f"{folder / 'bad1.yaml'}:" in result.stderr and f"{folder / 'bad2.yaml'}:" in result.stderr
    assert f"{folder / 'twin.yaml'}: name: 'good' is also the name in" in result.stderr
    assert set(domains(env)) == {"Domain-0"}


def test_a_failure_midway_leaves_the_guest_as_it_was(tmp_path):
    env, folder = daemon_env(tmp_path), tmp_path / "guests"
    folder.mkdir()
    guest(folder, "web", maxmem=512)
    assert xentool(env, "apply", str(folder)).returncode == 0
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    # memory changes live, then the disk cannot be attached (the simulator has no device backends).
    guest(folder, "web", maxmem=512, memory=256, disks=f"[{{target: {disk}, vdev: xvdb}}]")
    failed = xentool(env, "apply", str(folder))
    assert failed.returncode == 5
    assert "web: change live: attach disk xvdb" in failed.stdout
    assert "failed: " in failed.stderr and failed.stderr.rstrip().endswith("left as it was"), failed.stderr
    assert json.loads(xentool(env, "info", "--json", "web").stdout)["target_memory_mib"] == 128
    shown = xentool(env, "config", "show", "--resolved", "web").stdout
    assert "memory: 128" in shown and "xvdb" not in shown  # the definition as it was too


def test_two_applies_at_once_one_waits_for_the_other(tmp_path):
    env, folder = daemon_env(tmp_path), tmp_path / "guests"
    folder.mkdir()
    guest(folder, "web")
    holder = subprocess.Popen([sys.executable, "-c", "import time\nfrom xentool import desired\n"
                               "with desired.one_at_a_time(lambda: None):\n    print('held', flush=True)\n    time.sleep(3)\n"],
                              env=env, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline() == "held\n"  # type: ignore[union-attr]
    started = time.monotonic()
    second = xentool(env, "apply", str(folder))
    assert second.returncode == 0 and "waiting for another apply to finish" in second.stderr
    assert time.monotonic() - started > 1.5
    assert holder.wait(10) == 0


def test_placement_weight_and_pool_change_live(tmp_path):
    env, folder = daemon_env(tmp_path), tmp_path / "guests"
    folder.mkdir()
    guest(folder, "web", vcpus=2)
    assert xentool(env, "apply", str(folder)).returncode == 0
    guest(folder, "web", vcpus=2, cpus='"1-2"', sched="{weight: 512}")
    live = xentool(env, "apply", str(folder))
    assert "web: change live: cpus all -> 1,2" in live.stdout and "weight 256 -> 512, cap 0 -> 0" in live.stdout, live.stdout
    assert "needs restart" not in live.stdout
    rows = json.loads(xentool(env, "vcpu-list", "--json", "web").stdout)
    assert [r["hard_affinity"] for r in rows] == ["1-2", "1-2"]
    assert json.loads(xentool(env, "info", "--json", "web").stdout)["weight"] == 512
    assert xentool(env, "apply", str(folder)).stdout == "no changes\n"


def test_a_guest_recorded_by_an_older_xentool_is_not_changed_by_a_key_added_since(tmp_path):
    """Records and definitions keep the config as the xentool of the day dumped it; a key added
    later (bootloader_args, at its default) is no change, so it needs no restart."""
    env, folder = daemon_env(tmp_path), tmp_path / "guests"
    guest(folder, "web")
    assert xentool(env, "apply", str(folder)).returncode == 0
    dumps = [*(tmp_path / "sim/xentool").glob("*.json"), *(tmp_path / "sim/xentool/defined").glob("*.json")]
    assert len(dumps) == 2
    for dump in dumps:
        data = json.loads(dump.read_text())
        kept = data["config"] if "config" in data else data["resolved"]
        assert kept.pop("bootloader_args") == []
        dump.write_text(json.dumps(data))
    again = xentool(env, "apply", "--dry-run", str(folder))
    assert (again.returncode, again.stdout) == (0, "no changes\n"), again.stdout + again.stderr
