"""Creating domains on the simulated hypervisor: the layout, rollback at every step, names."""

from __future__ import annotations

import errno
import multiprocessing

import pytest

import xentool
from hypercalls.errors import XenstoreError
from hypercalls.interface import XsPerm
from xentool.create import plan_creation
from xentool.create.executor import execute
from xentool.errors import CreationError, InsufficientMemory, NameInUse, RanOutOfMemory, UnsupportedByHost

from .conftest import host_snapshot


def test_created_domain_is_listed_with_its_name_memory_and_vcpus(xt, make_config):
    domain = xt.create(make_config(memory=256, vcpus=2, maxvcpus=4))
    listed = {d.name: d for d in xt.list_domains()}
    assert listed["web"].domid == domain.domid > 0
    assert listed["web"].memory_mib == 256
    assert listed["web"].vcpus == 2
    assert listed["web"].state in ("running", "blocked")
    assert xt.info("web").max_vcpus == 4


def test_create_paused_leaves_the_domain_paused(xt, make_config):
    assert xt.create(make_config(), paused=True).state == "paused"


def test_xenstore_layout_is_the_one_libxl_writes(xt, make_config):
    domain = xt.create(make_config())
    xs = xt.hv.xenstore()
    dom = f"/local/domain/{domain.domid}"
    assert xs.read(f"{dom}/name") == "web"
    assert xs.read(f"{dom}/vm") == f"/vm/{domain.uuid}"
    assert xs.read(f"/vm/{domain.uuid}/uuid") == domain.uuid
    assert xs.read(f"{dom}/memory/target") == str(128 * 1024)
    assert xs.read(f"{dom}/domid") == str(domain.domid)
    assert xs.read(f"{dom}/cpu/0/availability") == "online"
    assert xs.read(f"/libxl/{domain.domid}/type") == "pv"
    assert int(xs.read(f"{dom}/store/port")) > 0
    assert xs.read(f"{dom}/console/type") == "xentool"
    # roperm: owned by dom0, readable by the guest; rwperm: owned by the guest.
    assert [(p.domid, p.perm) for p in xs.get_perms(dom)] == [(0, XsPerm.NONE), (domain.domid, XsPerm.READ)]
    assert [(p.domid, p.perm) for p in xs.get_perms(f"{dom}/control/shutdown")] == [(domain.domid, XsPerm.NONE)]


def test_guest_reads_and_writes_only_its_own_nodes(xt, make_config):
    first = xt.create(make_config(name="first"))
    second = xt.create(make_config(name="second"))
    guest = xt.hv.xenstore_as(first.domid)
    dom = f"/local/domain/{first.domid}"
    assert guest.read(f"{dom}/name") == "first"
    guest.write(f"{dom}/data/hello", "1")
    guest.write(f"{dom}/console/backend-id", "0")  # frontend entries are the guest's own
    # ... but not the ring and port the console backend trusts, nor anything of dom0's or others'.
    for forbidden_write in (
        f"{dom}/name",
        f"{dom}/console/ring-ref",
        f"/local/domain/0/backend/console/{first.domid}/0/state",
        f"/local/domain/{second.domid}/data/x",
        f"/vm/{first.uuid}/name",
    ):
        with pytest.raises(XenstoreError) as e:
            guest.write(forbidden_write, "x")
        assert e.value.errno == errno.EACCES
    for forbidden_read in (f"/local/domain/{second.domid}/name", f"/libxl/{first.domid}/type"):
        with pytest.raises(XenstoreError) as e:
            guest.read(forbidden_read)
        assert e.value.errno == errno.EACCES


# Every hypervisor and xenstore call creation makes, in order: a failure at any of them must leave
# the host exactly as it was.
CREATION_CALLS = [
    "domain_create",
    "domain_setmaxmem",
    "vcpu_setaffinity",
    "evtchn_alloc_unbound",
    "domain_build",
    "xenstore.transaction_end",
    "xenstore.introduce_domain",
    "domain_unpause",
]


@pytest.mark.parametrize("failing_call", CREATION_CALLS)
def test_failure_at_any_step_leaves_the_host_unchanged(xt, make_config, failing_call):
    before = host_snapshot(xt)
    xt.hv.inject_failure(failing_call, errno.EIO)
    with pytest.raises(CreationError) as e:
        xt.create(make_config(cpus=[0, 1]))
    assert e.value.__cause__ is not None
    assert e.value.leftovers == []
    assert host_snapshot(xt) == before


def test_failure_at_the_last_step_is_reported_with_the_step_and_errno(xt, make_config):
    xt.hv.inject_failure("domain_unpause", errno.EIO)
    with pytest.raises(CreationError) as e:
        xt.create(make_config())
    assert e.value.step == "unpause"
    assert "EIO" in str(e.value)


def test_missing_disk_image_fails_at_devices_and_leaves_nothing(xt, make_config, tmp_path):
    before = host_snapshot(xt)
    missing = tmp_path / "nope.img"
    with pytest.raises(CreationError) as e:
        xt.create(make_config(disks=[{"target": str(missing), "vdev": "xvda"}]))
    assert e.value.step == "devices"
    assert "xvda" in str(e.value) and "does not exist" in str(e.value)
    assert host_snapshot(xt) == before


def test_memory_that_does_not_fit_is_refused_before_anything_is_created(xt, make_config):
    before = host_snapshot(xt)
    free_mib = xt.host_info().free_memory_mib
    with pytest.raises(InsufficientMemory) as e:
        xt.create(make_config(memory=free_mib + 64))
    assert f"{free_mib} MiB free" in str(e.value)
    assert host_snapshot(xt) == before


def test_paging_mode_is_reported_and_shadow_refused_where_xen_has_none(xt, make_config):
    """The simulated host, like the lab's Debian Xen, offers HAP and no shadow paging."""
    assert xt.info(xt.create(make_config(name="pvh", type="pvh")).domid).paging == "hap"
    assert xt.info(xt.create(make_config(name="pv")).domid).paging is None
    before = host_snapshot(xt)
    with pytest.raises(UnsupportedByHost) as e:
        xt.create(make_config(name="shadow", type="pvh", hap=False))
    assert str(e.value) == ("domain shadow: hap: false asks for shadow paging, which this Xen was built without "
                            "(it offers: pv hvm hap); remove hap: false")
    assert host_snapshot(xt) == before


def test_builder_running_out_of_memory_is_rolled_back(xt, make_config):
    """The preflight can be raced; then the builder's ENOMEM is said in MiB, and leaves nothing behind."""
    before = host_snapshot(xt)
    free_mib = xt.host_info().free_memory_mib
    config = make_config(memory=free_mib + 64)
    with pytest.raises(CreationError) as e:
        execute(plan_creation(config, "6a3e0e0c-0000-4000-8000-000000000001"), xt.hv)
    assert e.value.step == "build"
    ran_out = e.value.__cause__
    assert isinstance(ran_out, RanOutOfMemory) and ran_out.__cause__.errno == errno.ENOMEM
    assert (ran_out.needed_mib, ran_out.available_mib) == (free_mib + 64 + 2, free_mib)
    assert f"the host ran out of memory while the domain was built: the guest needs {free_mib + 66} MiB" in str(e.value)
    assert host_snapshot(xt) == before


def test_second_domain_with_the_same_name_is_refused(xt, make_config):
    first = xt.create(make_config())
    with pytest.raises(NameInUse) as e:
        xt.create(make_config())
    assert e.value.domid == first.domid
    assert [d.name for d in xt.list_domains()].count("web") == 1


def test_name_is_claimed_inside_the_transaction_even_past_the_preflight(xt, make_config):
    xt.create(make_config())
    before = host_snapshot(xt)
    with pytest.raises(CreationError) as e:
        execute(plan_creation(make_config(), "6a3e0e0c-0000-4000-8000-000000000002"), xt.hv)
    assert isinstance(e.value.__cause__, NameInUse)
    assert host_snapshot(xt) == before


def _create_in_process(url: str, config_data: dict, results) -> None:  # runs in a child process
    from xentool.config import config_from_dict

    try:
        with xentool.connect(url) as toolstack:
            toolstack.create(config_from_dict(config_data))
        results.put("created")
    except (NameInUse, CreationError) as e:
        cause = e if isinstance(e, NameInUse) else e.__cause__
        results.put("name in use" if isinstance(cause, NameInUse) else f"other: {e}")
    except Exception as e:  # noqa: BLE001 - reported to the parent as a failure
        results.put(f"other: {e!r}")


def test_concurrent_creates_of_one_name_one_wins(sim_url, kernel):
    config_data = {"name": "race", "type": "pv", "kernel": str(kernel), "memory": 64}
    with xentool.connect(sim_url) as toolstack:
        toolstack.list_domains()  # make the simulated host exist before the race
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_create_in_process, args=(sim_url, config_data, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    outcomes = sorted(results.get(timeout=5) for _ in procs)
    assert outcomes == ["created", "name in use", "name in use", "name in use"]
    with xentool.connect(sim_url) as toolstack:
        assert [d.name for d in toolstack.list_domains()] == ["Domain-0", "race"]


def test_a_pv_guest_s_qcow2_disk_is_a_qdisk_served_by_its_own_qemu(make_config):
    from xentool.create import plan_creation

    config = make_config(disks=[{"target": "/srv/a.qcow2", "vdev": "xvdb", "format": "qcow2"},
                                {"target": "/srv/b.raw", "vdev": "xvdc"}])
    plan = plan_creation(config, "u").to_json()
    nodes = {n["path"]: n for step in plan["steps"] for op in step["ops"] if op["op"] == "XenstoreTransaction"
             for n in op["nodes"]}
    qdisk = "/local/domain/0/backend/qdisk/{domid}/51728"
    assert nodes[f"{qdisk}/params"]["value"] == "qcow2:/srv/a.qcow2"
    assert nodes[f"{qdisk}/type"]["value"] == "qdisk" and f"{qdisk}/script" not in nodes
    # The guest sees a vbd whichever backend serves it; libxl keeps it under vbd too.
    assert nodes["/local/domain/{domid}/device/vbd/51728/backend"]["value"] == qdisk
    assert nodes["/libxl/{domid}/device/vbd/51728/backend"]["value"] == qdisk
    assert nodes["/local/domain/0/backend/vbd/{domid}/51744/params"]["value"] == "/srv/b.raw"
    steps = {step["name"]: [op["op"] for op in step["ops"]] for step in plan["steps"]}
    assert steps["device model (qdisk backend)"] == ["StartPvBackend"]
    assert [s["name"] for s in plan["steps"]].index("device model (qdisk backend)") > [s["name"] for s in plan["steps"]].index("devices")
    assert "AttachDiskBackend" in steps["devices"] and steps["devices"].count("AttachDiskBackend") == 1  # blkback's only


def test_a_pv_guest_without_qdisk_disks_has_no_qemu(make_config):
    from xentool.create import plan_creation

    config = make_config(disks=[{"target": "/srv/b.raw", "vdev": "xvdb"}])
    assert not any("device model" in step["name"] for step in plan_creation(config, "u").to_json()["steps"])


def test_disks_no_backend_can_serve_are_refused_before_anything_exists(xt, make_config, tmp_path):
    from xentool.errors import DeviceError

    image = tmp_path / "a.qcow2"
    image.write_bytes(b"QFI\xfb" + bytes(508))
    before = [d.name for d in xt.list_domains()]
    with pytest.raises(DeviceError, match=r"disk xvdb: backendtype tap needs blktap"):
        xt.create(make_config(disks=[{"target": str(image), "vdev": "xvdb", "backendtype": "tap"}]))
    with pytest.raises(DeviceError, match=r"disk xvdb: QEMU 7.2's qdisk cannot open a qcow2 image read-only"):
        xt.create(make_config(disks=[{"target": str(image), "vdev": "xvdb", "format": "qcow2", "access": "ro"}]))
    with pytest.raises(DeviceError, match=r"disk xvde: a qcow2 disk past hdd is for PV drivers only"):
        xt.create(make_config(type="hvm", kernel=None, disks=[{"target": str(image), "vdev": "xvde", "format": "qcow2"}]))
    assert [d.name for d in xt.list_domains()] == before


def test_an_hvm_guest_s_qcow2_disk_is_emulated_only(make_config, tmp_path):
    from xentool.create import plan_creation

    config = make_config(type="hvm", kernel=None, disks=[
        {"target": "/srv/a.qcow2", "vdev": "hda", "format": "qcow2"}, {"target": "/srv/b.raw", "vdev": "hdb"}])
    text = plan_creation(config, "u").describe()
    devices = text.split(". devices\n")[1].split(". console")[0]
    assert "backend/vbd/{domid}/832 " in devices and "hotplug vbd hdb" in devices  # the raw one: PV too (PVHVM)
    assert "/768" not in devices and "/srv/a.qcow2" not in devices  # the qcow2 one: QEMU's only


def test_a_kernel_too_large_for_the_guests_memory_is_said_as_the_memory_to_give():
    """libxenguest's words when the unpacked Debian kernel does not fit a 64 MiB PV guest (the lab)."""
    from xentool.create.build import guest_too_small

    detail = "xg_dom_core.c:536: xc_dom_chk_alloc_pages: segment kernel too large (0x3a00 > 0x4000 - 0x1000 pages): Out of memory"
    said = guest_too_small(detail, 64)
    assert said is not None and said.needed_mib == 74 and said.exit_code == 2
    assert str(said) == ("memory: 64 MiB is too little to load this guest (its kernel did not fit: the builder needed "
                         "more than 74 MiB); give it more memory")
    at_76 = guest_too_small("count_pgtables: not enough memory for initial mapping (0x4c25 > 0x4c00): Out of memory", 76)
    assert at_76 is not None and at_76.needed_mib == 77 and "its initial page tables did not fit" in str(at_76)
    assert guest_too_small("xc_dom_boot_mem_init: can't allocate low memory for domain: Out of memory", 64) is None
