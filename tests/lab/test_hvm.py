"""HVM guests on real Xen: hvmloader, SeaBIOS and QEMU as the device model, in the lab's dom0.

The guest is the lab's Debian kernel and busybox initramfs, booted the way an unmodified OS boots:
SeaBIOS reads a CD-ROM image made with isolinux, and the guest's first
userspace line appears on its emulated serial port, which xentool's console logs.  Everything is
slow here (an HVM guest under TCG makes a round trip to QEMU in dom0 for each emulated I/O), so
the guests print little (``quiet``) and the tests share them where they can.
"""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import pytest

from kit.lab import (
    HVM_BOOT_TIMEOUT,
    SAVE_DIR,
    counts,
    device_models,
    domains_json,
    leftovers,
    wait_for_console,
    wait_for_count_above,
    xentool,
)
from xentool.lab import Lab
from xentool.lab.guest_images import (
    GuestImages,
    guests_dir,
    install_boot_media,
    install_guest_images,
)

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def hvm_media(lab: Lab) -> GuestImages:
    # xen_nopv: the guest ignores that it runs on Xen (no PV drivers, no event-channel callback),
    # as an unmodified OS would, so that shutdown must go through the ACPI power button.
    # QEMU reads disk images into guest memory: they go in the lab's image share (guests_dir()).
    guests = install_guest_images(lab.artifacts.kernel, lab.artifacts.busybox, lab.share_dir / "guests",
                                  boot_iso=False, modules_dir=lab.artifacts.modules_dir)
    iso = install_boot_media(guests.kernel, guests.initrd, guests_dir() / "hvm-test.iso",
                             "console=ttyS0 quiet xen_nopv xentool.marker=hvm-cdrom xentool.then=count")
    return GuestImages(guests.kernel, guests.initrd, iso)


def hvm_config(lab: Lab, name: str, **settings: object) -> Path:
    text = f"name: {name}\ntype: hvm\nmemory: 256\n"
    for key, value in settings.items():
        text += f"{key}: {value}\n"
    path = lab.share_dir / f"{name}-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(text)
    return path


def cdrom(path: Path) -> str:
    return f"[{{target: {path}, vdev: hdc, devtype: cdrom}}]"


def test_hvm_guest_boots_from_a_cdrom_through_seabios_and_shuts_down_by_acpi(lab, hvm_media):
    """The whole life of an unmodified-OS-style guest: SeaBIOS boots the ISO, the marker shows on
    the serial console, xl sees the guest and its QEMU; it is saved (Xen suspends it, as it has no
    PV drivers, and QEMU's device state goes into the file) and restored into a new QEMU, counting
    on where it was; `shutdown -w` presses the ACPI power button, and nothing is left behind."""
    before = leftovers(lab)
    created = xentool(lab, "create", str(hvm_config(lab, "hvm-cd", disks=cdrom(hvm_media.iso), hvm="{boot: [cdrom]}")))
    assert created.returncode == 0, created.err
    try:
        log = wait_for_console(lab, "hvm-cd", "xentool-guest: marker=hvm-cdrom", timeout=HVM_BOOT_TIMEOUT)
        assert "ISOLINUX" in log  # the boot loader's banner: SeaBIOS booted the CD
        # What QEMU itself served (query-blockstats): the CD-ROM that SeaBIOS and ISOLINUX read.
        used = json.loads(xentool(lab, "stats", "hvm-cd", "--json", "-i", "0.5").out)
        assert used["block_read_bytes"] > 1 << 20, used
        listed = domains_json(lab)["hvm-cd"]
        assert listed["type"] == "hvm"
        domid = listed["domid"]
        assert f"-xen-domid {domid} " in device_models(lab)
        xl = lab.exec(["xl", "list", "hvm-cd"], capture=True)
        assert xl.returncode == 0, xl.err
        vnc = lab.exec(["xenstore-read", f"/local/domain/{domid}/console/vnc-listen",
                        f"/local/domain/{domid}/console/vnc-port"], capture=True)
        assert vnc.out.split() == ["127.0.0.1", "5900"], vnc.out + vnc.err
        paused = xentool(lab, "pause", "hvm-cd")
        assert paused.returncode == 0 and domains_json(lab)["hvm-cd"]["state"] == "paused", paused.err
        unpaused = xentool(lab, "unpause", "hvm-cd")  # QMP cont, then the vcpus
        assert unpaused.returncode == 0 and domains_json(lab)["hvm-cd"]["state"] != "paused", unpaused.err
        save_and_restore(lab, "hvm-cd", listed["uuid"])
        stopped = xentool(lab, "shutdown", "-w", "hvm-cd", timeout=420)
        assert stopped.returncode == 0, stopped.err + lab.exec(["xl", "dmesg"], capture=True).out[-3000:]
        # The guest's acpid ran its power-button handler: the button, not a forced stop, ended it.
        console = lab.exec(["cat", f"/var/log/xentool/console/{listed['uuid']}.log"], capture=True).out
        assert "xentool-guest: powering off" in console, console[-1500:]
    finally:
        xentool(lab, "destroy", "hvm-cd")
    assert leftovers(lab) == before


def save_and_restore(lab: Lab, name: str, uuid: str) -> None:
    """Save the counting guest (it and its QEMU go), restore it: the count goes on from where it
    was, with no second boot."""
    wait_for_count_above(lab, uuid, 2)
    path = f"{SAVE_DIR}/{name}.save"
    assert lab.exec(["mkdir", "-p", SAVE_DIR], capture=True).returncode == 0
    try:
        saved = xentool(lab, "save", name, path)
        assert saved.returncode == 0, saved.err
        assert name not in domains_json(lab) and f" -name {name} " not in device_models(lab)
        last = counts(lab, uuid)[-1]
        log = f"/var/log/xentool/console/{uuid}.log"
        boots = lab.exec(["grep", "-c", "xentool-guest: marker=", log], capture=True).out
        restored = xentool(lab, "restore", path)
        assert restored.returncode == 0, restored.err
        assert domains_json(lab)[name]["uuid"] == uuid
        assert wait_for_count_above(lab, uuid, last, timeout=180) <= last + 60
        assert lab.exec(["grep", "-c", "xentool-guest: marker=", log], capture=True).out == boots
    finally:
        lab.exec(["rm", "-rf", SAVE_DIR], capture=True)


# Booting from a hard disk through SeaBIOS: tests/lab/test_debian_guest.py (a Debian system's own
# GRUB, its MBR and core image read from the emulated IDE disk).


# Direct kernel boot, and a device model that dies: tests/lab/test_pv_devices.py (one HVM boot for
# that and the PV drivers).


def test_xl_lists_and_destroys_a_xentool_hvm_guest(lab, hvm_media):
    before = leftovers(lab)
    created = xentool(lab, "create", "-p", str(hvm_config(lab, "hvm-xl", disks=cdrom(hvm_media.iso))))
    assert created.returncode == 0, created.err
    listed = lab.exec(["xl", "list", "hvm-xl"], capture=True)
    assert listed.returncode == 0, listed.err
    destroyed = lab.exec(["xl", "destroy", "hvm-xl"], capture=True, timeout=120)
    assert destroyed.returncode == 0, destroyed.err
    time.sleep(2)  # our console service notices the domain is gone within its poll
    after = leftovers(lab)
    assert after == before


def test_hvm_bad_input_is_one_line_and_leaves_nothing(lab, hvm_media):
    before = leftovers(lab)
    # Something else on VNC display 7's port (0x1713 is 5907 in /proc/net/tcp).
    busy = lab.exec(["sh", "-c", "python3 -c 'import socket,time; s=socket.socket(); s.bind((\"127.0.0.1\", 5907)); "
                     "s.listen(); time.sleep(600)' >/dev/null 2>&1 & echo $!; "
                     "for i in $(seq 100); do grep -q ':1713 ' /proc/net/tcp && break; sleep 0.2; done"],
                    capture=True).out.strip()
    try:
        cases = {
            "missing iso": (hvm_config(lab, "bad-iso", disks=cdrom(Path("/nonexistent/missing.iso"))), "missing.iso"),
            "unknown nic model": (hvm_config(lab, "bad-nic", vifs="[{model: virtio-nope}]"), "virtio-nope"),
            "vnc port in use": (hvm_config(lab, "bad-vnc", vnc="{display: 7}"), "in use"),
        }
        for what, (config, word) in cases.items():
            result = xentool(lab, "create", str(config))
            assert result.returncode != 0, what
            lines = result.err.strip().splitlines()
            assert len(lines) == 1 and word in lines[0] and "Traceback" not in result.err, (what, result.err)
            assert leftovers(lab) == before, what
    finally:
        lab.exec(["kill", busy], capture=True)
