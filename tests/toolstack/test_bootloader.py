"""Guests that boot what their own disk names: bootloader pvgrub (PVGRUB2 as the kernel) and pygrub
(run in dom0 before the build), on the simulated hypervisor; pygrub is the real one (Debian's
xen-utils), reading a real ext4 image."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from xentool import bootloader
from xentool.config import config_from_dict
from xentool.config.xlcfg import xl_config
from xentool.errors import BootloaderError, ConfigError, UnsupportedByHost

from .conftest import host_snapshot

GRUB_CFG = """set default=0
set timeout=1
menuentry 'Lab guest (first)' {
\tlinux /boot/vmlinuz console=hvc0 which=first
\tinitrd /boot/initrd.img
}
menuentry 'Lab guest (second)' {
\tlinux /boot/vmlinuz console=hvc0 which=second
\tinitrd /boot/initrd.img
}
"""

needs_pygrub = pytest.mark.skipif(
    not os.access(bootloader.PYGRUB_PROGRAM, os.X_OK) or os.geteuid() != 0 or shutil.which("mkfs.ext4") is None,
    reason="needs Debian's pygrub (xen-utils-4.17), root (it mounts and chroots) and mkfs.ext4",
)


@pytest.fixture
def boot_disk(tmp_path: Path, kernel: Path) -> Path:
    """An unpartitioned ext4 image with a kernel, an initramfs and a grub.cfg of two entries."""
    root = tmp_path / "root"
    (root / "boot/grub").mkdir(parents=True)
    shutil.copy(kernel, root / "boot/vmlinuz")
    (root / "boot/initrd.img").write_bytes(b"initramfs of the disk\n" * 100)
    (root / "boot/grub/grub.cfg").write_text(GRUB_CFG)
    image = tmp_path / "disk.img"
    with image.open("wb") as f:
        f.truncate(16 << 20)
    subprocess.run(["mkfs.ext4", "-q", "-F", "-d", str(root), str(image)], check=True)
    return image


@pytest.fixture
def output_root(tmp_path: Path, monkeypatch) -> Path:
    root = tmp_path / "bootloader-output"
    monkeypatch.setattr(bootloader, "OUTPUT_ROOT", root)
    return root


def guest(disk: Path | str, **fields):
    return config_from_dict({"name": "own", "bootloader": "pygrub", "disks": [f"{disk},raw,xvda,rw"], **fields})


@needs_pygrub
def test_pygrub_boots_the_entry_asked_for_and_its_copies_go_once_built(xt, boot_disk, output_root):
    domain = xt.create(guest(boot_disk, bootloader_args=["--entry=1"], cmdline="extra=1"))
    log = xt.console_log("own")
    assert "Command line: console=hvc0 which=second extra=1" in log  # pygrub's --args adds to the entry's
    assert list(output_root.iterdir()) == []
    assert domain.state in ("running", "blocked")


@needs_pygrub
def test_pygrub_boots_the_disks_default_entry(xt, boot_disk, output_root):
    xt.create(guest(boot_disk))
    assert "Command line: console=hvc0 which=first" in xt.console_log("own")


@needs_pygrub
@pytest.mark.parametrize(
    ("fields", "disk", "said"),
    [
        ({"bootloader_args": ["--entry=7"]}, None,
         "pygrub finds no menu entry '7' on {disk}; its entries: 0 'Lab guest (first)', 1 'Lab guest (second)'"),
        ({"kernel": "/boot/missing"}, None, "pygrub found nothing to boot on {disk}: Error opening /boot/missing in guest"),
        ({}, "blank", "pygrub found nothing to boot on {disk}: Unable to find partition containing kernel"),
    ],
    ids=["no-such-entry", "no-such-kernel", "no-filesystem"],
)
def test_what_pygrub_cannot_boot_is_refused_in_one_line_and_leaves_nothing(xt, boot_disk, output_root, tmp_path,
                                                                           fields, disk, said):
    if disk == "blank":
        boot_disk = tmp_path / "blank.img"
        boot_disk.write_bytes(bytes(8 << 20))
    before = host_snapshot(xt)
    with pytest.raises(Exception) as raised:
        xt.create(guest(boot_disk, **fields))
    cause = raised.value.__cause__ or raised.value
    assert isinstance(cause, BootloaderError)
    assert str(cause) == f"domain own, disk xvda: {said.format(disk=boot_disk)}"
    assert host_snapshot(xt) == before
    assert list(output_root.iterdir()) == []


def test_pvgrub_is_the_kernel_the_builder_loads_for_each_type(xt, tmp_path):
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    for type_, image in (("pv", "grub-x86_64-xen.bin"), ("pvh", "grub-i386-xen_pvh.bin")):
        config = config_from_dict({"name": "own", "type": type_, "bootloader": "pvgrub", "disks": [f"{disk},raw,xvda,rw"]})
        plan = xt.plan(config)
        assert [step.name for step in plan.steps][:3] == ["create domain", "xenstore skeleton", "build"]
        assert f"image=/usr/lib/grub-xen/{image}," in plan.describe()


def test_a_missing_pvgrub_package_is_named(xt, tmp_path, monkeypatch):
    monkeypatch.setitem(bootloader.PVGRUB_IMAGES, bootloader.GuestType.PV, str(tmp_path / "grub-x86_64-xen.bin"))
    disk = tmp_path / "disk.img"
    disk.write_bytes(bytes(1 << 20))
    with pytest.raises(UnsupportedByHost, match=r"domain own: bootloader pvgrub: .*grub-x86_64-xen.bin is missing; "
                                                 r"install Debian's grub-xen-host package"):
        xt.create(config_from_dict({"name": "own", "bootloader": "pvgrub", "disks": [f"{disk},raw,xvda,rw"]}))


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"bootloader": "pvgrub", "kernel": "/boot/vmlinuz"}, "kernel: pvgrub is the guest's kernel"),
        ({"bootloader": "pvgrub", "bootloader_args": ["--entry=1"]}, "bootloader_args: pvgrub is the guest's kernel"),
        ({"bootloader": "grub2"}, 'bootloader: "grub2" is not a bootloader; give pvgrub, pygrub'),
        ({"bootloader": "pygrub", "disks": []}, "bootloader: pygrub reads the guest's first disk, and it has none"),
        ({"bootloader": "pygrub", "disks": ["/d.qcow2,qcow2,xvda,rw"]},
         "disks[0].format: pygrub reads the first disk in dom0, and reads raw"),
        ({"type": "hvm", "bootloader": "pygrub"}, "bootloader: an hvm guest boots from its disk through its own firmware"),
        ({"bootloader": None, "bootloader_args": ["-q"]}, "bootloader_args: these are a bootloader's"),
        ({"bootloader": None}, "kernel: missing; a pv guest boots a kernel directly, so it needs kernel (the image's path), "
                               "or bootloader: pvgrub or pygrub"),
    ],
)
def test_bootloader_settings_that_cannot_work_are_refused_with_where_and_what(fields, said):
    data = {"name": "own", "disks": ["/d.img,raw,xvda,rw"], **fields}
    with pytest.raises(ConfigError) as raised:
        config_from_dict({key: value for key, value in data.items() if value is not None})
    assert said in str(raised.value)


def test_xl_bootloader_settings_are_imported(tmp_path):
    cfg = tmp_path / "deb.cfg"
    cfg.write_text('name = "deb"\nbootloader = "/usr/bin/pygrub"\nbootloader_args = "--entry=1 -q"\n'
                   'disk = [ "/srv/deb.img,raw,xvda,rw" ]\n')
    config, warnings = xl_config(cfg)
    assert config.bootloader == "pygrub" and config.bootloader_args == ["--entry=1", "-q"]
    assert config.kernel is None
    assert warnings == []


def test_pygrubs_output_and_last_words_are_read_as_libxl_reads_them():
    assert bootloader.parse_simple0(b"kernel /d/k\0ramdisk /d/r\0args a b=c\0") == {
        "kernel": "/d/k", "ramdisk": "/d/r", "args": "a b=c"}
    said = 'Traceback (most recent call last):\n  File "pygrub", line 1\nRuntimeError: Unable to find partition containing kernel\n'
    assert bootloader._last_words(said) == "Unable to find partition containing kernel"


def test_the_entry_asked_for_is_read_in_both_of_pygrubs_spellings():
    assert bootloader.entry_asked(["--entry=2"]) == "2"
    assert bootloader.entry_asked(["--entry", "Debian", "-q"]) == "Debian"
    assert bootloader.entry_asked(["--entry=1", "--entry=3"]) == "3"
    assert bootloader.entry_asked(["-q"]) is None
