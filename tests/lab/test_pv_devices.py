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

from kit.lab import HVM_BOOT_TIMEOUT, domains_json, leftovers, wait_for_console, xentool
from xentool.lab import Lab
from xentool.lab.guest_images import GuestImages, install_guest_images

pytestmark = pytest.mark.lab

BRIDGE = "xentest0"
DOM0_IP = "10.201.0.1"
GUEST_IP = "10.201.0.2"
ROUTED_IP = "10.203.0.2"  # the pvdev guest's eth1, behind a routed vif (dom0's address: DOM0_IP)


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


def image_dir(lab: Lab) -> Path:
    images = lab.share_dir / "pv-devices"
    images.mkdir(exist_ok=True)
    return images


def qcow2_image(path: Path, files: dict[str, str]) -> Path:
    """An ext4 file system holding ``files`` in a qcow2 image (qemu-img from qemu-utils)."""
    raw = ext4_image(path.with_suffix(".raw"), files)
    path.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(path)], check=True, capture_output=True)
    raw.unlink()
    return path


def read_from_qcow2(image: Path, name: str) -> str:
    raw = image.with_suffix(".check.raw")
    subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "raw", str(image), str(raw)], check=True, capture_output=True)
    try:
        return read_from_image(raw, name)
    finally:
        raw.unlink()


def device_guest_config(images: Path, guests: GuestImages, name: str, tag: str, type_: str, cmdline: str,
                        disks: list[str], vifs: list[str]) -> tuple[Path, Path, Path]:
    """A guest running then=devices with a fresh rw and ro ext4 image pair in ``images`` (and
    ``disks``, YAML flow mappings, after them); returns the config and the two images."""
    rw = ext4_image(images / f"{name}-rw-{tag}.img", {"empty.txt": ""})
    ro = ext4_image(images / f"{name}-ro-{tag}.img", {"hello.txt": f"read-only data {tag}"})
    config = images / f"{name}-{tag}.yaml"
    first, second = ("xvdb", "xvdc") if type_ == "pv" else ("xvde", "xvdf")
    listed = [f"{{target: {rw}, vdev: {first}}}", f"{{target: {ro}, vdev: {second}, access: ro}}", *disks]
    config.write_text(
        f"name: {name}\ntype: {type_}\nmemory: {128 if type_ == 'pv' else 256}\n"
        f"kernel: {guests.kernel}\nramdisk: {guests.initrd}\n"
        f'cmdline: "{cmdline} xentool.marker={name} xentool.then=devices"\n'
        "disks:\n" + "".join(f"  - {d}\n" for d in listed) + "vifs:\n" + "".join(f"  - {v}\n" for v in vifs)
    )
    return config, rw, ro


def assert_devices_used(log: str, tag: str, rw_disks: list[str]) -> None:
    """What the guest's then=devices said: each rw disk written, the ro one read and not written,
    dom0 pinged."""
    for disk in rw_disks:
        assert f"xentool-guest: rw-disk: wrote guest.txt on {disk}" in log, log[-2000:]
    assert f"xentool-guest: ro-disk: read-only data {tag}" in log
    assert "xentool-guest: ro-disk: write refused" in log
    assert f"xentool-guest: net: ping {DOM0_IP} ok" in log, log[-2000:]


def test_pv_guest_uses_its_disks_and_network_and_hot_plug(lab, guests, bridge):
    """Raw images through blkback (loop devices), a qcow2 one through QEMU's qdisk, a vif on a
    bridge; hot plug of each kind; then nothing left, and the data in the images."""
    tag = uuid.uuid4().hex[:6]
    images = image_dir(lab)
    qcow2 = qcow2_image(images / f"qdisk-{tag}.qcow2", {"empty.txt": ""})
    config, rw, ro = device_guest_config(
        images, guests, "pvdev", tag, "pv", f"console=hvc0 xentool.rw=xvdb,xvde xentool.ip={GUEST_IP}/24 xentool.peer={DOM0_IP} "
        f"xentool.ip1={ROUTED_IP}/32 xentool.peer1={DOM0_IP}", [f"{{target: {qcow2}, vdev: xvde, format: qcow2}}"],
        [f"{{bridge: {bridge}}}", f"{{mode: route, ip: {ROUTED_IP}, gatewaydev: {bridge}}}"])
    before_state, before_devices = leftovers(lab), devices_left(lab)

    created = xentool(lab, "create", str(config))
    assert created.returncode == 0, created.err
    try:
        domid = created.out.split("(id ")[1].split(",")[0]
        # While it runs: a loop device per raw image (the ro one read-only), the vif on the bridge,
        # and a QEMU serving the qcow2 image.
        running = devices_left(lab)
        assert str(rw) in running["loops"] and str(ro) in running["loops"]
        assert f"vif{domid}.0" in running["ports"] and f"vif{domid}.1" not in running["ports"]
        route = lab.exec(["ip", "route", "show", ROUTED_IP], capture=True).out
        assert f"dev vif{domid}.1 " in route and f"src {DOM0_IP}" in route, route
        qemu = [line for line in lab.exec(["pgrep", "-af", "xen-qemu"], capture=True).out.splitlines()
                if f" -xen-domid {domid} " in line]
        assert len(qemu) == 1 and "-machine xenpv" in qemu[0] and "-xen-attach" in qemu[0], qemu
        log = wait_for_console(lab, "pvdev", "xentool-guest: devices done")
        assert_devices_used(log, tag, ["xvdb", "xvde"])
        mac = log.split("xentool-guest: net: eth0 ")[1].split()[1]
        assert mac.startswith("00:16:3e:")
        assert f"xentool-guest: net: eth1 {ROUTED_IP}/32" in log and log.count(f"net: ping {DOM0_IP} ok") == 2, log[-2000:]
        for address in (GUEST_IP, ROUTED_IP):
            pinged = lab.exec(["busybox", "ping", "-c", "3", "-W", "5", address], capture=True, timeout=60)
            assert pinged.returncode == 0, pinged.out + pinged.err
        # What netback and blkback counted: the pings both ways; xvdb (a loop device) mounted, written, synced.
        used = json.loads(xentool(lab, "stats", "pvdev", "--json", "-i", "0.5").out)
        assert used["net_rx_bytes"] > 0 and used["net_tx_bytes"] > 0, used
        assert used["block_read_bytes"] > 0 and used["block_written_bytes"] > 0, used
        assert used["vcpus"] == 1 and used["memory_mib"] > 0, used
        hot_plug_while_running(lab, images, tag, domid)
    finally:
        destroyed = xentool(lab, "destroy", "pvdev")
    assert destroyed.returncode == 0, destroyed.err
    assert devices_left(lab) == before_devices
    assert leftovers(lab) == before_state
    assert lab.exec(["ip", "route", "show", ROUTED_IP], capture=True).out == ""
    assert read_from_image(rw, "guest.txt") == "written by pvdev\n"
    assert read_from_image(ro, "hello.txt") == f"read-only data {tag}"
    assert read_from_qcow2(qcow2, "guest.txt") == "written by pvdev\n"


def hot_plug_while_running(lab: Lab, images: Path, tag: str, domid: str) -> None:
    """Attach returns once the guest's front end connected the device; detach once the guest let go
    and the backend released it."""
    extra = ext4_image(images / f"extra-{tag}.img", {"extra.txt": "x"})
    attached = xentool(lab, "block-attach", "pvdev", f"{extra},raw,xvdd,ro")
    assert attached.returncode == 0, attached.err
    disks = {d["name"]: d for d in json_out(xentool(lab, "block-list", "--json", "pvdev"))}
    assert set(disks) == {"xvdb", "xvdc", "xvde", "xvdd"}
    assert (disks["xvdd"]["backend_state"], disks["xvdd"]["frontend_state"], disks["xvdd"]["mode"]) == ("connected", "connected", "r")
    assert str(extra) in devices_left(lab)["loops"]
    taken = xentool(lab, "block-attach", "pvdev", f"{extra},raw,xvdd,ro")
    assert taken.returncode != 0 and "already has xvdd" in taken.err, taken.err
    detached = xentool(lab, "block-detach", "pvdev", "xvdd")
    assert detached.returncode == 0, detached.err
    assert [d["name"] for d in json_out(xentool(lab, "block-list", "--json", "pvdev"))] == ["xvdb", "xvdc", "xvde"]
    assert str(extra) not in devices_left(lab)["loops"]

    # A qcow2 disk: the guest's QEMU takes it up from its backend directory.
    extra_qcow2 = qcow2_image(images / f"extra-{tag}.qcow2", {"extra.txt": "x"})
    refused = xentool(lab, "block-attach", "pvdev", f"{extra_qcow2},qcow2,xvdf,ro")
    assert refused.returncode != 0 and "cannot open a qcow2 image read-only" in refused.err, refused.err
    attached = xentool(lab, "block-attach", "pvdev", f"{extra_qcow2},qcow2,xvdf,rw")
    assert attached.returncode == 0, attached.err
    disks = {d["name"]: d for d in json_out(xentool(lab, "block-list", "--json", "pvdev"))}
    assert (disks["xvdf"]["backend_state"], disks["xvdf"]["frontend_state"]) == ("connected", "connected")
    assert disks["xvdf"]["backend"].startswith("/local/domain/0/backend/qdisk/")
    detached = xentool(lab, "block-detach", "pvdev", "xvdf")
    assert detached.returncode == 0, detached.err

    added = xentool(lab, "network-attach", "pvdev", f"bridge={BRIDGE}")
    assert added.returncode == 0, added.err
    vifs = json_out(xentool(lab, "network-list", "--json", "pvdev"))
    assert [(v["devid"], v["mode"], v["backend_state"], v["frontend_state"]) for v in vifs] == [
        (0, "bridge", "connected", "connected"), (1, "route", "connected", "connected"), (2, "bridge", "connected", "connected")]
    assert f"vif{domid}.2" in devices_left(lab)["ports"]
    removed = xentool(lab, "network-detach", "pvdev", vifs[2]["mac"])
    assert removed.returncode == 0, removed.err
    assert f"vif{domid}.2" not in devices_left(lab)["vifs"]
    assert len(json_out(xentool(lab, "network-list", "--json", "pvdev"))) == 2


def json_out(result) -> list[dict]:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, result.err
    return json.loads(result.out)


def test_an_hvm_guest_with_pv_drivers_then_its_device_model_dies(lab, guests, bridge):
    """PVHVM: an HVM guest (QEMU loads its kernel: direct boot) whose Linux has the PV front ends
    finds the same vbds and vif through the Xen platform device; xvde on are PV-only disks (libxl's
    rule: QEMU emulates the first four), and a vif of type vif has no emulated twin.  Then its QEMU
    is killed: xentool destroys the half-alive guest, `info` says why, and nothing is left."""
    tag = uuid.uuid4().hex[:6]
    guest_ip = "10.201.0.3"
    config, rw, _ = device_guest_config(
        image_dir(lab), guests, "pvhvm", tag, "hvm", f"console=ttyS0 quiet xentool.rw=xvde xentool.ro=xvdf xentool.ip={guest_ip}/24 "
        f"xentool.peer={DOM0_IP}", [], [f"{{bridge: {bridge}, type: vif}}"])
    before, before_devices = leftovers(lab), devices_left(lab)
    created = xentool(lab, "create", str(config))
    assert created.returncode == 0, created.err
    try:
        log = wait_for_console(lab, "pvhvm", "xentool-guest: devices done", timeout=HVM_BOOT_TIMEOUT)
        assert_devices_used(log, tag, ["xvde"])

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
    """A missing image and a missing bridge fail before anything exists, naming the device; an
    image that is not the qcow2 it claims to be fails once QEMU tries it, and QEMU goes too."""
    before_state, before_devices = leftovers(lab), devices_left(lab)
    not_qcow2 = image_dir(lab) / f"not-qcow2-{uuid.uuid4().hex[:6]}.qcow2"
    not_qcow2.write_bytes(bytes(1 << 20))
    cases = {
        "disks: [{target: /nonexistent/disk.img, vdev: xvdb}]": "device disk xvdb: /nonexistent/disk.img does not exist",
        "vifs: [{bridge: nosuchbr0}]": "device vif 0: bridge nosuchbr0 does not exist in dom0",
        "vifs: [{mode: route, ip: 10.203.0.9}]": "device vif 0: dom0 has no default route to take a routed vif's address from",
        f"disks: [{{target: {not_qcow2}, vdev: xvdb, format: qcow2}}]": "device disk xvdb: QEMU did not take up the qcow2 image",
    }
    for line, expected in cases.items():
        config = lab.share_dir / f"bad-{uuid.uuid4().hex[:6]}.yaml"
        config.write_text(f"name: baddev\ntype: pv\nmemory: 128\nkernel: {guests.kernel}\n{line}\n")
        result = xentool(lab, "create", str(config))
        assert result.returncode != 0
        assert expected in result.err, result.err
        assert len(result.err.strip().splitlines()) == 1, result.err
    assert devices_left(lab) == before_devices
    assert leftovers(lab) == before_state
