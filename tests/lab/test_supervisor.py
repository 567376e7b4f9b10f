"""The supervisor (a part of the daemon, xentoold) on real Xen: on_* actions kept after the
creating command has exited, a crash loop stopped, a preserved guest left alone, and a daemon that
is killed and started again (by dom0's init, as by systemd) taking over the guests it finds.
"""

from __future__ import annotations

import time

import pytest

from kit.lab import BOOT_TIMEOUT, domains_json, wait_for_console, write_config, xentool
from xentool.lab import Lab

pytestmark = pytest.mark.lab

SUPERVISOR_LOCK = "/run/xentool/xentoold.pid"
SUPERVISOR_LOG = "/var/log/xentool/xentoold.log"
HOLD = "/run/xentool-lab/daemon.hold"  # dom0's init does not start the daemon again while this exists


def wait_for_domains(lab: Lab, what: str, check, timeout: float = BOOT_TIMEOUT) -> dict:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        domains = domains_json(lab)
        if check(domains):
            return domains
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; domains: {sorted(domains)}; supervisor log:\n"
                        + lab.exec(["tail", "-20", SUPERVISOR_LOG], capture=True).out)
        time.sleep(3)


def supervisor_pid(lab: Lab) -> int | None:
    text = lab.exec(["sh", "-c", f"cat {SUPERVISOR_LOCK} 2>/dev/null"], capture=True).out.strip()
    if not text.isdigit():
        return None
    return int(text) if lab.exec(["kill", "-0", text], capture=True).returncode == 0 else None


def test_a_guest_crashing_at_boot_is_restarted_then_stopped(lab, guests):
    # xen_legacy_crash: on panic, Linux tells Xen it crashed at once (SHUTDOWN_crash) instead of
    # looping in the panic handler as newer kernels do when no kdump kernel is loaded.
    config = write_config(lab, guests, "crashy", then="crash", on_crash="restart", restart_tries=2, restart_window=900,
                          cmdline='"console=hvc0 xen_legacy_crash xentool.marker=crashy xentool.then=crash"')
    created = xentool(lab, "create", str(config))
    assert created.returncode == 0, created.err
    assert supervisor_pid(lab) is not None  # dom0's init started it (or create would have)
    uuid = domains_json(lab)["crashy"]["uuid"]
    # (The name is missing from the list for a moment at each restart, too: wait for the verdict.)
    given_up = f"uuid {uuid}) went down (crash): gone"
    deadline = time.monotonic() + 3 * BOOT_TIMEOUT
    while lab.exec(["grep", "-q", given_up, SUPERVISOR_LOG], capture=True).returncode != 0:
        if time.monotonic() > deadline:
            pytest.fail("the supervisor did not give up on crashy; its log:\n"
                        + lab.exec(["tail", "-20", SUPERVISOR_LOG], capture=True).out)
        time.sleep(3)
    assert "crashy" not in domains_json(lab)
    log = lab.exec(["cat", f"/var/log/xentool/console/{uuid}.log"], capture=True).out
    assert log.count("xentool-guest: marker=crashy") == 3  # the first boot and two restarts, one uuid
    info = xentool(lab, "info", "crashy")
    assert info.returncode == 3
    assert "went down (crash) again after 2 restarts" in info.err, info.err
    assert lab.exec(["grep", "-c", f"uuid {uuid}) went down (crash)", SUPERVISOR_LOG], capture=True).out.strip() == "3"


def test_actions_are_kept_without_a_command_and_preserve_keeps_the_domain(lab, guests):
    for name, action in (("goes-away", "destroy"), ("stays-down", "preserve")):
        created = xentool(lab, "create", str(write_config(lab, guests, name, then="poweroff", on_poweroff=action)))
        assert created.returncode == 0, created.err
    try:
        domains = wait_for_domains(lab, "goes-away to be destroyed after powering off",
                                   lambda d: "goes-away" not in d and d.get("stays-down", {}).get("state") == "shutdown")
        assert domains["stays-down"]["shutdown_reason"] == "poweroff"
        time.sleep(6)  # more than a supervisor poll: preserved means it stays
        assert domains_json(lab)["stays-down"]["state"] == "shutdown"
    finally:
        xentool(lab, "destroy", "stays-down")


def test_a_restarted_supervisor_takes_over_the_running_guests(lab, guests):
    created = xentool(lab, "create", str(write_config(lab, guests, "outlives")))
    assert created.returncode == 0, created.err
    try:
        wait_for_console(lab, "outlives", "xentool-guest: marker=outlives")
        domid = domains_json(lab)["outlives"]["domid"]
        old = supervisor_pid(lab)
        assert old is not None
        lab.exec(["touch", HOLD], capture=True)  # as `systemctl kill -s KILL` with a long RestartSec
        assert lab.exec(["kill", "-KILL", str(old)], capture=True).returncode == 0
        time.sleep(1)
        assert supervisor_pid(lab) is None
        # With nobody supervising, the guest powers off and stays shut down (commands run in
        # their own process meanwhile: the daemon's command forker went with it)...
        assert xentool(lab, "shutdown", "outlives").returncode == 0
        wait_for_domains(lab, "outlives to power off", lambda d: d["outlives"]["state"] == "shutdown")
        time.sleep(3)
        assert domains_json(lab)["outlives"]["domid"] == domid
        # ...until init starts the daemon again, which finds it and keeps its on_poweroff (destroy).
        lab.exec(["rm", "-f", HOLD], capture=True)
        wait_for_domains(lab, "the new daemon to destroy outlives", lambda d: "outlives" not in d, timeout=180)
        assert supervisor_pid(lab) not in (None, old)
        started = xentool(lab, "daemon", "start")  # serves again
        assert started.returncode == 0, started.err
    finally:
        lab.exec(["rm", "-f", HOLD], capture=True)
        xentool(lab, "destroy", "outlives")


def test_a_second_daemon_is_refused(lab, guests):
    assert xentool(lab, "daemon", "start").returncode == 0
    second = xentool(lab, "daemon", "run")
    assert second.returncode == 4
    assert "a xentool daemon already runs" in second.err


def test_coredump_destroy_writes_the_guests_memory_as_an_elf_core(lab, guests):
    config = write_config(lab, guests, "dumped", then="crash", on_crash="coredump-destroy",
                          cmdline='"console=hvc0 xen_legacy_crash xentool.marker=dumped xentool.then=crash"')
    created = xentool(lab, "create", str(config))
    assert created.returncode == 0, created.err
    uuid = domains_json(lab)["dumped"]["uuid"]
    deadline = time.monotonic() + BOOT_TIMEOUT
    while lab.exec(["grep", "-q", f"uuid {uuid}) went down (crash): gone", SUPERVISOR_LOG], capture=True).returncode:
        assert time.monotonic() < deadline, lab.exec(["tail", "-5", SUPERVISOR_LOG], capture=True).out
        time.sleep(3)
    core = lab.exec(["sh", "-c", f"ls /var/lib/xentool/dump/dumped-{uuid}-*.core"], capture=True).out.strip()
    try:
        assert core, "no core file"
        head = lab.exec(["sh", "-c", f"head -c 4 {core} | od -An -c; stat -c '%s %a' {core}"], capture=True).out.split("\n")
        assert head[0].split() == ["177", "E", "L", "F"]
        size, mode = head[1].split()
        assert int(size) >= 120 * 1024 * 1024 and mode == "600"  # the guest's memory, root's eyes only
    finally:
        lab.exec(["rm", "-f", core], capture=True)
