"""Boot media for HVM guests (xentool.lab.guest_images): the El Torito ISO SeaBIOS boots from a
CD-ROM and the hybrid raw disk image it boots from an IDE disk, built from Debian's genisoimage,
isolinux and syslinux-utils.  These run on the host without Xen; the test that boots the images
in plain QEMU is tests/lab/test_boot_media_in_qemu.py."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest

from kit.lab import needs_boot_media_tools, needs_isohybrid
from xentool.errors import UsageError
from xentool.lab import guest_images as gi
from xentool.lab.errors import LabError, MissingTool

CMDLINE = "console=ttyS0 xentool.marker=hvm-cdrom xentool.then=poweroff"
SECTOR = 2048

pytestmark = needs_boot_media_tools


@pytest.fixture
def boot_files(tmp_path: Path) -> tuple[Path, Path]:
    kernel = tmp_path / "in" / "kernel"
    initrd = tmp_path / "in" / "initrd"
    kernel.parent.mkdir()
    kernel.write_bytes(b"fake kernel\0" + bytes(range(256)) * 300)
    initrd.write_bytes(b"fake initrd\0" + bytes(range(255, -1, -1)) * 100)
    return kernel, initrd


def isoinfo(*args: str) -> bytes:
    return subprocess.run(["isoinfo", *args], check=True, capture_output=True, timeout=30).stdout


def el_torito_boot_entry(image: bytes) -> tuple[int, int, int]:
    """Parse the boot record volume descriptor (sector 17) and the boot catalog it points at;
    return (boot media type, sector count, load RBA) of the initial/default entry."""
    brvd = image[17 * SECTOR:18 * SECTOR]
    assert brvd[0] == 0 and brvd[1:6] == b"CD001" and brvd[6] == 1
    assert brvd[7:39] == b"EL TORITO SPECIFICATION".ljust(32, b"\0")
    (catalog_sector,) = struct.unpack_from("<I", brvd, 0x47)
    catalog = image[catalog_sector * SECTOR:catalog_sector * SECTOR + 64]
    validation, initial = catalog[:32], catalog[32:64]
    assert validation[0] == 0x01 and validation[1] == 0  # header id, platform x86
    assert validation[30:32] == b"\x55\xaa"
    assert sum(struct.unpack("<16H", validation)) & 0xFFFF == 0  # the checksum word balances it
    assert initial[0] == 0x88, "default entry not bootable"
    media, _load_seg, _sys_type, _unused, count, rba = struct.unpack_from("<BHBBHI", initial, 1)
    return media, count, rba


def test_iso_is_el_torito_bootable_isolinux(boot_files, tmp_path):
    kernel, initrd = boot_files
    iso = gi.build_boot_iso(kernel, initrd, CMDLINE, tmp_path / "out" / "hello.iso")
    assert iso == tmp_path / "out" / "hello.iso"
    assert oct(iso.stat().st_mode & 0o777) == "0o644"
    assert "El Torito VD version 1 found" in isoinfo("-d", "-i", str(iso)).decode()

    image = iso.read_bytes()
    media, count, rba = el_torito_boot_entry(image)
    assert (media, count) == (0, 4)  # no emulation, 4 x 512 bytes loaded (ISOLINUX's convention)
    # The boot image is isolinux.bin, patched only in its boot info table (bytes 8-63).
    loader = gi.ISOLINUX_BIN.read_bytes()
    boot = image[rba * SECTOR:rba * SECTOR + len(loader)]
    assert boot[:8] == loader[:8] and boot[64:] == loader[64:]
    (bi_pvd, bi_file) = struct.unpack_from("<II", boot, 8)
    assert (bi_pvd, bi_file) == (16, rba)
    # Nothing left behind next to the image.
    assert sorted(p.name for p in iso.parent.iterdir()) == ["hello.iso"]


def test_iso_holds_kernel_initrd_and_config(boot_files, tmp_path):
    kernel, initrd = boot_files
    iso = gi.build_boot_iso(kernel, initrd, CMDLINE, tmp_path / "hello.iso")
    files = isoinfo("-f", "-i", str(iso)).decode().split()
    assert "/ISOLINUX/LDLINUX.C32;1" in files
    assert isoinfo("-i", str(iso), "-x", "/VMLINUZ.;1") == kernel.read_bytes()
    assert isoinfo("-i", str(iso), "-x", "/INITRD.GZ;1") == initrd.read_bytes()
    assert isoinfo("-i", str(iso), "-x", "/ISOLINUX/LDLINUX.C32;1") == gi.LDLINUX_C32.read_bytes()

    cfg = isoinfo("-i", str(iso), "-x", "/ISOLINUX/ISOLINUX.CFG;1").decode()
    lines = [line.strip() for line in cfg.splitlines()]
    assert lines[0] == "serial 0 115200"  # syslinux wants it first
    assert "prompt 0" in lines
    assert "timeout 1" in lines
    assert "kernel /vmlinuz" in lines
    assert f"append initrd=/initrd.gz {CMDLINE}" in lines


@needs_isohybrid
def test_disk_image_has_mbr_and_active_partition(boot_files, tmp_path):
    kernel, initrd = boot_files
    disk = gi.build_boot_disk(kernel, initrd, CMDLINE, tmp_path / "hello-disk.img")
    image = disk.read_bytes()
    assert len(image) % 512 == 0
    mbr = image[:512]
    assert mbr[510:512] == b"\x55\xaa"
    entries = [mbr[446 + 16 * n:446 + 16 * (n + 1)] for n in range(4)]
    used = [e for e in entries if e[4] != 0]
    assert len(used) == 1
    status = used[0][0]
    start, sectors = struct.unpack_from("<II", used[0], 8)
    assert status == 0x80, "the partition is not marked active (bootable)"
    assert sectors > 0 and start + sectors <= len(image) // 512
    # The MBR code is isolinux's hybrid MBR, and the ISO is still there (it boots as a CD too).
    pfx = Path("/usr/lib/ISOLINUX/isohdpfx.bin")
    if pfx.is_file():
        assert mbr[:432] == pfx.read_bytes()[:432]
    assert image[16 * SECTOR + 1:16 * SECTOR + 6] == b"CD001"
    el_torito_boot_entry(image)
    cfg = isoinfo("-i", str(disk), "-x", "/ISOLINUX/ISOLINUX.CFG;1").decode()
    assert f"append initrd=/initrd.gz {CMDLINE}" in cfg


@pytest.mark.parametrize("bad", ["console=ttyS0\nxentool.marker=x", "a\rb", "x\0y", "say\x1b[2J", "x" * 3000])
@pytest.mark.parametrize("builder", [gi.build_boot_iso, gi.build_boot_disk])
def test_bad_cmdline_is_refused(boot_files, tmp_path, bad, builder):
    kernel, initrd = boot_files
    with pytest.raises(UsageError):
        builder(kernel, initrd, bad, tmp_path / "out.img")
    assert list(tmp_path.glob("out*")) == [] and list(tmp_path.glob(".out*")) == []


def test_missing_isolinux_names_the_package(boot_files, tmp_path, monkeypatch):
    kernel, initrd = boot_files
    monkeypatch.setattr(gi, "ISOLINUX_BIN", tmp_path / "nowhere" / "isolinux.bin")
    with pytest.raises(MissingTool, match="install the Debian package isolinux") as caught:
        gi.build_boot_iso(kernel, initrd, CMDLINE, tmp_path / "hello.iso")
    assert caught.value.package == "isolinux"
    assert not (tmp_path / "hello.iso").exists()


def test_missing_genisoimage_names_the_package(boot_files, tmp_path, monkeypatch):
    kernel, initrd = boot_files
    monkeypatch.setattr(gi, "GENISOIMAGE", "xentool-no-such-genisoimage")
    with pytest.raises(MissingTool, match="package genisoimage"):
        gi.build_boot_iso(kernel, initrd, CMDLINE, tmp_path / "hello.iso")
    monkeypatch.setattr(gi, "ISOHYBRID", "xentool-no-such-isohybrid")
    with pytest.raises(MissingTool, match="package syslinux-utils"):
        gi.build_boot_disk(kernel, initrd, CMDLINE, tmp_path / "hello.img")
    assert list(tmp_path.glob("*hello*")) == []


def test_failed_build_keeps_the_old_image(boot_files, tmp_path, monkeypatch):
    kernel, initrd = boot_files
    dest = tmp_path / "hello.iso"
    dest.write_bytes(b"the old image")
    monkeypatch.setattr(gi, "GENISOIMAGE", "false")  # found on PATH, exits 1
    with pytest.raises(LabError, match="genisoimage"):
        gi.build_boot_iso(kernel, initrd, CMDLINE, dest)
    assert dest.read_bytes() == b"the old image"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hello.iso", "in"]


def test_cmdline_is_data_not_shell(boot_files, tmp_path):
    """Quotes, $, ; and backticks reach isolinux.cfg verbatim (no shell ever sees them)."""
    kernel, initrd = boot_files
    odd = "console=ttyS0 x='$(touch pwned)';`id` \"y\" $HOME"
    iso = gi.build_boot_iso(kernel, initrd, odd, tmp_path / "odd dir; name" / "a b.iso")
    cfg = isoinfo("-i", str(iso), "-x", "/ISOLINUX/ISOLINUX.CFG;1").decode()
    assert f"append initrd=/initrd.gz {odd}\n" in cfg
    assert not (Path.cwd() / "pwned").exists()


def test_install_boot_media_rebuilds_only_when_inputs_change(boot_files, tmp_path):
    kernel, initrd = boot_files
    dest = tmp_path / "guests" / "hello.iso"
    gi.install_boot_media(kernel, initrd, dest, CMDLINE)
    stamp = dest.with_name("hello.iso.inputs")
    assert stamp.is_file()
    first = dest.stat().st_ino, dest.stat().st_mtime_ns

    gi.install_boot_media(kernel, initrd, dest, CMDLINE)
    assert (dest.stat().st_ino, dest.stat().st_mtime_ns) == first  # cached: not rewritten

    gi.install_boot_media(kernel, initrd, dest, CMDLINE + " quiet")
    second = dest.stat().st_ino
    assert second != first[0]
    assert "quiet" in isoinfo("-i", str(dest), "-x", "/ISOLINUX/ISOLINUX.CFG;1").decode()

    initrd.write_bytes(initrd.read_bytes() + b"changed")
    gi.install_boot_media(kernel, initrd, dest, CMDLINE + " quiet")
    assert dest.stat().st_ino != second
    assert isoinfo("-i", str(dest), "-x", "/INITRD.GZ;1") == initrd.read_bytes()

    # No stamp (say an interrupted earlier run): rebuilt, whatever lies there.
    dest.write_bytes(b"damaged")
    stamp.unlink()
    gi.install_boot_media(kernel, initrd, dest, CMDLINE + " quiet")
    assert dest.read_bytes()[16 * SECTOR + 1:16 * SECTOR + 6] == b"CD001"


def test_install_guest_images_makes_the_example_iso(boot_files, tmp_path):
    kernel, _ = boot_files
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"not really busybox")
    images = gi.install_guest_images(kernel, busybox, tmp_path / "guests")
    assert images.iso == tmp_path / "guests" / "hello.iso"
    assert {p.name for p in (tmp_path / "guests").iterdir()} == {
        "vmlinuz", "hello-initrd.gz", "hello.iso", "hello.iso.inputs", "hello-grub.img", "hello-grub.img.inputs"}
    cfg = isoinfo("-i", str(images.iso), "-x", "/ISOLINUX/ISOLINUX.CFG;1").decode()
    assert f"append initrd=/initrd.gz {gi.HELLO_ISO_CMDLINE}\n" in cfg
    assert isoinfo("-i", str(images.iso), "-x", "/INITRD.GZ;1") == images.initrd.read_bytes()
    assert gi.install_guest_images(kernel, busybox, tmp_path / "guests", boot_iso=False).iso is None


def test_the_grub_disk_holds_the_kernel_and_a_grub_cfg_and_is_made_once(boot_files, tmp_path):
    """An ext4 image (debugfs reads it without mounting) with /boot/grub/grub.cfg naming the kernel
    and initramfs it holds; made again only when they change."""
    kernel, initrd = boot_files
    disk = gi.install_grub_disk(kernel, initrd, tmp_path / "hello-grub.img")
    cat = subprocess.run(["debugfs", "-R", "cat /boot/grub/grub.cfg", str(disk)], capture_output=True, text=True, check=True)
    assert cat.stdout == gi.GRUB_CFG and "linux /boot/vmlinuz console=hvc0 xentool.marker=grub-disk " in cat.stdout
    dumped = tmp_path / "vmlinuz.out"
    subprocess.run(["debugfs", "-R", f"dump /boot/vmlinuz {dumped}", str(disk)], capture_output=True, check=True)
    assert dumped.read_bytes() == kernel.read_bytes()
    made = disk.stat().st_mtime_ns
    gi.install_grub_disk(kernel, initrd, disk)
    assert disk.stat().st_mtime_ns == made
    initrd.write_bytes(initrd.read_bytes() + b"changed")
    gi.install_grub_disk(kernel, initrd, disk)
    assert disk.stat().st_mtime_ns != made
