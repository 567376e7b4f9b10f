"""Guests to boot in the lab, made from the lab's own Debian packages: the kernel dom0 runs (it has
CONFIG_XEN_PV, CONFIG_PVH and the PV console built in) and a tiny busybox initramfs.

The initramfs prints a marker line taken from its command line (``xentool.marker=...``) so a test
knows the guest reached userspace, then does what ``xentool.then=`` says:

- ``wait`` (default): echo every line typed on the console, until told to power off;
- ``poweroff`` / ``reboot`` / ``crash``: do that at once (a guest that shuts itself down);
- ``count``: print a counter every second (a guest whose progress shows on the console);
- ``tick``: print a counter every 10 ms (bench/migrate_vs_xl.py times a migration's downtime by the
  largest gap in it, as seen outside the lab).

Shutdown requests from the toolstack reach it the way they reach any Linux guest: the kernel reads
``control/shutdown`` and runs /sbin/poweroff, which (busybox) signals PID 1; /init traps those signals,
since a shell as PID 1 would otherwise die of them and crash the guest.

HVM guests can also boot that kernel and initramfs the way an unmodified OS boots, through SeaBIOS:
from an El Torito CD-ROM image (:func:`build_boot_iso`, ISOLINUX) or from a raw hard disk image
(:func:`build_boot_disk`, the same ISO made hybrid by ``isohybrid``).  Both are made only from Debian
packages (genisoimage, isolinux, syslinux-common, syslinux-utils), by running their programs with
argument lists, never through a shell.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import os
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from xentool.errors import UsageError
from xentool.lab.errors import LabError, MissingTool
from xentool.lab.initramfs import Entry, ModuleTree, newc_archive
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
# then=devices: use the PV disks xvdb (rw) and xvdc (ro) (or xentool.rw=A,B,..., xentool.ro=) and
# the PV NICs (xentool.ip=ADDR/LEN, xentool.peer=ADDR to ping; ip1= and peer1= for eth1), saying
# what worked; then wait.
devices() {
  say() { echo "xentool-guest: $*"; }
  RW=$(arg xentool.rw); RO=$(arg xentool.ro); RO=/dev/${RO:-xvdc}
  mkdir -p /mnt/rw /mnt/ro
  for d in $(echo "${RW:-xvdb}" | tr , ' '); do
    if mount -t ext4 /dev/$d /mnt/rw; then
      echo "written by $MARKER" > /mnt/rw/guest.txt && sync && umount /mnt/rw && say "rw-disk: wrote guest.txt on $d"
    else say "rw-disk: mount of $d failed"; fi
  done
  if mount -t ext4 -o ro $RO /mnt/ro; then say "ro-disk: $(cat /mnt/ro/hello.txt)"; umount /mnt/ro
  else say "ro-disk: mount failed"; fi
  if dd if=/dev/zero of=$RO bs=512 count=1 2>/dev/null; then say "ro-disk: write ALLOWED"
  else say "ro-disk: write refused"; fi
  # net IFACE ADDR/LEN PEER: up, addressed, ping the peer; a peer outside ADDR/LEN is reached
  # on-link (a host route), as a guest behind a routed vif reaches dom0.
  net() {
    ip link set $1 up && ip addr add "$2" dev $1 && say "net: $1 $2 $(cat /sys/class/net/$1/address)"
    ip route get "$3" 2>/dev/null | grep -q "dev $1" || ip route add "$3" dev $1
    if ping -c 3 -W 5 "$3" >/dev/null 2>&1; then say "net: ping $3 ok"; else say "net: ping $3 failed"; fi
  }
  IP=$(arg xentool.ip); [ -z "$IP" ] || net eth0 "$IP" "$(arg xentool.peer)"
  IP=$(arg xentool.ip1); [ -z "$IP" ] || net eth1 "$IP" "$(arg xentool.peer1)"
  say "devices done"
}
# The PV front ends, ext4 and the ACPI button: whatever fails to load (button on a PV guest) is
# not needed there.
for m in $(cat /lib/modules/order 2>/dev/null); do insmod "/lib/modules/$m" 2>/dev/null; done
# An HVM guest without PV drivers is shut down with the ACPI power button: the button driver turns
# it into a key press that busybox acpid answers by running /etc/acpi/PWRF/00000080.
if [ -d /sys/firmware/acpi ] && [ -f /lib/modules/button.ko ]; then
  sleep 1; [ -e /dev/input/event0 ] && acpid -c /etc/acpi -l /dev/null /dev/input/event*
fi
# busybox halt, poweroff and reboot signal PID 1 with USR1, USR2 and TERM.
trap 'echo "xentool-guest: halting"; halt -f' USR1
trap 'echo "xentool-guest: powering off"; poweroff -f' USR2
trap 'echo "xentool-guest: rebooting"; reboot -f' TERM
case "$THEN" in
  poweroff) echo "xentool-guest: powering off"; poweroff -f ;;
  reboot) echo "xentool-guest: rebooting"; reboot -f ;;
  crash) echo "xentool-guest: crashing"; echo c > /proc/sysrq-trigger ;;
  count) ( n=0; while true; do echo "xentool-guest: count=$n"; n=$((n+1)); sleep 1; done ) & ;;
  tick) ( n=0; while true; do echo "tick=$n"; n=$((n+1)); usleep 10000; done ) & ;;
  burn) ( while true; do :; done ) & ;;  # a vcpu kept busy: what top and xentop should both see
  devices) devices ;;
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
    iso: Path | None = None  # hello.iso, the same kernel and initramfs on a bootable CD-ROM image
    grub_disk: Path | None = None  # hello-grub.img, the same with a grub.cfg on an ext4 disk image


# The guest kernel's modules that /init loads (Debian builds them all as modules): the PV disk and
# network front ends, ext4 for the test disks, the ACPI power button; and the handler acpid runs
# for the button.
GUEST_MODULES = ("xen-blkfront", "xen-netfront", "crc32c_generic", "ext4", "button", "evdev")
POWER_BUTTON_HANDLER = "#!/bin/busybox sh\nkill -USR2 1\n"


def hello_initramfs(busybox: Path, modules_dir: Path | None = None) -> bytes:
    """The test guest's initramfs as a gzip'd cpio archive; with the kernel's ``modules_dir``, it
    also answers the ACPI power button."""
    entries = [Entry(d, stat.S_IFDIR | 0o755) for d in ("bin", "dev", "proc", "sys", "sbin", "usr")]
    entries.append(Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(Entry("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()))
    entries.append(Entry("init", stat.S_IFREG | 0o755, GUEST_INIT.encode()))
    if modules_dir is not None:
        order = ModuleTree.load(modules_dir).load_order(GUEST_MODULES)
        names = [Path(p).name for p in order]
        entries += [Entry(d, stat.S_IFDIR | 0o755) for d in ("lib", "lib/modules", "etc", "etc/acpi", "etc/acpi/PWRF")]
        entries += [
            Entry(f"lib/modules/{n}", stat.S_IFREG | 0o644, (modules_dir / p).read_bytes()) for p, n in zip(order, names, strict=True)
        ]
        entries.append(Entry("lib/modules/order", stat.S_IFREG | 0o644, ("\n".join(names) + "\n").encode()))
        entries.append(Entry("etc/acpi/PWRF/00000080", stat.S_IFREG | 0o755, POWER_BUTTON_HANDLER.encode()))
    return gzip.compress(newc_archive(entries), compresslevel=6, mtime=0)


def install_guest_images(kernel: Path, busybox: Path, directory: Path, boot_iso: bool = True,
                         modules_dir: Path | None = None, grub_disk: bool = True) -> GuestImages:
    """Write ``vmlinuz``, ``hello-initrd.gz``, and unless told not to the bootable ``hello.iso``
    and the grub disk ``hello-grub.img`` into ``directory``, each only when its inputs changed."""
    directory.mkdir(parents=True, exist_ok=True)
    images = GuestImages(directory / "vmlinuz", directory / "hello-initrd.gz")
    _write_if_changed(images.kernel, kernel.read_bytes())
    _write_if_changed(images.initrd, hello_initramfs(busybox, modules_dir))
    if boot_iso:
        iso = install_boot_media(images.kernel, images.initrd, directory / HELLO_ISO_NAME, HELLO_ISO_CMDLINE)
        images = GuestImages(images.kernel, images.initrd, iso)
    if grub_disk:
        images = dataclasses.replace(images, grub_disk=install_grub_disk(images.kernel, images.initrd,
                                                                         directory / HELLO_GRUB_DISK_NAME))
    return images


def _write_if_changed(path: Path, data: bytes) -> None:
    if path.exists() and path.read_bytes() == data:
        return
    tmp = path.with_name(path.name + ".partial")
    tmp.write_bytes(data)
    tmp.chmod(0o644)
    shutil.move(tmp, path)


# -- boot media for HVM guests (SeaBIOS) ------------------------------------------------------------

# configs/examples/hvm-bios-cdrom.yaml boots this from an emulated IDE CD-ROM.
HELLO_ISO_NAME = "hello.iso"
# quiet: every byte on an emulated serial port is a trip to QEMU, which under the lab's TCG costs
# more than the rest of the boot.
HELLO_ISO_CMDLINE = "console=ttyS0 quiet xentool.marker=hvm-bios-cdrom"

# Debian's isolinux and syslinux-common put the BIOS boot loader here; isolinux.bin (6.x) needs its
# ldlinux.c32 next to it.  syslinux-utils brings isohybrid.
ISOLINUX_BIN = Path("/usr/lib/ISOLINUX/isolinux.bin")
LDLINUX_C32 = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
GENISOIMAGE = "genisoimage"
ISOHYBRID = "isohybrid"

# Names inside the image: ISO 9660 level 1 (8.3) names, so ISOLINUX finds them with or without Rock
# Ridge.  isoinfo lists them in upper case ("/ISOLINUX/ISOLINUX.CFG;1").
_ISO_KERNEL = "vmlinuz"
_ISO_INITRD = "initrd.gz"
_ISO_DIR = "isolinux"
# x86 Linux keeps at most 2048 bytes of command line (COMMAND_LINE_SIZE), ours included.
_MAX_CMDLINE = 2048 - len(f"initrd=/{_ISO_INITRD} ") - 1
# Bump when the image layout or isolinux.cfg changes, so cached images are rebuilt.
_BOOT_MEDIA_FORMAT = "xentool-boot-media 1"


def check_cmdline(cmdline: str) -> str:
    """A kernel command line that fits on one isolinux.cfg ``append`` line, or :class:`UsageError`."""
    if "\n" in cmdline or "\r" in cmdline:
        raise UsageError(f"kernel command line {cmdline!r} contains a newline; it must be one line")
    bad = sorted({c for c in cmdline if ord(c) < 0x20 or ord(c) == 0x7F})
    if bad:
        raise UsageError(f"kernel command line {cmdline!r} contains control characters {bad!r}")
    if len(cmdline.encode()) > _MAX_CMDLINE:
        raise UsageError(f"kernel command line is {len(cmdline.encode())} bytes; at most {_MAX_CMDLINE} fit")
    return cmdline


def isolinux_cfg(cmdline: str) -> str:
    """isolinux.cfg that boots the kernel at once (no prompt, a tenth of a second's timeout), with the
    boot loader on COM1 too.  ``serial`` must be the file's first directive."""
    check_cmdline(cmdline)
    append = f"initrd=/{_ISO_INITRD}" + (f" {cmdline}" if cmdline else "")
    return (f"serial 0 115200\n"
            f"default xentool\n"
            f"prompt 0\n"
            f"timeout 1\n"
            f"label xentool\n"
            f"  kernel /{_ISO_KERNEL}\n"
            f"  append {append}\n")


def _need_file(path: Path, what: str, package: str) -> None:
    if not path.is_file():
        raise MissingTool(what, str(path), package)


def need_program(name: str, package: str) -> str:
    found = shutil.which(name)
    if not found:
        raise MissingTool(f"the program {name}", name, package)
    return found


def _run_tool(argv: list[str], what: str) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        tail = " | ".join(line.strip() for line in (result.stderr or result.stdout).splitlines()[-5:] if line.strip())
        raise LabError(f"{what} failed (`{argv[0]}` exited with {result.returncode}): {tail or 'no output'}")


def _temp_beside(dest: Path) -> Path:
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".partial")
    os.close(fd)
    return Path(name)


def _make_iso(kernel: Path, initrd: Path, cmdline: str, out: Path) -> None:
    """genisoimage an El Torito (no emulation) ISO booting ISOLINUX into ``out``."""
    check_cmdline(cmdline)
    _need_file(ISOLINUX_BIN, "ISOLINUX's isolinux.bin", "isolinux")
    _need_file(LDLINUX_C32, "SYSLINUX's ldlinux.c32 (BIOS)", "syslinux-common")
    genisoimage = need_program(GENISOIMAGE, "genisoimage")
    for path, what in ((kernel, "guest kernel"), (initrd, "guest initramfs")):
        if not path.is_file():
            raise LabError(f"the {what} {path} does not exist")
    with tempfile.TemporaryDirectory(prefix="xentool-iso-") as tmp:
        root = Path(tmp) / "root"
        boot = root / _ISO_DIR
        boot.mkdir(parents=True)
        # Copies, not links: -boot-info-table patches isolinux.bin inside the tree.
        shutil.copyfile(ISOLINUX_BIN, boot / "isolinux.bin")
        shutil.copyfile(LDLINUX_C32, boot / "ldlinux.c32")
        (boot / "isolinux.cfg").write_text(isolinux_cfg(cmdline))
        shutil.copyfile(kernel, root / _ISO_KERNEL)
        shutil.copyfile(initrd, root / _ISO_INITRD)
        _run_tool([genisoimage, "-quiet", "-input-charset", "utf-8", "-output", str(out),
                   "-volid", "XENTOOL_HELLO", "-rational-rock", "-joliet",
                   "-eltorito-boot", f"{_ISO_DIR}/isolinux.bin", "-eltorito-catalog", f"{_ISO_DIR}/boot.cat",
                   "-no-emul-boot", "-boot-load-size", "4", "-boot-info-table",
                   "--", str(root)], "building the boot ISO with genisoimage")


def _install_atomically(dest: Path, build) -> Path:
    """Run ``build(tmp)`` on a temporary file next to ``dest``, then rename it over ``dest``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(dest)
    try:
        build(tmp)
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def build_boot_iso(kernel: Path, initrd: Path, cmdline: str, dest: Path) -> Path:
    """Write ``dest``: a CD-ROM image SeaBIOS boots (El Torito, no emulation) whose ISOLINUX starts
    ``kernel`` with ``initrd`` and ``cmdline`` at once, on the serial port as well as the screen.

    Raises :class:`UsageError` for a command line that is not one line, and :class:`MissingTool`
    naming the Debian package when genisoimage, isolinux or syslinux-common is not installed."""
    check_cmdline(cmdline)
    return _install_atomically(dest, lambda tmp: _make_iso(kernel, initrd, cmdline, tmp))


def build_boot_disk(kernel: Path, initrd: Path, cmdline: str, dest: Path) -> Path:
    """Write ``dest``: a raw hard disk image SeaBIOS boots from an emulated IDE disk, booting the
    same way as :func:`build_boot_iso` (it is that ISO, made hybrid).

    The route: the ISO from genisoimage with -boot-info-table, then ``isohybrid`` (syslinux-utils)
    writes into its first sector an MBR (isolinux's isohdpfx code, which finds isolinux.bin through
    the boot info table) and a partition table with one active partition covering the image, and
    pads the image to whole cylinders.  It is what Debian's own installer images do, needs no root,
    loop devices or mtools, and leaves one image that boots both as a CD and as a disk."""
    check_cmdline(cmdline)
    isohybrid = need_program(ISOHYBRID, "syslinux-utils")

    def build(tmp: Path) -> None:
        _make_iso(kernel, initrd, cmdline, tmp)
        _run_tool([isohybrid, "--", str(tmp)], "making the boot disk image with isohybrid")

    return _install_atomically(dest, build)


def _boot_media_key(kernel: Path, initrd: Path, cmdline: str, disk: bool) -> str:
    """A digest of everything that goes into a boot image, to know when a cached one is stale."""
    h = hashlib.sha256()
    h.update(f"{_BOOT_MEDIA_FORMAT}\0disk={disk}\0{cmdline}\0".encode())
    for path in (kernel, initrd, ISOLINUX_BIN, LDLINUX_C32):
        h.update(str(path).encode() + b"\0")
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def install_boot_media(kernel: Path, initrd: Path, dest: Path, cmdline: str, disk: bool = False) -> Path:
    """:func:`build_boot_iso` (or, with ``disk``, :func:`build_boot_disk`) into ``dest``, unless
    ``dest`` was already built from the same inputs: ``dest.inputs`` next to it records a SHA-256
    of the kernel, initramfs, command line and boot loader files it was made from."""
    check_cmdline(cmdline)
    for path, what, package in ((ISOLINUX_BIN, "ISOLINUX's isolinux.bin", "isolinux"),
                                (LDLINUX_C32, "SYSLINUX's ldlinux.c32 (BIOS)", "syslinux-common")):
        _need_file(path, what, package)
    key = _boot_media_key(kernel, initrd, cmdline, disk)
    return _built_once(dest, key, lambda: (build_boot_disk if disk else build_boot_iso)(kernel, initrd, cmdline, dest))


def _built_once(dest: Path, key: str, build: Callable[[], object]) -> Path:
    """``build()`` makes ``dest``, unless ``dest.inputs`` next to it says it was made from ``key``."""
    stamp = dest.with_name(dest.name + ".inputs")
    try:
        if dest.is_file() and stamp.read_text().strip() == key:
            return dest
    except OSError:
        pass
    stamp.unlink(missing_ok=True)  # never leave a stamp that vouches for a half-replaced image
    build()
    _write_if_changed(stamp, (key + "\n").encode())
    return dest


# The disk of a guest that boots what its own disk names (bootloader: pvgrub or pygrub): an
# unpartitioned ext4 image holding the guest kernel, its initramfs and a GRUB 2 config, which
# PVGRUB2 finds by searching for /boot/grub/grub.cfg and pygrub reads in dom0.  Two entries, so a
# config can choose (pygrub's --entry=1).
HELLO_GRUB_DISK_NAME = "hello-grub.img"
GRUB_DISK_MIB = 32
GRUB_CFG = """set default=0
set timeout=0
menuentry 'xentool hello' {
\tlinux /boot/vmlinuz console=hvc0 xentool.marker=grub-disk xentool.then=wait
\tinitrd /boot/initrd.img
}
menuentry 'xentool hello (second entry)' {
\tlinux /boot/vmlinuz console=hvc0 xentool.marker=grub-disk-second xentool.then=wait
\tinitrd /boot/initrd.img
}
"""


def install_grub_disk(kernel: Path, initrd: Path, dest: Path) -> Path:
    """``dest``: the grub disk, made with ``mkfs.ext4 -d`` (e2fsprogs: no root, mount or loop
    device), unless it was already made from the same kernel, initramfs and config."""
    mkfs = need_program("mkfs.ext4", "e2fsprogs")
    h = hashlib.sha256(f"{GRUB_DISK_MIB}\0{GRUB_CFG}\0".encode())
    for path in (kernel, initrd):
        h.update(path.read_bytes())

    def build(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="xentool-grub-disk-") as folder:
            root = Path(folder)
            (root / "boot/grub").mkdir(parents=True)
            shutil.copyfile(kernel, root / "boot/vmlinuz")
            shutil.copyfile(initrd, root / "boot/initrd.img")
            (root / "boot/grub/grub.cfg").write_text(GRUB_CFG)
            with tmp.open("wb") as f:
                f.truncate(GRUB_DISK_MIB << 20)
            _run_tool([mkfs, "-q", "-F", "-L", "xentool-hello", "-d", str(root), "--", str(tmp)], "making the grub disk with mkfs.ext4")

    return _built_once(dest, h.hexdigest(), lambda: _install_atomically(dest, build))
