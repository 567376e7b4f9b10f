"""Guests to boot in the lab, made from the lab's own Debian packages: the kernel dom0 runs (it has
CONFIG_XEN_PV, CONFIG_PVH and the PV console built in) and a tiny busybox initramfs.

The initramfs prints a marker line taken from its command line (``xentool.marker=...``) so a test
knows the guest reached userspace, then does what ``xentool.then=`` says:

- ``wait`` (default): echo every line typed on the console, until told to power off;
- ``poweroff`` / ``reboot`` / ``crash``: do that at once (a guest that shuts itself down);
- ``count``: print a counter every second (a guest whose progress shows on the console).

Shutdown requests from the toolstack reach it the way they reach any Linux guest: the kernel reads
``control/shutdown`` and runs /sbin/poweroff, which (busybox) signals PID 1; /init traps those signals,
since a shell as PID 1 would otherwise die of them and crash the guest.
"""

from __future__ import annotations

import gzip
import os
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from xentool.lab.initramfs import Entry, newc_archive
from xentool.lab.paths import cache_dir

MARKER_PREFIX = "xentool-guest:"
# Where the example configs (configs/examples/*.yaml) expect the guest files.
SYSTEM_GUESTS_DIR = Path("/var/lib/xentool/guests")


def guests_dir() -> Path:
    """/var/lib/xentool/guests where we may write there (root, as `make demo` runs); else the user's
    lab cache, and the example configs then need their paths changed."""
    try:
        SYSTEM_GUESTS_DIR.mkdir(parents=True, exist_ok=True)
        if os.access(SYSTEM_GUESTS_DIR, os.W_OK):
            return SYSTEM_GUESTS_DIR
    except OSError:
        pass
    return cache_dir() / "guests"

GUEST_INIT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
exec </dev/console >/dev/console 2>&1
arg() { for w in $(cat /proc/cmdline); do case "$w" in "$1"=*) echo "${w#*=}";; esac; done; }
MARKER=$(arg xentool.marker)
THEN=$(arg xentool.then)
echo "xentool-guest: marker=${MARKER:-none} then=${THEN:-wait}"
# busybox halt, poweroff and reboot signal PID 1 with USR1, USR2 and TERM.
trap 'echo "xentool-guest: halting"; halt -f' USR1
trap 'echo "xentool-guest: powering off"; poweroff -f' USR2
trap 'echo "xentool-guest: rebooting"; reboot -f' TERM
case "$THEN" in
  poweroff) echo "xentool-guest: powering off"; poweroff -f ;;
  reboot) echo "xentool-guest: rebooting"; reboot -f ;;
  crash) echo "xentool-guest: crashing"; echo c > /proc/sysrq-trigger ;;
  count) ( n=0; while true; do echo "xentool-guest: count=$n"; n=$((n+1)); sleep 1; done ) & ;;
  *) ( while read -r line; do
         echo "xentool-guest: typed=$line"
         [ "$line" = poweroff ] && kill -USR2 1
       done ) </dev/console & ;;  # a background job reads /dev/null unless told otherwise
esac
# PID 1 waits (interruptibly, so the traps run) and never exits.
while true; do wait; sleep 1; done
"""


@dataclass(frozen=True)
class GuestImages:
    kernel: Path
    initrd: Path


def hello_initramfs(busybox: Path) -> bytes:
    """The test guest's initramfs as a gzip'd cpio archive."""
    entries = [Entry(d, stat.S_IFDIR | 0o755) for d in ("bin", "dev", "proc", "sys", "sbin", "usr")]
    entries.append(Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(Entry("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()))
    entries.append(Entry("init", stat.S_IFREG | 0o755, GUEST_INIT.encode()))
    return gzip.compress(newc_archive(entries), compresslevel=6, mtime=0)


def install_guest_images(kernel: Path, busybox: Path, directory: Path) -> GuestImages:
    """Write ``vmlinuz`` and ``hello-initrd.gz`` into ``directory`` (only what changed)."""
    directory.mkdir(parents=True, exist_ok=True)
    images = GuestImages(directory / "vmlinuz", directory / "hello-initrd.gz")
    _write_if_changed(images.kernel, kernel.read_bytes())
    _write_if_changed(images.initrd, hello_initramfs(busybox))
    return images


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    shutil.move(tmp, path)
