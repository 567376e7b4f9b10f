"""The simulated host and its hypercalls: figures, memory accounting, the builder, event channels."""

from __future__ import annotations

import errno
import gzip
import time
from pathlib import Path

import pytest

from hypercalls.errors import XenError, XenstoreError
from hypercalls.interface import GuestType, RunState, ShutdownReason, XenVersion, XsPerm, XsPermission
from hypercalls.sim import SimHypervisor

from .conftest import build_spec, create_spec, start_guest

GIB_PAGES = 262144


def test_fresh_host_figures(hv):
    info = hv.physinfo()
    assert hv.kind == "sim"
    assert info.xen_version == XenVersion(4, 17, ".7") and str(info.xen_version) == "4.17.7"
    assert (info.nr_cpus, info.threads_per_core, info.cores_per_socket, info.cpu_khz) == (4, 1, 4, 2_000_000)
    assert info.total_pages == 8 * GIB_PAGES
    assert info.free_pages == 7 * GIB_PAGES  # dom0 holds 1 GiB
    assert info.virt_caps == ("pv", "hvm", "hap")
    assert info.capabilities == "xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64"
    [dom0] = hv.domain_list()
    assert (dom0.domid, dom0.uuid, dom0.guest_type) == (0, "00000000-0000-0000-0000-000000000000", GuestType.PV)
    assert dom0.memory_kib == 1024 * 1024 and dom0.online_vcpus == 4 and dom0.state == RunState.RUNNING


def test_fresh_xenstore_content(hv):
    xs = hv.xenstore()
    dump = {}

    def walk(path):
        dump[path] = (xs.read(path), xs.get_perms(path))
        for child in xs.directory(path):
            walk(f"{path.rstrip('/')}/{child}")

    walk("/")
    dom0 = (XsPermission(0, XsPerm.NONE),)
    assert dump == {
        "/": ("", dom0), "/local": ("", dom0), "/local/domain": ("", dom0), "/local/domain/0": ("", dom0),
        "/local/domain/0/name": ("Domain-0", dom0), "/local/domain/0/domid": ("0", dom0),
        "/vm": ("", dom0), "/libxl": ("", dom0), "/tool": ("", dom0), "/tool/xenstored": ("", dom0),
    }


def test_state_directory_is_private(host_path, hv):
    assert host_path.stat().st_mode & 0o777 == 0o700


def test_create_build_destroy_accounts_for_memory(hv, kernel):
    free = hv.physinfo().free_pages
    domid = hv.domain_create(create_spec(max_vcpus=4))
    info = hv.domain_getinfo(domid)
    assert domid == 1 and info.paused and info.tot_pages == 0 and info.max_vcpu_id == 3
    assert info.state == RunState.PAUSED
    hv.domain_setmaxmem(domid, 256 * 1024)
    assert hv.domain_getinfo(domid).max_memory_kib == 256 * 1024
    result = hv.domain_build(domid, build_spec(kernel, memory_mib=256, vcpus=2, store_evtchn=3, console_evtchn=4))
    assert (result.store_evtchn, result.console_evtchn) == (3, 4) and result.store_mfn != result.console_mfn
    info = hv.domain_getinfo(domid)
    assert info.memory_kib == 256 * 1024 and info.online_vcpus == 2
    assert hv.physinfo().free_pages == free - 256 * 256
    hv.domain_destroy(domid)
    assert hv.physinfo().free_pages == free
    with pytest.raises(XenError) as e:
        hv.domain_getinfo(domid)
    assert e.value.errno == errno.ESRCH
    assert hv.domain_create(create_spec()) == 2  # domids are never reused


def test_build_that_does_not_fit_is_enomem_and_allocates_nothing(hv, kernel):
    free_kib = hv.physinfo().free_kib
    domid = hv.domain_create(create_spec())
    with pytest.raises(XenError) as e:
        hv.domain_build(domid, build_spec(kernel, memory_mib=free_kib // 1024 + 64))
    assert e.value.errno == errno.ENOMEM and e.value.op == "domain_build" and e.value.domid == domid
    assert hv.physinfo().free_kib == free_kib
    assert hv.domain_getinfo(domid).tot_pages == 0


def test_build_above_maxmem_is_enomem(hv, kernel):
    domid = hv.domain_create(create_spec())
    hv.domain_setmaxmem(domid, 64 * 1024)
    with pytest.raises(XenError) as e:
        hv.domain_build(domid, build_spec(kernel, memory_mib=128))
    assert e.value.errno == errno.ENOMEM


def test_a_file_that_is_no_kernel_is_einval(hv, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello\n" * 200)
    domid = hv.domain_create(create_spec())
    with pytest.raises(XenError) as e:
        hv.domain_build(domid, build_spec(text))
    assert e.value.errno == errno.EINVAL
    assert f"{text} is not a kernel (no ELF or bzImage header)" in str(e.value)


@pytest.mark.parametrize(
    "image",
    [
        b"\x7fELF" + bytes(100),
        bytes(0x202) + b"HdrS" + bytes(100),
        gzip.compress(b"kernel"),
        b"\xfd7zXZ\x00" + bytes(10),
        b"BZh91AY" + bytes(10),
        b"\x02\x21\x4c\x18" + bytes(10),
        b"\x28\xb5\x2f\xfd" + bytes(10),
    ],
    ids=["elf", "bzimage", "gzip", "xz", "bzip2", "lz4", "zstd"],
)
def test_every_kernel_format_is_accepted(hv, tmp_path, image):
    path = tmp_path / "kernel"
    path.write_bytes(image)
    domid = hv.domain_create(create_spec())
    hv.domain_build(domid, build_spec(path))
    assert hv.domain_getinfo(domid).tot_pages > 0


def test_missing_kernel_and_ramdisk_are_enoent(hv, kernel, tmp_path):
    domid = hv.domain_create(create_spec())
    with pytest.raises(XenError) as e:
        hv.domain_build(domid, build_spec(tmp_path / "nope"))
    assert e.value.errno == errno.ENOENT and str(tmp_path / "nope") in str(e.value)
    with pytest.raises(XenError) as e:
        hv.domain_build(domid, build_spec(kernel, ramdisk=str(tmp_path / "initrd.img")))
    assert e.value.errno == errno.ENOENT and "initrd.img" in str(e.value)
    assert hv.domain_getinfo(domid).tot_pages == 0


def test_hvm_needs_no_kernel_but_its_firmware_must_exist(hv, tmp_path):
    domid = hv.domain_create(create_spec(guest_type=GuestType.HVM))
    with pytest.raises(XenError) as e:
        hv.domain_build(domid, build_spec(None, guest_type=GuestType.HVM, firmware=str(tmp_path / "hvmloader")))
    assert e.value.errno == errno.ENOENT
    hv.domain_build(domid, build_spec(None, guest_type=GuestType.HVM))
    assert hv.domain_getinfo(domid).memory_kib == 128 * 1024


def test_missing_domains_are_esrch(hv):
    for call in (hv.domain_pause, hv.domain_unpause, hv.domain_destroy, lambda d: hv.evtchn_alloc_unbound(d, 0)):
        with pytest.raises(XenError) as e:
            call(42)
        assert e.value.errno == errno.ESRCH and e.value.domid == 42
    assert hv.guest_console_output(42) is None


def test_dom0_cannot_be_destroyed(hv):
    with pytest.raises(XenError) as e:
        hv.domain_destroy(0)
    assert e.value.errno == errno.EPERM


def test_vcpu_affinity_is_checked(hv):
    domid = hv.domain_create(create_spec(max_vcpus=2))
    hv.vcpu_setaffinity(domid, 1, frozenset({0, 3}))
    for vcpu, cpus in ((2, {0}), (0, {4}), (0, set())):
        with pytest.raises(XenError) as e:
            hv.vcpu_setaffinity(domid, vcpu, frozenset(cpus))
        assert e.value.errno == errno.EINVAL


def test_pause_unpause_shutdown_and_cpu_time(hv, kernel):
    domid = start_guest(hv, kernel)
    first = hv.domain_getinfo(domid)
    assert first.state == RunState.RUNNING
    time.sleep(0.02)
    assert hv.domain_getinfo(domid).cpu_time_ns > first.cpu_time_ns
    hv.domain_pause(domid)
    paused = hv.domain_getinfo(domid)
    assert paused.state == RunState.PAUSED
    time.sleep(0.02)
    assert hv.domain_getinfo(domid).cpu_time_ns == paused.cpu_time_ns
    hv.domain_unpause(domid)
    hv.domain_shutdown(domid, ShutdownReason.CRASH)
    info = hv.domain_getinfo(domid)
    assert info.shutdown and info.crashed and not info.running and info.state == RunState.CRASHED
    with pytest.raises(XenError) as e:
        hv.domain_unpause(domid)
    assert e.value.errno == errno.EINVAL


def test_balloon_target_and_online_vcpus(hv, kernel):
    domid = start_guest(hv, kernel, memory_mib=256)
    hv.domain_set_target(domid, 128 * 1024)
    assert hv.domain_getinfo(domid).memory_kib == 128 * 1024
    hv.domain_set_target(domid, 1024 * 1024)  # bounded by maxmem
    assert hv.domain_getinfo(domid).memory_kib == 256 * 1024
    hv.domain_set_online_vcpus(domid, 2)
    assert hv.domain_getinfo(domid).online_vcpus == 2
    for bad in (0, 3):
        with pytest.raises(XenError) as e:
            hv.domain_set_online_vcpus(domid, bad)
        assert e.value.errno == errno.EINVAL


def test_event_channels(hv):
    domid = hv.domain_create(create_spec())
    assert [hv.evtchn_alloc_unbound(domid, 0) for _ in range(3)] == [1, 2, 3]
    hv.evtchn_close(domid, 2)
    assert hv.evtchn_list(domid) == [1, 3]
    assert hv.evtchn_alloc_unbound(domid, 0) == 2  # the lowest free port
    with pytest.raises(XenError) as e:
        hv.evtchn_close(domid, 9)
    assert e.value.errno == errno.EINVAL
    assert hv.evtchn_list(0) == []
    hv.domain_destroy(domid)
    with pytest.raises(XenError) as e:
        hv.evtchn_list(domid)
    assert e.value.errno == errno.ESRCH


def test_dmesg_has_the_banner_and_domain_lines_and_clears(hv):
    domid = hv.domain_create(create_spec())
    hv.domain_destroy(domid)
    text = hv.dmesg()
    assert text.startswith("(XEN) Xen version 4.17.7 (simulated)")
    assert f"d{domid}: created" in text and f"d{domid}: destroyed" in text
    assert all(line.startswith("(XEN) ") for line in text.splitlines())
    assert hv.dmesg(clear=True) == text
    assert hv.dmesg() == ""


def test_injected_failures_strike_then_pass(hv):
    hv.inject_failure("domain_create", errno.EIO, times=2)
    for _ in range(2):
        with pytest.raises(XenError) as e:
            hv.domain_create(create_spec())
        assert (e.value.op, e.value.errno) == ("domain_create", errno.EIO)
    assert hv.domain_create(create_spec()) == 1  # and the failed calls took no domid
    hv.inject_failure("domain_setmaxmem", errno.EACCES)
    with pytest.raises(XenError) as e:
        hv.domain_setmaxmem(1, 1024)
    assert e.value.domid == 1 and hv.domain_getinfo(1).max_pages == 0
    hv.domain_setmaxmem(1, 1024)


def test_injected_xenstore_failures(hv):
    xs = hv.xenstore()
    hv.inject_failure("xenstore.write", errno.ENOSPC)
    with pytest.raises(XenstoreError) as e:
        xs.write("/tool/x", "1")
    assert (e.value.op, e.value.errno, e.value.path) == ("write", errno.ENOSPC, "/tool/x")
    assert xs.read_or("/tool/x") is None
    xs.write("/tool/x", "1")
    hv.inject_failure("xenstore.transaction_end", errno.EIO)
    txn = xs.transaction_start()
    xs.write("/tool/y", "2", txn)
    with pytest.raises(XenstoreError) as e:
        xs.transaction_end(txn)
    assert e.value.errno == errno.EIO and xs.read_or("/tool/y") is None
    xs.transaction_end(txn, abort=True)  # aborting the failed transaction is harmless


def test_failures_are_shared_between_handles(host_path, hv):
    with SimHypervisor(host_path) as other:
        other.inject_failure("domain_unpause", errno.EIO)
    domid = hv.domain_create(create_spec())
    with pytest.raises(XenError):
        hv.domain_unpause(domid)


def test_state_is_shared_between_two_handles_on_one_path(host_path, hv, kernel):
    domid = start_guest(hv, kernel)
    with SimHypervisor(host_path) as other:
        assert [d.domid for d in other.domain_list()] == [0, domid]
        assert other.xenstore().read(f"/local/domain/{domid}/name") == f"guest{domid}"
        other.domain_destroy(domid)
    assert [d.domid for d in hv.domain_list()] == [0]


def test_closed_handle_refuses_work(host_path):
    hv = SimHypervisor(host_path)
    xs = hv.xenstore()
    hv.close()
    with pytest.raises(XenError):
        hv.domain_list()
    with pytest.raises(XenstoreError):
        xs.read("/")
    assert SimHypervisor(Path(host_path)).domain_list()[0].domid == 0
