"""Two Xen hosts: the session's lab and its second host, on the private link between them (sshd on
each, the lab's own keys, the same shared directory).  The second host boots once for this module
and is powered off after it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest

from kit.ansible import ANSIBLE_PLAYBOOK, ansible_env, playbook_file, report_of, results_of
from kit.lab import BOOT_TIMEOUT, HVM_BOOT_TIMEOUT, PYTHON, XENTOOL, device_models, leftovers, wait_for_count_above, write_config, xentool
from xentool.lab import Lab

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab2(lab: Lab):
    """Host 2 of the session's lab (host 1), booted beside it."""
    second = Lab(lab.name, host=2)
    started = time.monotonic()
    status = second.up(timeout=float(os.environ.get("XENTOOL_TEST_LAB_TIMEOUT", "600")))
    print(f"lab {lab.name} host 2: booted in {time.monotonic() - started:.1f} s (beside a running host 1)")
    assert status.link_name == "xen2" and status.link_address == "192.168.127.2"
    assert second.exec([XENTOOL, "daemon", "start"], capture=True, timeout=600).returncode == 0
    try:
        yield second
    finally:
        second.down()


def test_each_host_reaches_the_other_by_name_over_ssh_with_the_labs_keys(lab, lab2):
    for here, there, name in ((lab, lab2, "xen2"), (lab2, lab, "xen1")):
        ran = here.exec(["ssh", name, "hostname; cat /proc/xen/capabilities; ip -4 -o addr show"], capture=True, timeout=120)
        assert ran.returncode == 0, ran.err
        out = ran.out.splitlines()
        assert out[0] == name and out[1] == "control_d"
        assert there.link_address in ran.out
    # The link leads nowhere else: no default route in either dom0, and sshd listens on the link only.
    for host in (lab, lab2):
        assert "default" not in host.exec(["ip", "route"], capture=True).out
        listening = host.exec(["sh", "-c", "ss -ltn 2>/dev/null || netstat -ltn"], capture=True).out
        assert f"{host.link_address}:22" in listening and "0.0.0.0:22" not in listening
    # Only the lab's client key gets in: a key of its own is refused.
    refused = lab.exec(["sh", "-c", "k=$(mktemp -u); ssh-keygen -q -t ed25519 -N '' -f $k && "
                        "ssh -F /dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o IdentityFile=$k "
                        "-o UserKnownHostsFile=/run/xentool-lab/ssh/known_hosts root@xen2 true; r=$?; rm -f $k $k.pub; exit $r"],
                       capture=True, timeout=120)
    assert refused.returncode == 255 and "Permission denied" in refused.err


def test_both_hosts_see_the_shared_directory_at_the_same_path(lab, lab2):
    probe = lab.share_dir / f"probe-{os.getpid()}"
    probe.write_text("from this machine\n")
    try:
        assert lab2.exec(["cat", str(probe)], capture=True).out == "from this machine\n"
        assert lab2.exec(["sh", "-c", f"echo from xen2 >> {probe}"], capture=True).returncode == 0
        assert lab.exec(["cat", str(probe)], capture=True).out == "from this machine\nfrom xen2\n"
    finally:
        probe.unlink(missing_ok=True)


def test_the_cli_runs_a_command_on_either_host(lab, lab2):
    env = {**os.environ, "XENTOOL_LAB": lab.name}
    for host, name in (("1", "xen1"), ("2", "xen2")):
        ran = subprocess.run([sys.executable, "-m", "xentool", "--lab", "--host", host, "host", "info", "--json"],
                             env=env, capture_output=True, text=True, timeout=300)
        assert ran.returncode == 0, ran.stderr
        assert json.loads(ran.stdout)["hostname"] == name
    status = subprocess.run([sys.executable, "-m", "xentool", "lab", "status", "--name", lab.name],
                            env=env, capture_output=True, text=True, timeout=300)
    assert "host 2: running" in status.stdout and "xen2 (192.168.127.2) on the link" in status.stdout
    assert xentool(lab2, "list").returncode == 0


def test_a_pv_guest_migrates_and_back_and_goes_on_counting(lab, lab2, guests):
    """To xen2 (non-live, as this Xen cannot copy a PV guest live) and back: the guest's counter goes
    on where it was (the same kernel, memory and disk, not a new boot), its uuid and disk come
    along, each host's xl sees it."""
    disk = lab.share_dir / f"mover-{os.getpid()}.img"
    disk.write_bytes(b"disk of the moving guest\n" + bytes(16 << 20))
    config = write_config(lab, guests, "mover", then="count", disks=f"[{{target: {disk}, vdev: xvdb}}]")
    try:
        assert xentool(lab, "create", str(config)).returncode == 0
        uuid_ = json.loads(xentool(lab, "info", "--json", "mover").out)["uuid"]
        before = wait_for_count_above(lab, uuid_, 2, timeout=BOOT_TIMEOUT)
        ran = xentool(lab, "migrate", "mover", "xen2", "--remote-xentool", XENTOOL)
        assert ran.returncode == 0, ran.err
        # Debian's Xen 4.17 has no shadow paging, which a PV guest's live copy needs (xl migrate
        # fails on it: "Failed to enable logdirty"); xentool says so and copies it suspended.
        assert "migrated mover to xen2 (non-live)" in ran.out, ran.out
        assert "note: not live: this Xen cannot track a PV guest's dirty pages" in ran.err
        moved = json.loads(xentool(lab2, "info", "--json", "mover").out)
        assert moved["uuid"] == uuid_ and moved["state"] in ("running", "blocked")
        assert xentool(lab, "info", "mover").returncode == 3  # gone from the source
        assert "mover" in lab2.exec(["xl", "list"], capture=True).out
        after = wait_for_count_above(lab2, uuid_, -1)
        # It went on counting where it was: not booted again (a boot prints its marker first).
        assert after > before, (before, after)
        # Its console log came along and goes on: one boot in it, and the counts from before the move.
        moved_log = lab2.exec(["cat", f"/var/log/xentool/console/{uuid_}.log"], capture=True).out
        assert moved_log.count("xentool-guest: marker=mover") == 1 and re.search(rf"count={before}\b", moved_log)
        disks = json.loads(xentool(lab2, "block-list", "--json", "mover").out)  # its front end reconnected there
        assert [(d["name"], d["frontend_state"]) for d in disks] == [("xvdb", "connected")], disks
        back = xentool(lab2, "migrate", "--non-live", "mover", "xen1", "--remote-xentool", XENTOOL)
        assert back.returncode == 0, back.err
        assert "migrated mover to xen1 (non-live)" in back.out
        wait_for_count_above(lab, uuid_, after)
        assert xentool(lab2, "info", "mover").returncode == 3
    finally:
        for host in (lab, lab2):
            xentool(host, "destroy", "mover")
        disk.unlink(missing_ok=True)
        config.unlink(missing_ok=True)


@pytest.mark.parametrize("type_", ["pvh", "hvm"])
def test_pvh_and_hvm_guests_migrate_live_and_go_on_counting(lab, lab2, guests, type_):
    """HAP tracks an HVM or PVH guest's dirty pages: these go live.  The HVM guest (QEMU loads its
    kernel; it has the PV drivers) brings its QEMU's device state along."""
    name = f"mover-{type_}"
    console = "ttyS0" if type_ == "hvm" else "hvc0"
    config = lab.share_dir / f"{name}-{os.getpid()}.yaml"
    config.write_text(f"name: {name}\ntype: {type_}\nmemory: 256\nkernel: {guests.kernel}\nramdisk: {guests.initrd}\n"
                      f'cmdline: "console={console} quiet xentool.marker={name} xentool.then=count"\n'
                      + ("vnc: false\n" if type_ == "hvm" else ""))
    try:
        assert xentool(lab, "create", str(config)).returncode == 0
        uuid_ = json.loads(xentool(lab, "info", "--json", name).out)["uuid"]
        before = wait_for_count_above(lab, uuid_, 2, timeout=HVM_BOOT_TIMEOUT)
        ran = xentool(lab, "migrate", name, "xen2", "--remote-xentool", XENTOOL)
        assert ran.returncode == 0, ran.err
        assert f"migrated {name} to xen2 (live)" in ran.out and "note:" not in ran.err, (ran.out, ran.err)
        after = wait_for_count_above(lab2, uuid_, -1)
        assert after > before
        assert lab2.exec(["cat", f"/var/log/xentool/console/{uuid_}.log"], capture=True).out.count(f"xentool-guest: marker={name}") == 1
        if type_ == "hvm":
            assert f"-name {name} " in device_models(lab2) and f"-name {name} " not in device_models(lab)
    finally:
        for host in (lab, lab2):
            xentool(host, "destroy", name)
        config.unlink(missing_ok=True)


def test_a_receiver_killed_midway_leaves_the_guest_running_here_and_nothing_there(lab, lab2, guests):
    """The target's `xentool migrate-receive` is killed while the guest's memory is on its way:
    the sender says at which phase it stopped, the guest was resumed and counts on at the source,
    and the target is as it was (no domain, xenstore node, record, loop device or process)."""
    config = write_config(lab, guests, "unmoved", then="count")
    before = leftovers(lab2)
    try:
        assert xentool(lab, "create", str(config)).returncode == 0
        uuid_ = json.loads(xentool(lab, "info", "--json", "unmoved").out)["uuid"]
        counted = wait_for_count_above(lab, uuid_, 2, timeout=BOOT_TIMEOUT)
        result: list = []
        sender = threading.Thread(target=lambda: result.append(
            xentool(lab, "migrate", "unmoved", "xen2", "--remote-xentool", XENTOOL)))
        sender.start()
        deadline = time.monotonic() + 120
        while "unmoved" not in lab2.exec(["xl", "list"], capture=True).out:  # being restored there
            assert sender.is_alive() and time.monotonic() < deadline, result
            time.sleep(0.5)
        assert lab2.exec(["pkill", "-f", "migrate-receive"], capture=True).returncode == 0
        sender.join(300)
        ran = result[0]
        assert ran.returncode == 5, (ran.out, ran.err)
        line = ran.err.strip().splitlines()[-1]
        assert "migration of unmoved failed while" in line and "it was resumed and runs on here" in line, line
        assert wait_for_count_above(lab, uuid_, counted) > counted
        time.sleep(3)  # the target's console service notices the domain is gone within its poll
        assert leftovers(lab2) == before
        assert not lab2.exec(["sh", "-c", f"ls /var/lib/xentool/domains/{uuid_}.json"], capture=True).returncode == 0
    finally:
        xentool(lab, "destroy", "unmoved")
        xentool(lab2, "destroy", "unmoved")
        config.unlink(missing_ok=True)


def test_a_playbook_from_xen1_provisions_a_guest_on_each_host_and_then_has_nothing_to_do(lab, lab2, guests):
    """ansible-playbook in xen1's dom0, over ssh to both dom0s (xen1 too), with the collection's
    xentool_guest: a guest on each host; the same run again changes nothing; --check with a changed
    config says what would change and changes nothing; a bad config fails its host's task with
    the file's line and column.  The module runs xentool's API in the repository's Python."""
    work = lab.share_dir / f"ansible-{os.getpid()}"
    work.mkdir()
    configs = {host: write_config(lab, guests, f"fleet-{host}", maxmem=256) for host in ("xen1", "xen2")}
    inventory = work / "hosts.ini"
    inventory.write_text("".join(f"{host} guest_config={config}\n" for host, config in configs.items())
                         + f"[all:vars]\nansible_user=root\nansible_python_interpreter={PYTHON}\n")
    book = playbook_file(work, "all", [{"name": "the host's guest", "xentool.xen.xentool_guest": {
        "config_file": "{{ guest_config }}", "state": "running"}}, {"xentool.xen.xentool_info": {}}])

    def run(*options: str) -> tuple[int, dict]:
        ran = lab.exec([ANSIBLE_PLAYBOOK, "-i", str(inventory), str(book), *options], env=ansible_env("/tmp"),
                       capture=True, timeout=900)
        return ran.returncode, report_of(ran.out, ran.err, ran.returncode)

    try:
        rc, report = run()
        assert rc == 0, report
        assert {host: stats["changed"] for host, stats in report["stats"].items()} == {"xen1": 1, "xen2": 1}
        made = results_of(report, "the host's guest")
        assert {host: result["changes"] for host, result in made.items()} == {
            "xen1": ["define (new)", "start"], "xen2": ["define (new)", "start"]}
        for host, there in (("xen1", lab), ("xen2", lab2)):
            assert f"fleet-{host}" in there.exec(["xl", "list"], capture=True).out
            facts = results_of(report, "xentool.xen.xentool_info")[host]
            assert facts["host"]["hostname"] == host and [g["name"] for g in facts["guests"]] == [f"fleet-{host}"]
        rc, report = run()
        assert rc == 0 and {stats["changed"] for stats in report["stats"].values()} == {0}, report
        # A changed config, in check mode: what would change, and no change.
        configs["xen2"].write_text(configs["xen2"].read_text().replace("memory: 128", "memory: 192"))
        rc, report = run("--check", "--diff")
        assert rc == 0, report
        would = results_of(report, "the host's guest")
        assert would["xen1"]["changes"] == [] and would["xen2"]["changes"] == [
            "redefine (memory)", "change live: memory 128 -> 192 MiB", "record the guest's new config"]
        assert would["xen2"]["diff"]["after"]["definition"]["memory"] == 192
        assert json.loads(xentool(lab2, "info", "--json", "fleet-xen2").out)["target_memory_mib"] == 128
        # A bad config fails that host's task, with where and what.
        configs["xen2"].write_text(configs["xen2"].read_text().replace("memory: 192", "memory: lots"))
        rc, report = run()
        failed = results_of(report, "the host's guest")["xen2"]
        assert rc == 2 and failed["failed"], report
        assert re.match(rf"{re.escape(str(configs['xen2']))}:\d+:\d+: memory: ", failed["msg"]), failed["msg"]
        assert report["stats"]["xen1"]["failures"] == 0
    finally:
        for host, there in (("xen1", lab), ("xen2", lab2)):
            xentool(there, "destroy", f"fleet-{host}")
            xentool(there, "undefine", f"fleet-{host}")
        for config in configs.values():
            config.unlink(missing_ok=True)
        subprocess.run(["rm", "-rf", str(work)], check=False)
