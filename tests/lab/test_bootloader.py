"""Guests that boot what their own disk names, on real Xen: PVGRUB2 (Debian's grub-xen-host image as
the kernel, reading the disk in the guest) for a PV and a PVH guest, and pygrub (run in dom0,
restricted) for a PV guest, all from one ext4 disk image whose grub.cfg boots the lab's guest
kernel.  The three boot at once: each costs a kernel's boot under TCG, and PVGRUB2 reads the
kernel from the disk at a few hundred KiB/s there."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from kit.lab import host_state, wait_for_console, xentool
from xentool.lab import Lab
from xentool.lab.guest_images import GuestImages

pytestmark = pytest.mark.lab

# Two entries: pygrub is told to boot the second (--entry=1); PVGRUB2 boots the default (the first).
GRUB_CFG = """set default=0
set timeout=0
menuentry 'First' {{
\tlinux /boot/vmlinuz console=hvc0 xentool.marker=first-entry xentool.then=wait
\tinitrd /boot/initrd.img
}}
menuentry 'Second' {{
\tlinux /boot/vmlinuz console=hvc0 xentool.marker=second-entry xentool.then=wait {extra}
\tinitrd /boot/initrd.img
}}
"""


def disk_with_grub(lab: Lab, guests: GuestImages) -> Path:
    """An unpartitioned ext4 image holding the lab's guest kernel, its initramfs and a grub.cfg, made on
    this machine (mkfs.ext4 -d, no mount) in the share, where dom0 finds it at the same path."""
    root = lab.share_dir / f"grub-root-{os.getpid()}"
    (root / "boot/grub").mkdir(parents=True)
    shutil.copy(guests.kernel, root / "boot/vmlinuz")
    shutil.copy(guests.initrd, root / "boot/initrd.img")
    (root / "boot/grub/grub.cfg").write_text(GRUB_CFG.format(extra=""))
    image = lab.share_dir / f"grub-disk-{os.getpid()}.img"
    with image.open("wb") as f:
        f.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(image)], check=True)
    shutil.rmtree(root)
    return image


def guest_config(lab: Lab, name: str, type_: str, disk: Path, **extra: str) -> Path:
    settings = {"name": name, "type": type_, "memory": 128, "disks": f'["{disk},raw,xvda,ro"]', **extra}
    path = lab.share_dir / f"{name}-{os.getpid()}.yaml"
    path.write_text("".join(f"{key}: {value}\n" for key, value in settings.items()))
    return path


def test_pv_and_pvh_guests_boot_their_disks_grub_cfg_through_pvgrub_and_pygrub(lab, guests):
    """Each guest boots the kernel its disk's grub.cfg names (its marker on the console: the entry's
    own command line), pygrub the entry asked for with the config's cmdline added; nothing that
    pygrub extracted is left in dom0; xl sees the guests; each powers off on `shutdown -w` through
    its PV drivers and the host is as it was."""
    disk = disk_with_grub(lab, guests)
    configs = {
        "pvgrub-pv": guest_config(lab, "pvgrub-pv", "pv", disk, bootloader="pvgrub"),
        "pvgrub-pvh": guest_config(lab, "pvgrub-pvh", "pvh", disk, bootloader="pvgrub"),
        "pygrub-pv": guest_config(lab, "pygrub-pv", "pv", disk, bootloader="pygrub", bootloader_args='["--entry=1"]',
                                  cmdline="from=config"),
    }
    before = host_state(lab)
    try:
        for config in configs.values():
            created = xentool(lab, "create", str(config))
            assert created.returncode == 0, created.err
        plan = xentool(lab, "create", "--dry-run", "--json", str(configs["pvgrub-pvh"]))
        build = next(step for step in json.loads(plan.out)["steps"] if step["name"] == "build")
        assert [op["spec"]["kernel"] for op in build["ops"] if op["op"] == "BuildDomain"] == [
            "/usr/lib/grub-xen/grub-i386-xen_pvh.bin"]
        assert lab.exec(["sh", "-c", "ls -A /var/lib/xentool/bootloader"], capture=True).out.strip() == ""
        log = wait_for_console(lab, "pygrub-pv", "xentool-guest: marker=second-entry")
        assert "Command line: console=hvc0 xentool.marker=second-entry xentool.then=wait from=config" in log
        for name in ("pvgrub-pv", "pvgrub-pvh"):
            log = wait_for_console(lab, name, "xentool-guest: marker=first-entry")
            assert "Welcome to GRUB!" in log and "Reading (xen/xvda)/boot/grub/grub.cfg" in log
        listed = lab.exec(["xl", "list"], capture=True).out
        assert all(name in listed for name in configs), listed
        for name in configs:
            stopped = xentool(lab, "shutdown", "-w", name, timeout=300)
            assert stopped.returncode == 0, stopped.err
        assert host_state(lab) == before
    finally:
        for name, config in configs.items():
            xentool(lab, "destroy", name)
            config.unlink(missing_ok=True)
        disk.unlink(missing_ok=True)
