"""Lifecycle of domains on the simulated hypervisor: destroy, shutdown protocol, actions, settings."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

import pytest

from xentool.errors import DomainNotFound, NameInUse, UsageError, WaitTimeout

from .conftest import host_snapshot, xenstore_dump


def test_destroy_leaves_no_xenstore_nodes_memory_or_domain(xt, make_config, tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1024))
    before = host_snapshot(xt)
    xt.create(make_config(disks=[{"target": str(disk), "vdev": "xvda"}], vifs=[{"bridge": "xenbr0"}]))
    assert host_snapshot(xt) != before
    xt.destroy("web")
    assert host_snapshot(xt) == before


def test_lookup_by_name_id_and_uuid(xt, make_config):
    domain = xt.create(make_config())
    assert xt.lookup("web").domid == domain.domid
    assert xt.lookup(str(domain.domid)).name == "web"
    assert xt.lookup(domain.uuid).name == "web"
    with pytest.raises(DomainNotFound):
        xt.lookup("nosuch")


def test_dom0_cannot_be_destroyed(xt):
    with pytest.raises(UsageError):
        xt.destroy("Domain-0")


def test_shutdown_and_wait_applies_on_poweroff_destroy(xt, make_config):
    before = host_snapshot(xt)
    xt.create(make_config(on_poweroff="destroy"))
    assert xt.shutdown("web", wait=True, timeout=10) == "gone"
    assert host_snapshot(xt) == before


def test_shutdown_with_preserve_keeps_the_domain_shut_down_with_its_reason(xt, make_config):
    xt.create(make_config(on_poweroff="preserve"))
    assert xt.shutdown("web", wait=True, timeout=10) == "shutdown"
    domain = xt.lookup("web")
    assert domain.state == "shutdown"
    assert domain.shutdown_reason == "poweroff"


def test_reboot_restarts_the_guest_with_the_same_uuid(xt, make_config):
    first = xt.create(make_config())
    assert xt.reboot("web", timeout=10) in ("running", "blocked")
    again = xt.lookup("web")
    assert again.uuid == first.uuid
    assert again.domid != first.domid


def test_shutdown_wait_times_out_with_a_clear_message_when_the_guest_ignores_it(xt, make_config):
    xt.create(make_config(cmdline="xentool.sim.unresponsive"))
    with pytest.raises(WaitTimeout) as e:
        xt.shutdown("web", wait=True, timeout=0.5)
    assert "web" in str(e.value) and "xentool destroy web" in str(e.value)
    assert xt.lookup("web").state in ("running", "blocked")


def test_pause_and_unpause(xt, make_config):
    xt.create(make_config())
    xt.pause("web")
    assert xt.lookup("web").state == "paused"
    xt.unpause("web")
    assert xt.lookup("web").state in ("running", "blocked")


def test_rename_changes_both_names_and_refuses_a_taken_one(xt, make_config):
    domain = xt.create(make_config())
    xt.create(make_config(name="db"))
    xt.rename("web", "web2")
    xs = xt.hv.xenstore()
    assert xs.read(f"/local/domain/{domain.domid}/name") == "web2"
    assert xs.read(f"/vm/{domain.uuid}/name") == "web2"
    with pytest.raises(NameInUse):
        xt.rename("web2", "db")
    assert xt.info("web2").config["name"] == "web2"


def test_mem_set_writes_the_balloon_target_within_maxmem(xt, make_config):
    domain = xt.create(make_config(memory=128, maxmem=256))
    xt.mem_set("web", 200)
    assert xt.hv.xenstore().read(f"/local/domain/{domain.domid}/memory/target") == str(200 * 1024)
    assert xt.info("web").target_memory_mib == 200
    with pytest.raises(UsageError):
        xt.mem_set("web", 512)


def test_vcpu_set_onlines_and_offlines_within_maxvcpus(xt, make_config):
    domain = xt.create(make_config(vcpus=1, maxvcpus=4))
    xt.vcpu_set("web", 3)
    xs = xt.hv.xenstore()
    assert [xs.read(f"/local/domain/{domain.domid}/cpu/{i}/availability") for i in range(4)] == [
        "online", "online", "online", "offline"]
    assert xt.lookup("web").vcpus == 3
    with pytest.raises(UsageError):
        xt.vcpu_set("web", 5)


def test_wait_for_state_sees_a_change_made_by_another_connection(xt, make_config, sim_url):
    import threading

    import xentool

    xt.create(make_config(on_poweroff="preserve"))

    def shut_down_later() -> None:
        with xentool.connect(sim_url) as other:
            other.shutdown("web")

    timer = threading.Timer(0.3, shut_down_later)
    timer.start()
    try:
        assert xt.wait_for_state("web", ["shutdown"], timeout=10) == "shutdown"
    finally:
        timer.join()


def test_xenstore_dump_helper_sees_dom0_name(xt):
    assert xenstore_dump(xt.hv.xenstore(), "/local/domain/0")["/local/domain/0/name"].startswith("Domain-0")


def test_rename_to_a_name_a_config_could_not_hold_is_refused(xt, make_config):
    xt.create(make_config())
    for bad in ("42", "Domain-0", "has space", ""):
        with pytest.raises(UsageError):
            xt.rename("web", bad)
    assert xt.lookup("web").name == "web"


def crash(xt, name: str = "web"):  # type: ignore[no-untyped-def]
    from hypercalls.interface import ShutdownReason

    domain = xt.lookup(name)
    xt.hv.domain_shutdown(domain.domid, ShutdownReason.CRASH)
    return domain


def test_a_guest_that_keeps_crashing_is_restarted_restart_tries_times_then_destroyed(xt, make_config):
    before = host_snapshot(xt)
    first = xt.create(make_config(on_crash="restart", restart_tries=2, restart_window=600))
    domids = {first.domid}
    for _ in range(2):
        assert xt.handle_shutdown(crash(xt).name) in ("running", "blocked")
        again = xt.lookup("web")
        assert again.uuid == first.uuid
        domids.add(again.domid)
    assert len(domids) == 3
    assert xt.handle_shutdown(crash(xt).name) == "gone"
    assert host_snapshot(xt) == before
    assert xt.records.load(first.uuid) is None


def test_restarts_outside_the_window_do_not_count(xt, make_config):
    first = xt.create(make_config(on_crash="restart", restart_tries=1, restart_window=1))
    record = xt.records.load(first.uuid)
    xt.records._write(dataclasses.replace(record, restarts=(record.created - 3600,)))  # an old restart
    assert xt.handle_shutdown(crash(xt).name) in ("running", "blocked")


def test_rename_restart_keeps_the_old_domain_and_starts_a_new_one(xt, make_config):
    first = xt.create(make_config(on_crash="rename-restart"))
    crash(xt)
    xt.handle_shutdown("web")
    kept = xt.lookup(f"web--{first.domid}")
    assert kept.uuid == first.uuid and kept.state == "crashed"
    new = xt.lookup("web")
    assert new.uuid != first.uuid and new.state in ("running", "blocked")


@contextlib.contextmanager
def restart_under_way(sim_url: str, uuid: str) -> Iterator[None]:
    """What the supervisor does for on_reboot=restart, in another thread and with time between the
    old domain's destruction and the new one's creation (a create takes seconds on a slow host):
    the body runs in that gap."""
    import threading
    import time

    import xentool
    from xentool import lifecycle

    old_gone = threading.Event()

    def restart() -> None:
        with xentool.connect(sim_url) as supervisor:
            with supervisor.records.lock(uuid):
                lifecycle.destroy(supervisor.hv, supervisor.lookup(uuid).domid)
                old_gone.set()
                time.sleep(0.5)
                supervisor._create(supervisor.records.load(uuid).guest_config(), uuid, paused=False)

    thread = threading.Thread(target=restart)
    thread.start()
    try:
        assert old_gone.wait(10)
        yield
    finally:
        thread.join()


def test_a_guest_being_restarted_is_found_once_its_new_domain_is_built(xt, make_config, sim_url):
    first = xt.create(make_config())
    with restart_under_way(sim_url, first.uuid):
        again = xt.lookup("web")  # neither domain is there at this moment: it waits for the new one
    assert again.uuid == first.uuid and again.domid != first.domid


def test_destroy_during_a_restart_destroys_the_new_domain(xt, make_config, sim_url):
    before = host_snapshot(xt)
    first = xt.create(make_config())
    with restart_under_way(sim_url, first.uuid):
        xt.destroy("web")
    assert "web" not in [d.name for d in xt.list_domains()]
    assert xt.records.load(first.uuid) is None
    assert host_snapshot(xt) == before


def test_destroy_beside_a_restart_that_hangs_still_destroys(xt, make_config, monkeypatch):
    import fcntl

    import xentool.api

    monkeypatch.setattr(xentool.api, "RESTART_WAIT_SECONDS", 0.3)
    first = xt.create(make_config())
    with open(xt.records.directory / f"{first.uuid}.lock", "w") as hung:  # a restart that never ends
        fcntl.flock(hung, fcntl.LOCK_EX)
        xt.destroy("web")
    assert "web" not in [d.name for d in xt.list_domains()]


def test_a_second_party_finds_the_action_done(xt, make_config):
    """The supervisor and a waiting command may both see the guest go down: only one acts."""
    first = xt.create(make_config(on_poweroff="destroy"))
    xt.shutdown("web")
    stale = xt.lookup(first.uuid)
    assert xt.apply_shutdown_action(stale) == "gone"
    assert xt.apply_shutdown_action(stale) == "gone"  # nothing left to act on, and no error


def test_coredump_on_the_simulator_fails_clearly_and_keeps_the_domain(xt, make_config):
    from xentool.errors import DomainOperationError

    xt.create(make_config(on_crash="coredump-destroy"))
    crash(xt)
    with pytest.raises(DomainOperationError, match="core dump of domain web failed"):
        xt.handle_shutdown("web")
    assert xt.lookup("web").state == "crashed"


def test_the_supervisor_sweep_acts_on_our_guests_once_and_leaves_others(xt, make_config):
    from hypercalls.interface import ShutdownReason
    from xentool.supervisor import sweep

    ours = xt.create(make_config(on_poweroff="destroy"))
    kept = xt.create(make_config(name="kept", on_poweroff="preserve"))
    for domain in (ours, kept):
        xt.hv.domain_shutdown(domain.domid, ShutdownReason.POWEROFF)
    xt.records.remove(xt.create(make_config(name="not-ours")).uuid)  # as if xl had made it
    xt.hv.domain_shutdown(xt.lookup("not-ours").domid, ShutdownReason.POWEROFF)
    lines: list[str] = []
    reported: set = set()
    sweep(xt.hv, xt.records, reported, lines.append)
    sweep(xt.hv, xt.records, reported, lines.append)  # a preserved guest is reported once
    names = {d.name: d.state for d in xt.list_domains()}
    assert "web" not in names and names["kept"] == "shutdown" and names["not-ours"] == "shutdown"
    assert len(lines) == 2
    assert any("domain web" in line and "(poweroff): gone" in line for line in lines)


def test_resume_takes_only_a_suspended_guest(xt, make_config):
    from hypercalls.interface import ShutdownReason
    from xentool.errors import DomainOperationError, UsageError

    domain = xt.create(make_config())
    with pytest.raises(UsageError, match="web is not suspended .*`xentool unpause` goes on with a paused guest"):
        xt.resume("web")
    xt.hv.domain_shutdown(domain.domid, ShutdownReason.SUSPEND)
    # Past the check: the simulator has no resume of its own to call, and says so.
    with pytest.raises(DomainOperationError, match="resume"):
        xt.resume("web")
