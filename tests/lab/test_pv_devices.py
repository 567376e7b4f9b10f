"""PV disks and network on real Xen: blkback and netback in the lab's dom0, xentool's hotplug work,
and the guest's blkfront and netfront using them.

One PV guest gets an ext4 image read-write (xvdb), another read-only (xvdc) and a vif on a bridge
the test makes in dom0.  Its init (then=devices, xentool.lab.guest_images) mounts both disks,
writes to one, tries to write to the other, brings eth0 up and pings dom0, saying on its console
what worked; dom0 pings it back.  After destroy the data is in the image file, and no loop device,
vif interface, bridge port or backend device is left.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from xentool.lab import Lab
from xentool.lab.guest_images import GuestImages, install_guest_images

from .test_guests import domains_json, host_state, wait_for_console, xentool
from .test_hvm import HVM_BOOT_TIMEOUT, leftovers

pytestmark = pytest.mark.lab

BRIDGE = "xentest0"
DOM0_IP = "10.201.0.1"
GUEST_IP = "10.201.0.2"


@pytest.fixture(scope="module")
def guests(lab: Lab) -> GuestImages:
    return install_guest_images(lab.artifacts.kernel, lab.artifacts.busybox, lab.share_dir / "guests",
                                boot_iso=False, modules_dir=lab.artifacts.modules_dir)


@pytest.fixture(scope="module")
def bridge(lab: Lab):
    """A bridge in dom0 with an address, as an administrator's xenbr0 would be."""
    script = (f"ip link add {BRIDGE} type bridge && ip addr add {DOM0_IP}/24 dev {BRIDGE} && "
              f"ip link set {BRIDGE} up")
    made = lab.exec(["sh", "-c", script], capture=True)
    assert made.returncode == 0, made.err
    yield BRIDGE
    lab.exec(["ip", "link", "del", BRIDGE], capture=True)


def ext4_image(path: Path, files: dict[str, str], size_mib: int = 16) -> Path:
    """An ext4 image holding ``files``, made on the host with e2fsprogs (mkfs -d)."""
    content = path.with_suffix(".d")
    content.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (content / name).write_text(text)
    path.unlink(missing_ok=True)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-d", str(content), str(path), f"{size_mib}M"],
                   check=True, capture_output=True)
    return path


def read_from_image(image: Path, name: str) -> str:
    result = subprocess.run(["debugfs", "-R", f"cat /{name}", str(image)], capture_output=True, text=True, check=True)
    return result.stdout


def devices_left(lab: Lab) -> dict[str, str]:
    """What PV devices leave in dom0 if not cleaned up: loop devices, vif interfaces, bridge ports,
    kernel backend devices."""
    script = ("cat /sys/block/loop*/loop/backing_file 2>/dev/null; echo ---; "
              "ls /sys/class/net | grep '^vif' || true; echo ---; "
              f"ls /sys/class/net/{BRIDGE}/brif 2>/dev/null; echo ---; "
              "ls /sys/bus/xen-backend/devices 2>/dev/null")
    loops, vifs, ports, backends = lab.exec(["sh", "-c", script], capture=True).out.split("---\n")
    return {"loops": loops, "vifs": vifs, "ports": ports, "backends": backends}


def test_pv_guest_uses_its_disks_and_network_and_hot_plug(lab, guests, bridge):
    images = lab.share_dir / "pv-devices"
    images.mkdir(exist_ok=True)
    tag = uuid.uuid4().hex[:6]
    rw = ext4_image(images / f"rw-{tag}.img", {"empty.txt": ""})
    ro = ext4_image(images / f"ro-{tag}.img", {"hello.txt": f"read-only data {tag}"})
    config = images / f"pvdev-{tag}.yaml"
    config.write_text(
        "name: pvdev\ntype: pv\nmemory: 128\n"
        f"kernel: {guests.kernel}\nramdisk: {guests.initrd}\n"
        f'cmdline: "console=hvc0 xentool.marker=pvdev xentool.then=devices xentool.ip={GUEST_IP}/24 xentool.peer={DOM0_IP}"\n'
        f"disks:\n  - {{target: {rw}, vdev: xvdb}}\n  - {{target: {ro}, vdev: xvdc, access: ro}}\n"
        f"vifs:\n  - {{bridge: {bridge}}}\n"
    )
    before_state, before_devices = host_state(lab), devices_left(lab)

    created = xentool(lab, "create", str(config))
    assert created.returncode == 0, created.err
    try:
        domid = created.out.split("(id ")[1].split(",")[0]
        # While it runs: a loop device per image (the ro one read-only), the vif on the bridge.
        running = devices_left(lab)
        assert str(rw) in running["loops"] and str(ro) in running["loops"]
        assert f"vif{domid}.0" in running["ports"]
        log = wait_for_console(lab, "pvdev", "xentool-guest: devices done")
        assert "xentool-guest: rw-disk: wrote guest.txt" in log
        assert f"xentool-guest: ro-disk: read-only data {tag}" in log
        assert "xentool-guest: ro-disk: write refused" in log
        assert f"xentool-guest: net: ping {DOM0_IP} ok" in log, log[-2000:]
        mac = log.split("xentool-guest: net: eth0 ")[1].split()[1]
        assert mac.startswith("00:16:3e:")
        pinged = lab.exec(["busybox", "ping", "-c", "3", "-W", "5", GUEST_IP], capture=True, timeout=60)
        assert pinged.returncode == 0, pinged.out + pinged.err
        hot_plug_while_running(lab, images, tag, domid)
    finally:
        destroyed = xentool(lab, "destroy", "pvdev")
    assert destroyed.returncode == 0, destroyed.err
    assert devices_left(lab) == before_devices
    assert host_state(lab) == before_state
    assert read_from_image(rw, "guest.txt") == "written by pvdev\n"
    assert read_from_image(ro, "hello.txt") == f"read-only data {tag}"


def hot_plug_while_running(lab: Lab, images: Path, tag: str, domid: str) -> None:
    """Attach returns once the guest's front end connected the device; detach once the guest let go
    and the backend released it."""
    extra = ext4_image(images / f"extra-{tag}.img", {"extra.txt": "x"})
    attached = xentool(lab, "block-attach", "pvdev", f"{extra},raw,xvdd,ro")
    assert attached.returncode == 0, attached.err
    disks = {d["name"]: d for d in json_out(xentool(lab, "block-list", "--json", "pvdev"))}
    assert set(disks) == {"xvdb", "xvdc", "xvdd"}
    assert (disks["xvdd"]["backend_state"], disks["xvdd"]["frontend_state"], disks["xvdd"]["mode"]) == ("connected", "connected", "r")
    assert str(extra) in devices_left(lab)["loops"]
    taken = xentool(lab, "block-attach", "pvdev", f"{extra},raw,xvdd,ro")
    assert taken.returncode != 0 and "already has xvdd" in taken.err, taken.err
    detached = xentool(lab, "block-detach", "pvdev", "xvdd")
    assert detached.returncode == 0, detached.err
    assert [d["name"] for d in json_out(xentool(lab, "block-list", "--json", "pvdev"))] == ["xvdb", "xvdc"]
    assert str(extra) not in devices_left(lab)["loops"]

    added = xentool(lab, "network-attach", "pvdev", f"bridge={BRIDGE}")
    assert added.returncode == 0, added.err
    vifs = json_out(xentool(lab, "network-list", "--json", "pvdev"))
    assert [(v["devid"], v["backend_state"], v["frontend_state"]) for v in vifs] == [(0, "connected", "connected"), (1, "connected", "connected")]
    assert f"vif{domid}.1" in devices_left(lab)["ports"]
    removed = xentool(lab, "network-detach", "pvdev", vifs[1]["mac"])
    assert removed.returncode == 0, removed.err
    assert f"vif{domid}.1" not in devices_left(lab)["vifs"]
    assert len(json_out(xentool(lab, "network-list", "--json", "pvdev"))) == 1


def json_out(result) -> list[dict]:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.err
    return json.loads(result.out)


def test_an_hvm_guest_with_pv_drivers_then_its_device_model_dies(lab, guests, bridge):
    """PVHVM: an HVM guest (QEMU loads its kernel: direct boot) whose Linux has the PV front ends
    finds the same vbds and vif through the Xen platform device; xvde on are PV-only disks (libxl's
    rule: QEMU emulates the first four), and a vif of type vif has no emulated twin.  Then its QEMU
    is killed: xentool destroys the half-alive guest, `info` says why, and nothing is left."""
    images = lab.share_dir / "pv-devices"
    images.mkdir(exist_ok=True)
    tag = uuid.uuid4().hex[:6]
    rw = ext4_image(images / f"hvm-rw-{tag}.img", {"empty.txt": ""})
    ro = ext4_image(images / f"hvm-ro-{tag}.img", {"hello.txt": f"read-only data {tag}"})
    guest_ip = "10.201.0.3"
    config = images / f"pvhvm-{tag}.yaml"
    config.write_text(
        "name: pvhvm\ntype: hvm\nmemory: 256\n"
        f"kernel: {guests.kernel}\nramdisk: {guests.initrd}\n"
        f'cmdline: "console=ttyS0 quiet xentool.marker=pvhvm xentool.then=devices xentool.rw=xvde xentool.ro=xvdf '
        f'xentool.ip={guest_ip}/24 xentool.peer={DOM0_IP}"\n'
        f"disks:\n  - {{target: {rw}, vdev: xvde}}\n  - {{target: {ro}, vdev: xvdf, access: ro}}\n"
        f"vifs:\n  - {{bridge: {bridge}, type: vif}}\n"
    )
    before, before_devices = leftovers(lab), devices_left(lab)
    created = xentool(lab, "create", str(config))
    assert created.returncode == 0, created.err
    try:
        log = wait_for_console(lab, "pvhvm", "xentool-guest: devices done", timeout=HVM_BOOT_TIMEOUT)
        assert "xentool-guest: rw-disk: wrote guest.txt" in log
        assert f"xentool-guest: ro-disk: read-only data {tag}" in log
        assert "xentool-guest: ro-disk: write refused" in log
        assert f"xentool-guest: net: ping {DOM0_IP} ok" in log, log[-2000:]

        domid = domains_json(lab)["pvhvm"]["domid"]
        pid = lab.exec(["xenstore-read", f"/local/domain/{domid}/image/device-model-pid"], capture=True).out.strip()
        assert lab.exec(["kill", "-KILL", pid], capture=True).returncode == 0
        deadline = time.monotonic() + 60
        while "pvhvm" in domains_json(lab) and time.monotonic() < deadline:
            time.sleep(2)
        assert "pvhvm" not in domains_json(lab)
        info = xentool(lab, "info", "pvhvm")
        assert info.returncode == 3 and "device model" in info.err and "destroyed by xentool" in info.err, info.err
    finally:
        xentool(lab, "destroy", "pvhvm")
    assert devices_left(lab) == before_devices
    assert leftovers(lab) == before
    assert read_from_image(rw, "guest.txt") == "written by pvhvm\n"


def test_bad_device_input_is_one_line_and_leaves_nothing(lab, guests, bridge):
    """A missing image and a missing bridge fail before anything exists, naming the device."""
    before_state, before_devices = host_state(lab), devices_left(lab)
    cases = {
        "disks: [{target: /nonexistent/disk.img, vdev: xvdb}]": "device disk xvdb: /nonexistent/disk.img does not exist",
        "vifs: [{bridge: nosuchbr0}]": "device vif 0: bridge nosuchbr0 does not exist in dom0",
    }
    for line, expected in cases.items():
        config = lab.share_dir / f"bad-{uuid.uuid4().hex[:6]}.yaml"
        config.write_text(f"name: baddev\ntype: pv\nmemory: 128\nkernel: {guests.kernel}\n{line}\n")
        result = xentool(lab, "create", str(config))
        assert result.returncode != 0
        assert expected in result.err, result.err
        assert len(result.err.strip().splitlines()) == 1, result.err
    assert devices_left(lab) == before_devices
    assert host_state(lab) == before_state
