"""A real Debian 12 system (xentool.lab.debian_image: debootstrap, systemd, the Debian kernel, GRUB)
booted from its own disk three ways on real Xen: as a PV guest through PVGRUB2, as a PV guest
through pygrub, and as an HVM guest through SeaBIOS and the disk's own GRUB.  The image is built
once (cached beside the lab's guest images); each guest boots a copy of its own, as the guests
write to their disks.  The three boot at once: each costs minutes of the lab's CPU under TCG.

The HVM guest's disk is on the emulated AHCI controller (`hdtype: ahci`): SeaBIOS reads an IDE
disk by PIO, several round trips to QEMU in dom0 per 512-byte sector, and loading the kernel and
initramfs that way took 9 minutes in the lab; over AHCI the reads are DMA."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from kit.lab import device_models, host_state, wait_for_console, xentool
from kit.session import started
from xentool.lab import Lab
from xentool.lab.debian_image import DEBIAN_DISK_NAME, MARKER_PREFIX, DebianDisk, install_debian_disk
from xentool.lab.guest_images import guests_dir

pytestmark = pytest.mark.lab
# Measured in the lab (TCG): see the README's table; PVGRUB2 and SeaBIOS read the kernel and
# initramfs at a few hundred KiB/s before the system even starts.
DEBIAN_BOOT_TIMEOUT = 900.0


@pytest.fixture(scope="module")
def debian(lab: Lab) -> DebianDisk:
    """The image, built in the background since the session started (tests/conftest.py), or here."""
    building = started("debian-disk")
    disk = building.result() if building is not None else install_debian_disk(guests_dir() / DEBIAN_DISK_NAME, log=print)
    print(f"Debian disk: {disk.facts()}")
    return disk


def copy_of(disk: DebianDisk, name: str) -> Path:
    """The guest's own copy (sparse, as the image is)."""
    copy = guests_dir() / f"{name}-{os.getpid()}.img"
    subprocess.run(["cp", "--sparse=always", "--", str(disk.path), str(copy)], check=True)
    return copy


def guest_config(lab: Lab, name: str, body: str) -> Path:
    path = lab.share_dir / f"{name}-{os.getpid()}.yaml"
    path.write_text(f"name: {name}\n{body}")
    return path


# The guests: each boots a copy of the image (the config's {disk}), all created at once.
PV_GUESTS = {
    "deb-pvgrub": "type: pv\nbootloader: pvgrub\nmemory: 256\ndisks: [{{target: {disk}, vdev: xvda}}]\n",
    "deb-pygrub": "type: pv\nbootloader: pygrub\nmemory: 256\ndisks: [{{target: {disk}, vdev: xvda}}]\n",
}
HVM_GUEST = {
    "deb-hvm": "type: hvm\nmemory: 384\nserial: pty\nvnc: false\nhvm: {{boot: [disk], hdtype: ahci}}\n"
               "disks: [{{target: {disk}, vdev: hda}}]\n",
}
# The HVM boot is asked for, not run by default: in the lab, an HVM Linux with its PV drivers
# triple-faults during most boots of this system (xl's as well as xentool's; 1 boot of 6 reached
# the end), its saved vCPU state Xen's own: QEMU's TCG emulation of nested SVM, under Xen
# (../shared/lab-notes.md, 2026-12-02).  A run that can fail for the lab's sake is no CI test.
HVM_ENV = "XENTOOL_TEST_DEBIAN_HVM"
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")  # systemd's and GRUB's colours and cursor moves
needs_hvm_asked = pytest.mark.skipif(not os.environ.get(HVM_ENV), reason=(
    f"the lab's nested SVM (QEMU TCG) makes HVM guests with PV drivers triple-fault in most boots; {HVM_ENV}=1 runs it"))


def guests() -> dict[str, str]:
    return {**PV_GUESTS, **(HVM_GUEST if os.environ.get(HVM_ENV) else {})}


@dataclass
class Booting:
    """The guests being booted: when each was created, its uuid, the host before them."""

    created: dict[str, float]
    uuids: dict[str, str]
    host_before: dict[str, object]


@pytest.fixture(scope="module")
def booting(lab, debian):
    bodies = guests()
    disks = {name: copy_of(debian, name) for name in bodies}
    configs = {name: guest_config(lab, name, body.format(disk=disks[name])) for name, body in bodies.items()}
    state = Booting({}, {}, host_state(lab))
    try:
        for name in bodies:
            state.created[name] = time.monotonic()
            created = xentool(lab, "create", str(configs[name]))
            assert created.returncode == 0, created.err
            state.uuids[name] = json.loads(xentool(lab, "info", "--json", name).out)["uuid"]
        yield state
    finally:
        for name in bodies:
            xentool(lab, "destroy", name)
            configs[name].unlink(missing_ok=True)
            disks[name].unlink(missing_ok=True)


def wait_until_booted(lab: Lab, debian: DebianDisk, booting: Booting, name: str) -> str:
    """The guest's console once its boot has finished (the marker unit's systemd-analyze line),
    with its root on the PV disk; prints how long it took."""
    log = ANSI.sub("", wait_for_console(lab, name, f"{MARKER_PREFIX} systemd-analyze:", timeout=DEBIAN_BOOT_TIMEOUT))
    seconds = time.monotonic() - booting.created[name]
    marker = next(line for line in log.splitlines() if f"{MARKER_PREFIX} marker=booted" in line)
    analyzed = next(line for line in log.splitlines() if f"{MARKER_PREFIX} systemd-analyze:" in line)
    print(f"{name}: booted {seconds:.0f} s after its create: {marker[marker.index(MARKER_PREFIX):].strip()} | "
          f"{analyzed[analyzed.index(MARKER_PREFIX):].strip()}")
    assert f"kernel={debian.kernel_version} root=/dev/xvda1" in marker, marker
    return log


def power_off(lab: Lab, booting: Booting, names: list[str], *options: str) -> None:
    """`xentool shutdown -w` each at once; systemd reached poweroff.target on each console."""
    with ThreadPoolExecutor(len(names)) as pool:
        stopped = dict(zip(names, pool.map(
            lambda name: xentool(lab, "shutdown", "-w", "--timeout", "300", *options, name, timeout=400), names), strict=True))
    assert {name: ran.returncode for name, ran in stopped.items()} == dict.fromkeys(names, 0), \
        {name: ran.err for name, ran in stopped.items()}
    for name in names:
        log = ANSI.sub("", lab.exec(["cat", f"/var/log/xentool/console/{booting.uuids[name]}.log"], capture=True).out)
        assert "Reached target poweroff.target" in log and f"{MARKER_PREFIX} systemd-shutdown poweroff" in log, log[-1500:]


def test_debian_boots_as_a_pv_guest_through_pvgrub_and_through_pygrub_and_powers_off_cleanly(lab, debian, booting):
    """Each PV guest reaches the marker unit (systemd up, root on its PV disk xvda1), xl lists it,
    and `xentool shutdown -w` powers it off through its PV drivers (control/shutdown), systemd
    reaching poweroff.target on the console."""
    names = list(PV_GUESTS)
    with ThreadPoolExecutor(len(names)) as pool:
        logs = dict(zip(names, pool.map(lambda name: wait_until_booted(lab, debian, booting, name), names), strict=True))
    assert "Welcome to GRUB!" in logs["deb-pvgrub"] and "Reading (xen/xvda,msdos1)/boot/grub/grub.cfg" in logs["deb-pvgrub"]
    listed = lab.exec(["xl", "list"], capture=True).out
    assert all(name in listed for name in names), listed
    power_off(lab, booting, names)
    if set(booting.uuids) == set(names):  # no HVM guest booting beside them
        assert host_state(lab) == booting.host_before


@needs_hvm_asked
def test_debian_boots_as_an_hvm_guest_through_seabios_and_its_grub_and_powers_off_by_acpi(lab, debian, booting):
    """SeaBIOS boots the disk's MBR, GRUB (its serial menu on the console) starts the kernel, the
    guest's PV drivers take the disk over (root on xvda1); `shutdown --acpi` presses the power
    button, which logind answers, and systemd reaches poweroff.target.  Then the host is as it was
    before the three guests."""
    log = wait_until_booted(lab, debian, booting, "deb-hvm")
    assert "Booting `Debian GNU/Linux 12 (xentool lab)'" in log
    assert "-device ahci,id=ahci0 " in device_models(lab)
    power_off(lab, booting, ["deb-hvm"], "--acpi")
    assert host_state(lab) == booting.host_before
