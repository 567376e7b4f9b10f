"""The HVM boot media (xentool.lab.guest_images) booted for real, in plain QEMU (TCG): SeaBIOS ->
ISOLINUX -> the lab's kernel -> /init.  No Xen, but a QEMU boot each and the lab's kernel, which
the session's lab fetches into the cache: marked `lab`, and using the lab so that the kernel is
there whatever order the tests run in.  How the images are built: tests/labtool/test_boot_media.py."""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

import pytest

from kit.lab import needs_boot_media_tools, needs_isohybrid
from xentool.lab import guest_images as gi

pytestmark = [needs_boot_media_tools, pytest.mark.usefixtures("lab")]


def _lab_kernel() -> Path | None:
    from xentool.lab.paths import cache_dir

    found = sorted(glob.glob(str(cache_dir() / "linux-*" / "boot" / "vmlinuz-*")))
    return Path(found[-1]) if found else None


@pytest.mark.lab
@needs_isohybrid
@pytest.mark.parametrize("medium", ["cdrom", "disk"])
def test_seabios_boots_the_media_in_qemu(tmp_path, medium):
    qemu = shutil.which("qemu-system-x86_64")
    kernel = _lab_kernel()
    busybox = Path("/bin/busybox")
    if not qemu or kernel is None or not busybox.is_file():
        pytest.skip("needs qemu-system-x86_64, /bin/busybox and the lab's cached kernel (run `xentool lab up` once)")
    images = gi.install_guest_images(kernel, busybox, tmp_path / "guests", boot_iso=False)
    cmdline = f"console=ttyS0 xentool.marker=hvm-{medium} xentool.then=poweroff"
    if medium == "cdrom":
        image = gi.build_boot_iso(images.kernel, images.initrd, cmdline, tmp_path / "boot.iso")
        drive = ["-cdrom", str(image)]
    else:
        image = gi.build_boot_disk(images.kernel, images.initrd, cmdline, tmp_path / "boot.img")
        drive = ["-drive", f"file={image},format=raw,if=ide,media=disk"]
    argv = [qemu, "-accel", "tcg", "-m", "256", "-display", "none", "-monitor", "none", "-serial", "stdio",
            "-nodefaults", "-vga", "std", "-no-reboot", *drive]
    try:
        result = subprocess.run(argv, capture_output=True, timeout=90, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"no power-off within 90 s; serial output ends: {(e.stdout or b'')[-800:]!r}")
    out = result.stdout.decode(errors="replace")
    assert "ISOLINUX" in out  # the boot loader spoke on the serial port (`serial 0 115200`)
    assert f"xentool-guest: marker=hvm-{medium} then=poweroff" in out, out[-2000:]
