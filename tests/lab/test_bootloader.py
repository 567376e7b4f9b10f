"""Guests that boot what their own disk names, on real Xen: PVGRUB2 (Debian's grub-xen-host image as
the kernel, reading the disk in the guest) for a PVH guest, and pygrub (run in dom0, restricted) for
a PV guest choosing a menu entry, both from the lab's grub disk (xentool.lab.guest_images: an ext4
image whose grub.cfg boots the lab's guest kernel; the first entry's marker is grub-disk, the
second's grub-disk-second).  The two boot at once: each costs a kernel's boot under TCG, and PVGRUB2
reads the kernel from the disk at a few hundred KiB/s there.  A real Debian system booted through
PVGRUB2 as a PV guest, and through pygrub, is tests/lab/test_debian_guest.py's."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kit.lab import host_state, wait_for_console, xentool
from xentool.lab import Lab

pytestmark = pytest.mark.lab

def guest_config(lab: Lab, name: str, type_: str, disk: Path, **extra: str) -> Path:
    settings = {"name": name, "type": type_, "memory": 128, "disks": f'["{disk},raw,xvda,ro"]', **extra}
    path = lab.share_dir / f"{name}-{os.getpid()}.yaml"
    path.write_text("".join(f"{key}: {value}\n" for key, value in settings.items()))
    return path


def test_a_pvh_guest_boots_through_pvgrub_and_a_pv_guest_through_pygrubs_chosen_entry(lab, guests):
    """Each guest boots the kernel its disk's grub.cfg names (its marker on the console: the entry's
    own command line), pygrub the entry asked for with the config's cmdline added; nothing that
    pygrub extracted is left in dom0; xl sees the guests; each powers off on `shutdown -w` through
    its PV drivers and the host is as it was."""
    disk = guests.grub_disk
    configs = {
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
        log = wait_for_console(lab, "pygrub-pv", "xentool-guest: marker=grub-disk-second")
        assert "Command line: console=hvc0 xentool.marker=grub-disk-second xentool.then=wait from=config" in log
        log = wait_for_console(lab, "pvgrub-pvh", "xentool-guest: marker=grub-disk ")
        assert "Welcome to GRUB!" in log and "Reading (xen/xvda)/boot/grub/grub.cfg" in log
        listed = lab.exec(["xl", "list"], capture=True).out
        assert all(name in listed for name in configs), listed
        with ThreadPoolExecutor(len(configs)) as pool:  # at once: each waits seconds for its guest
            stopped = list(pool.map(lambda name: xentool(lab, "shutdown", "-w", name, timeout=300), configs))
        assert [ran.returncode for ran in stopped] == [0, 0], [ran.err for ran in stopped]
        assert host_state(lab) == before
    finally:
        for name, config in configs.items():
            xentool(lab, "destroy", name)
            config.unlink(missing_ok=True)
