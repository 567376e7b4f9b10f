"""The Debian guest disk's pieces that need no debootstrap (xentool.lab.debian_image): the MBR it
writes, the grub.cfg every boot path reads (pygrub's own parser included), the mirror check.  The
image itself is built and booted by tests/lab/test_debian_guest.py."""

from __future__ import annotations

import json
import struct
import sys
from pathlib import Path

import pytest

from xentool.errors import UsageError
from xentool.lab import debian_image as di

PYGRUB_LIB = Path("/usr/lib/xen-4.17/lib/python")


def test_the_mbr_keeps_grubs_code_and_holds_one_active_linux_partition_by_lba():
    code = bytes(range(256)) * 2
    mbr = di.master_boot_record(code, 2048, 1000)
    assert len(mbr) == 512 and mbr[:440] == code[:440] and mbr[510:] == b"\x55\xaa"
    status, kind = mbr[446], mbr[450]
    first, count = struct.unpack("<II", mbr[454:462])
    assert (status, kind, first, count) == (0x80, 0x83, 2048, 1000)
    assert mbr[462:510] == bytes(48)  # the other three entries are empty
    with pytest.raises(Exception, match="not one sector"):
        di.master_boot_record(code[:100], 2048, 1000)


def test_grub_cfg_gives_seabios_the_serial_console_and_pvgrub_and_pygrub_the_pv_one(tmp_path):
    cfg = di.grub_cfg("6.1.0-57-amd64")
    assert "linux16 /boot/vmlinuz-6.1.0-57-amd64" in cfg and "console=ttyS0" in cfg
    if not (PYGRUB_LIB / "grub" / "GrubConf.py").is_file():
        pytest.skip("needs Xen's pygrub library (xen-utils-4.17)")
    sys.path.insert(0, str(PYGRUB_LIB))
    try:
        from grub.GrubConf import Grub2ConfigFile  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(PYGRUB_LIB))
    path = tmp_path / "grub.cfg"
    path.write_text(cfg)
    images = Grub2ConfigFile(str(path)).images
    assert len(images) == 1
    assert images[0].kernel[1] == "/boot/vmlinuz-6.1.0-57-amd64" and images[0].initrd[1] == "/boot/initrd.img-6.1.0-57-amd64"
    assert images[0].args.endswith("console=hvc0") and f"root=UUID={di.ROOT_UUID}" in images[0].args


def test_a_mirror_that_is_not_an_http_url_is_refused_before_anything_is_built(tmp_path, monkeypatch):
    monkeypatch.delenv(di.SECURITY_MIRROR_ENV, raising=False)
    with pytest.raises(UsageError, match=r"--mirror/XENTOOL_DEBIAN_MIRROR 'http://x\\ndeb evil': give a Debian mirror's"):
        di.install_debian_disk(tmp_path / "d.img", mirror="http://x\ndeb evil")
    assert list(tmp_path.iterdir()) == []


def test_a_built_image_is_found_by_its_recipe_and_a_changed_recipe_builds_again(tmp_path, monkeypatch):
    dest = tmp_path / "debian-12.img"
    dest.write_bytes(b"an image")
    facts = {"kernel_version": "6.1.0-57-amd64", "size_bytes": 8, "used_bytes": 4, "build_seconds": 1.5}
    dest.with_name(dest.name + ".json").write_text(json.dumps(facts))
    dest.with_name(dest.name + ".inputs").write_text(di._recipe_key() + "\n")
    built: list[Path] = []
    monkeypatch.setattr(di, "build_debian_disk", lambda path, mirror, log: built.append(path) or di.DebianDisk(path, "new", 1, 1, 0.1))
    found = di.install_debian_disk(dest)
    assert (found.kernel_version, found.build_seconds, built) == ("6.1.0-57-amd64", 1.5, [])
    dest.with_name(dest.name + ".inputs").write_text("another recipe\n")
    assert di.install_debian_disk(dest).kernel_version == "new" and built == [dest]
    assert dest.with_name(dest.name + ".inputs").read_text().strip() == di._recipe_key()
