"""The simulated guest: console, and its answers to control/shutdown, memory/target and vcpu hotplug."""

from __future__ import annotations

from hypercalls.interface import RunState, ShutdownReason, WatchEvent

from .conftest import start_guest


def test_guest_prints_its_banner_when_it_first_runs(hv, kernel):
    domid = start_guest(hv, kernel, cmdline="root=/dev/xvda1 ro", paused=True)
    assert hv.guest_console_output(domid) == ""
    hv.domain_unpause(domid)
    console = hv.guest_console_output(domid)
    assert "[    0.000000] Linux version 6.1.0 (xentool simulated guest)\n" in console
    assert "] Command line: root=/dev/xvda1 ro\n" in console


def test_guest_powers_off_when_asked_and_acknowledges(hv, kernel):
    domid = start_guest(hv, kernel)
    xs = hv.xenstore()
    xs.watch("@releaseDomain", "release")
    xs.read_watch(1)
    xs.write(f"/local/domain/{domid}/control/shutdown", "poweroff")
    info = hv.domain_getinfo(domid)
    assert info.state == RunState.SHUTDOWN and info.shutdown_reason == ShutdownReason.POWEROFF
    assert xs.read(f"/local/domain/{domid}/control/shutdown") == ""
    assert hv.guest_console_output(domid).endswith("reboot: Power down\n")
    assert xs.read_watch(1) == WatchEvent("@releaseDomain", "release")


def test_guest_reboots_and_suspends(hv, kernel):
    for word, reason, line in (
        ("reboot", ShutdownReason.REBOOT, "reboot: Restarting system"),
        ("suspend", ShutdownReason.SUSPEND, "xen:manage: suspending"),
        ("halt", ShutdownReason.POWEROFF, "reboot: System halted"),
    ):
        domid = start_guest(hv, kernel)
        with hv.xenstore().transaction() as txn:  # a request written in a transaction counts at commit
            hv.xenstore().write(f"/local/domain/{domid}/control/shutdown", word, txn)
        assert hv.domain_getinfo(domid).shutdown_reason == reason
        assert line in hv.guest_console_output(domid)


def test_guest_ignores_unknown_requests(hv, kernel):
    domid = start_guest(hv, kernel)
    hv.xenstore().write(f"/local/domain/{domid}/control/shutdown", "crash")
    assert hv.domain_getinfo(domid).state == RunState.RUNNING


def test_paused_guest_answers_when_unpaused(hv, kernel):
    domid = start_guest(hv, kernel)
    hv.domain_pause(domid)
    hv.xenstore().write(f"/local/domain/{domid}/control/shutdown", "poweroff")
    assert hv.domain_getinfo(domid).state == RunState.PAUSED
    hv.domain_unpause(domid)
    assert hv.domain_getinfo(domid).state == RunState.SHUTDOWN


def test_unresponsive_guest_ignores_everything(hv, kernel):
    domid = start_guest(hv, kernel, memory_mib=256, cmdline="quiet xentool.sim.unresponsive")
    xs = hv.xenstore()
    dom = f"/local/domain/{domid}"
    xs.write(f"{dom}/control/shutdown", "poweroff")
    xs.write(f"{dom}/memory/target", str(128 * 1024))
    xs.write(f"{dom}/cpu/1/availability", "online")
    info = hv.domain_getinfo(domid)
    assert info.state == RunState.RUNNING and info.memory_kib == 256 * 1024 and info.online_vcpus == 1
    assert xs.read(f"{dom}/control/shutdown") == "poweroff"


def test_guest_balloon_follows_memory_target_within_maxmem(hv, kernel):
    domid = start_guest(hv, kernel, memory_mib=256)
    xs = hv.xenstore()
    free = hv.physinfo().free_kib
    xs.write(f"/local/domain/{domid}/memory/target", str(100 * 1024))
    assert hv.domain_getinfo(domid).memory_kib == 100 * 1024
    assert hv.physinfo().free_kib == free + 156 * 1024
    xs.write(f"/local/domain/{domid}/memory/target", str(4096 * 1024))
    assert hv.domain_getinfo(domid).memory_kib == 256 * 1024  # maxmem caps it


def test_guest_follows_vcpu_availability(hv, kernel):
    domid = start_guest(hv, kernel, max_vcpus=4)
    xs = hv.xenstore()
    assert hv.domain_getinfo(domid).online_vcpus == 1
    with xs.transaction() as txn:
        for vcpu in range(4):
            xs.write(f"/local/domain/{domid}/cpu/{vcpu}/availability", "online" if vcpu < 3 else "offline", txn)
    assert hv.domain_getinfo(domid).online_vcpus == 3


def test_guest_shutting_itself_down_fires_release(hv, kernel):
    domid = start_guest(hv, kernel)
    xs = hv.xenstore()
    xs.watch("@releaseDomain", "r")
    xs.read_watch(1)
    hv.guest_shutdown(domid, ShutdownReason.CRASH)
    assert hv.domain_getinfo(domid).crashed
    assert "Kernel panic" in hv.guest_console_output(domid)
    assert xs.read_watch(1) == WatchEvent("@releaseDomain", "r")


def test_unbuilt_domain_crashes_when_unpaused(hv):
    from .conftest import create_spec

    domid = hv.domain_create(create_spec())
    hv.domain_unpause(domid)
    assert hv.domain_getinfo(domid).state == RunState.CRASHED


def test_hvm_balloon_counts_the_video_ram_in(hv):
    from hypercalls.interface import GuestType

    from .conftest import build_spec, create_spec

    domid = hv.domain_create(create_spec(guest_type=GuestType.HVM))
    hv.domain_setmaxmem(domid, 520 * 1024)
    hv.domain_build(domid, build_spec(None, memory_mib=512, guest_type=GuestType.HVM))
    xs = hv.xenstore()
    xs.write(f"/local/domain/{domid}/memory/target", str(504 * 1024))
    xs.write(f"/local/domain/{domid}/memory/videoram", str(8 * 1024))
    hv.domain_unpause(domid)
    assert hv.domain_getinfo(domid).memory_kib == 512 * 1024
    assert "Hypervisor detected: Xen HVM" in hv.guest_console_output(domid)
    xs.write(f"/local/domain/{domid}/memory/target", str(248 * 1024))
    assert hv.domain_getinfo(domid).memory_kib == 256 * 1024
