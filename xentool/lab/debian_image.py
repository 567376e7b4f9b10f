"""A real Debian 12 system as a guest disk, made on this machine from Debian's packages.

The lab's other guests boot a kernel and a busybox initramfs that dom0 hands them.  This one boots
the way deployed guests do, from its own disk: debootstrap installs a minimal Debian 12 (systemd,
the Debian kernel, GRUB for BIOS and for Xen) into a directory, and that tree becomes one ext4
partition of an MBR disk image, with GRUB's BIOS boot code in the first MiB.  The same image boots

- as a PV (or PVH) guest through PVGRUB2 (dom0's grub-xen-host image, reading /boot/grub/grub.cfg
  inside the guest), or through pygrub (dom0 reads the same file);
- as an HVM guest through SeaBIOS, the MBR and GRUB's core image on the emulated disk (IDE, or
  AHCI with ``hdtype: ahci``), then on the PV disk once the kernel's PV drivers take over.

One grub.cfg serves all three: GRUB itself says which platform it runs on (``$grub_platform``:
"pc" under SeaBIOS, "xen" or "xen_pvh" as PVGRUB2), and the kernel's console follows (ttyS0, the
emulated serial port, or hvc0, the PV console).  pygrub does not run GRUB's script; it takes the
last ``linux`` line of the entry, which is the PV console's.

What the guest prints for a test to read (:data:`MARKER_PREFIX`): a unit prints a marker line once
systemd starts it (kernel, root device, so a test sees whether the PV disk took over), then, once
the boot has finished, ``systemd-analyze time``; from then on systemd shows its status on the
console, so a shutdown shows it reaching poweroff.target; and systemd-shutdown's last hook says
"systemd-shutdown poweroff" before the kernel powers off.

Built once and cached (:func:`install_debian_disk`): the image is rebuilt only when what goes into
it changes (the package list, the files written into it, :data:`IMAGE_FORMAT`); a new Debian point
release alone does not rebuild it.  Building needs root (debootstrap and chroot) and Debian's
mirror; every program runs with an argument list, never through a shell.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from xentool.errors import LabError, UsageError
from xentool.lab.guest_images import need_program
from xentool.lab.paths import cache_dir

DEBIAN_DISK_NAME = "debian-12.img"
SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MIRROR_ENV = "XENTOOL_DEBIAN_MIRROR"
SECURITY_MIRROR = "http://deb.debian.org/debian-security"
SECURITY_MIRROR_ENV = "XENTOOL_DEBIAN_SECURITY_MIRROR"
# Bump when the layout or the way it is built changes, so cached images are rebuilt.
IMAGE_FORMAT = "xentool-debian-disk 2"

# debootstrap's minbase (apt, dpkg, coreutils...) and what a bootable, cleanly stopping system
# needs on top: systemd as init, udev, dbus (logind answers the ACPI power button through it), an
# initramfs generator, GRUB's BIOS and Xen builds, and e2fsprogs for the root's fsck.  The kernel
# comes after, from the security suite, once the initramfs is configured: debootstrap would install
# the point release's and build a 30 MB initramfs for it, only for both to be replaced.
PACKAGES = ("systemd", "systemd-sysv", "udev", "dbus", "initramfs-tools", "zstd", "grub-pc-bin", "grub-xen-bin", "e2fsprogs")
KERNEL_PACKAGE = "linux-image-amd64"

MARKER_PREFIX = "xentool-debian:"
HOSTNAME = "xentool-debian"
# The root file system's UUID: fixed, so grub.cfg and fstab name it before it exists.
ROOT_UUID = "5e6b1c2a-0d3e-4c1f-9a57-7e4e5d1b2c3a"
ROOT_LABEL = "debian-root"

PARTITION_START = 1 << 20  # the first MiB holds the MBR and GRUB's core image, as fdisk leaves it
SECTOR = 512
FREE_MIB = 256  # room left on the root for the guest's own writes (journal, logs)

# The initramfs holds only what finds the root: the PV disk, the emulated IDE disk (HVM, before
# the PV drivers unplug it) and ext4.  MODULES=most (Debian's default) makes it 30 MB, which
# PVGRUB2 and SeaBIOS then read at a few hundred KiB/s under the lab's TCG.
INITRAMFS_CONF = "MODULES=list\nCOMPRESS=zstd\n"
INITRAMFS_MODULES = "xen-blkfront\nata_piix\nata_generic\nsd_mod\next4\n"

# Kernel modules for hardware no Xen guest has (sound, GPUs, cameras, radios): left out of the image.
UNUSED_MODULE_TREES = ("kernel/sound", "kernel/drivers/gpu", "kernel/drivers/media", "kernel/drivers/net/wireless",
                       "kernel/drivers/infiniband", "kernel/drivers/staging", "kernel/drivers/bluetooth",
                       "kernel/drivers/iio", "kernel/net/wireless", "kernel/net/bluetooth", "kernel/net/mac80211")
# Documentation and package lists that a booted guest never reads.
UNUSED_TREES = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "var/cache/apt",
                "var/lib/apt/lists")

MARKER_SCRIPT = f"""#!/bin/sh
# xentool's lab marker: what the tests read on the guest's console.
say() {{ echo "{MARKER_PREFIX} $*" > /dev/console; }}
say "marker=booted kernel=$(uname -r) root=$(findmnt -n -o SOURCE /)"
# systemd-analyze answers once the boot has finished (this unit is Type=simple: it does not hold it up).
until t=$(systemd-analyze time 2>/dev/null); do sleep 1; done
# From here on systemd shows its status on the console (SIGRTMIN+20: 54, which dash knows only by
# number), so a shutdown is seen reaching poweroff.target; the boot stayed quiet, as every byte on
# an emulated serial port costs under TCG.  Before the line a test waits for, which may shut the
# guest down at once.
kill -54 1
say "systemd-analyze: $(echo "$t" | tr '\\n' ' ')"
say "slowest units: $(systemd-analyze blame --no-pager 2>/dev/null | head -n 5 | tr -s ' \\n' '  ')"
"""

MARKER_UNIT = """[Unit]
Description=xentool lab marker (prints on the console once the system is up)

[Service]
Type=simple
ExecStart=/usr/local/sbin/xentool-marker

[Install]
WantedBy=multi-user.target
"""

# systemd-shutdown runs these last, with "poweroff", "reboot", "halt" or "kexec" as $1.
SHUTDOWN_HOOK = f"""#!/bin/sh
echo "{MARKER_PREFIX} systemd-shutdown $1" > /dev/console
"""

# "Reached target poweroff.target - System Power Off.": the unit's name, not only its description.
SYSTEM_CONF = "[Manager]\nStatusUnitFormat=combined\nLogColor=no\n"
# e2scrub_reap (e2fsprogs) looks for leftover LVM snapshots at each boot: 10 s of a 35 s boot in
# QEMU, for volumes a guest disk never has.
MASKED_UNITS = ("e2scrub_reap.service",)
# The getty on the console is console-getty (agetty on /dev/console, whichever it is: hvc0 or
# ttyS0), not the generator's serial-getty@hvc0, which waits for udev to announce /dev/hvc0: under
# the lab's TCG, with three guests booting, that took more than systemd's 90 s ("Timed out waiting
# for device dev-hvc0.device"), and the boot waited for it.
MASKED_GENERATORS = ("systemd-getty-generator",)
ENABLED_UNITS = {"xentool-marker.service": "multi-user.target", "console-getty.service": "getty.target"}

FSTAB = f"UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n"
# Booted as an HVM guest with `hdtype: ahci` (SeaBIOS and GRUB then read the disk by DMA, minutes
# faster under TCG than IDE's per-sector PIO), the same disk is also on an AHCI controller, which
# QEMU's unplug protocol leaves in place when the PV drivers take over (it unplugs IDE disks only):
# without ahci's driver the guest sees the disk once, as xvda.
MODPROBE_CONF = "# xentool lab: the emulated AHCI disk is the PV disk xvda too; use that one\nblacklist ahci\n"


def grub_cfg(kernel_version: str) -> str:
    """The menu PVGRUB2, GRUB under SeaBIOS and pygrub all read (see the module's docstring).

    Under SeaBIOS the kernel starts by Linux's 16-bit boot protocol (linux16), as ISOLINUX starts
    it: GRUB's own 32-bit entry calls the BIOS's memory map in real mode once more just before
    the jump, which the lab's Xen failed to emulate ("MMIO emulation failed ... Real", then a
    triple fault) after the kernel had loaded.  And the HVM kernel takes Xen's event channel
    upcalls on the platform device's PCI interrupt (xen_no_vector_callback), not on a vector of
    its own: with the vector, 5 of 5 boots in the lab triple-faulted during udev's coldplug, their
    saved state Xen's own (QEMU's TCG emulation of nested SVM, with xl as with xentool; see
    ../shared/lab-notes.md); with the PCI interrupt they booted."""
    kernel = f"/boot/vmlinuz-{kernel_version} root=UUID={ROOT_UUID} ro quiet"
    initrd = f"/boot/initrd.img-{kernel_version}"
    return f"""set default=0
set timeout=0
if [ "$grub_platform" = pc ]; then
\tserial --unit=0 --speed=115200
\tterminal_input serial console
\tterminal_output serial console
fi
menuentry 'Debian GNU/Linux 12 (xentool lab)' {{
\tif [ "$grub_platform" = pc ]; then
\t\tlinux16 {kernel} xen_no_vector_callback console=tty0 console=ttyS0
\t\tinitrd16 {initrd}
\telse
\t\tlinux {kernel} console=hvc0
\t\tinitrd {initrd}
\tfi
}}
"""


@dataclass(frozen=True)
class DebianDisk:
    """The built image and what it cost: kept beside it as ``NAME.json``."""

    path: Path
    kernel_version: str
    size_bytes: int  # the image's length (it is sparse: less is allocated)
    used_bytes: int  # what the root file system's files take
    build_seconds: float

    def facts(self) -> dict[str, object]:
        return {**asdict(self), "path": str(self.path)}


def install_debian_disk(dest: Path, mirror: str | None = None, log: Callable[[str], None] | None = None) -> DebianDisk:
    """``dest``, the Debian guest disk, unless it was already built from the same recipe
    (``dest.inputs`` says so, ``dest.json`` holds the facts of that build).  One builder at a time
    (``dest.lock``): a second waits, then finds the first one's image."""
    chosen = mirror or os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR
    for url, where in ((chosen, f"--mirror/{MIRROR_ENV}"), (os.environ.get(SECURITY_MIRROR_ENV) or SECURITY_MIRROR, SECURITY_MIRROR_ENV)):
        # It goes into the image's sources.list as well as onto debootstrap's command line.
        if not re.fullmatch(r"https?://[^\s]+", url):
            raise UsageError(f"{where} {url!r}: give a Debian mirror's http:// or https:// URL, with no spaces")
    key = _recipe_key()
    facts_file = dest.with_name(dest.name + ".json")
    stamp = dest.with_name(dest.name + ".inputs")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest.with_name(dest.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if dest.is_file() and stamp.read_text().strip() == key:
                facts = json.loads(facts_file.read_text())
                return DebianDisk(dest, facts["kernel_version"], facts["size_bytes"], facts["used_bytes"], facts["build_seconds"])
        except (OSError, ValueError, KeyError):
            pass
        stamp.unlink(missing_ok=True)  # never leave a stamp that vouches for a half-built image
        disk = build_debian_disk(dest, chosen, log or (lambda line: None))
        facts_file.write_text(json.dumps(disk.facts(), indent=1) + "\n")
        stamp.write_text(key + "\n")
        return disk


def _recipe_key() -> str:
    """A digest of everything this module puts into the image, to know when a cached one is stale."""
    parts = (IMAGE_FORMAT, SUITE, sources_list("MIRROR", "SECURITY"), POLICY_RC_D, *PACKAGES, KERNEL_PACKAGE, INITRAMFS_CONF,
             INITRAMFS_MODULES, *UNUSED_MODULE_TREES, *UNUSED_TREES,
             MARKER_SCRIPT, MARKER_UNIT, SHUTDOWN_HOOK, SYSTEM_CONF, MODPROBE_CONF, *MASKED_UNITS, *MASKED_GENERATORS,
             *(f"{unit} in {target}" for unit, target in ENABLED_UNITS.items()), FSTAB, grub_cfg("VERSION"), str(FREE_MIB))
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def build_debian_disk(dest: Path, mirror: str, log: Callable[[str], None]) -> DebianDisk:
    """debootstrap into a scratch directory, set the system up, and write it as ``dest``."""
    if os.geteuid() != 0:
        raise LabError("building the Debian guest disk needs root (debootstrap installs packages as root and runs "
                       "programs in a chroot); run it as root, as `make setup` does")
    debootstrap = need_program("debootstrap", "debootstrap")
    mkfs = need_program("mkfs.ext4", "e2fsprogs")
    mkimage = need_program("grub-mkimage", "grub-common")
    started = time.monotonic()
    dest.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="debian-root-", dir=_scratch_parent()))
    root = scratch / "root"
    try:
        log(f"debootstrap {SUITE} from {mirror} (a few minutes)")
        _run([debootstrap, "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE, str(root), mirror],
             "debootstrap", dest.with_name(dest.name + ".debootstrap.log"))
        log(f"bringing it up to date ({SUITE}-updates, {SUITE}-security) and installing its kernel")
        _update(root, mirror, os.environ.get(SECURITY_MIRROR_ENV) or SECURITY_MIRROR)
        kernel_version = _kernel_version(root)
        log(f"setting the system up (kernel {kernel_version})")
        _set_up(root, kernel_version)
        _run(["chroot", str(root), "update-initramfs", "-u", "-k", kernel_version], "update-initramfs in the new system")
        _run(["chroot", str(root), "depmod", kernel_version], "depmod in the new system")
        _install_grub_modules(root)
        used = _tree_bytes(root)
        partition_bytes = _round_up(used * 5 // 4 + (FREE_MIB << 20), 1 << 20)
        log(f"writing {dest} ({(PARTITION_START + partition_bytes) >> 20} MiB, {used >> 20} MiB of files)")
        tmp = dest.with_name(f".{dest.name}.partial")
        try:
            _write_disk(root, tmp, partition_bytes, mkfs, mkimage)
            tmp.chmod(0o644)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
    finally:
        _remove_tree(scratch)
    return DebianDisk(dest, kernel_version, PARTITION_START + partition_bytes, used, round(time.monotonic() - started, 1))


def _scratch_parent() -> Path:
    """The tree is ~600 MB: beside the lab's cache, on a disk, not in a tmpfs /tmp."""
    parent = cache_dir()
    parent.mkdir(parents=True, exist_ok=True)
    return parent


def _run(argv: list[str], what: str, log_file: Path | None = None) -> None:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C.UTF-8"}
    result = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL, env=env)
    if log_file is not None:
        log_file.write_text(result.stdout + result.stderr)
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        raise LabError(f"{what} failed (`{argv[0]}` exited with {result.returncode}): {' | '.join(lines[-4:]) or 'no output'}")


def sources_list(mirror: str, security_mirror: str) -> str:
    return (f"deb {mirror} {SUITE} main\ndeb {mirror} {SUITE}-updates main\n"
            f"deb {security_mirror} {SUITE}-security main\n")


# While packages are installed in the chroot, their maintainer scripts must not start services
# (invoke-rc.d asks this script first; 101: "action forbidden").
POLICY_RC_D = "#!/bin/sh\nexit 101\n"


def _update(root: Path, mirror: str, security_mirror: str) -> None:
    """A Debian system as one installs it today: debootstrap takes the point release; the updates
    and security suites bring it up to date, and the kernel comes from them, its initramfs made the
    way this image wants (INITRAMFS_CONF) the first time."""
    _write(root, "etc/apt/sources.list", sources_list(mirror, security_mirror))
    _write(root, "etc/initramfs-tools/conf.d/xentool", INITRAMFS_CONF)
    _write(root, "etc/initramfs-tools/modules", INITRAMFS_MODULES)
    policy = root / "usr/sbin/policy-rc.d"
    _write(root, "usr/sbin/policy-rc.d", POLICY_RC_D, 0o755)
    apt = ["chroot", str(root), "apt-get", "-q", "-y", "-o", "Dpkg::Options::=--force-confold"]
    try:
        _run(["chroot", str(root), "apt-get", "-q", "update"], "apt-get update in the new system")
        _run([*apt, "dist-upgrade"], "apt-get dist-upgrade in the new system")
        _run([*apt, "--no-install-recommends", "install", KERNEL_PACKAGE], f"apt-get install {KERNEL_PACKAGE} in the new system")
        _run(["chroot", str(root), "apt-get", "-q", "clean"], "apt-get clean in the new system")
    finally:
        policy.unlink(missing_ok=True)


def _kernel_version(root: Path) -> str:
    kernels = sorted(p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise LabError(f"the new system has {len(kernels)} kernels in {root / 'boot'} ({kernels}); expected one")
    return kernels[0]


def _write(root: Path, path: str, text: str, mode: int = 0o644) -> None:
    target = root / path
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(mode)


def _set_up(root: Path, kernel_version: str) -> None:
    _write(root, "etc/hostname", HOSTNAME + "\n")
    _write(root, "etc/fstab", FSTAB)
    _write(root, "etc/modprobe.d/xentool.conf", MODPROBE_CONF)
    _write(root, "usr/local/sbin/xentool-marker", MARKER_SCRIPT, 0o755)
    _write(root, "etc/systemd/system/xentool-marker.service", MARKER_UNIT)
    for unit, target in ENABLED_UNITS.items():
        for folder in ("etc/systemd/system", "usr/lib/systemd/system"):
            if (root / folder / unit).is_file():
                _symlink(root / "etc/systemd/system" / f"{target}.wants" / unit, f"/{folder}/{unit}")
                break
        else:
            raise LabError(f"the Debian guest's unit {unit} is not installed in {root}")
    _write(root, "usr/lib/systemd/system-shutdown/xentool-marker", SHUTDOWN_HOOK, 0o755)
    _write(root, "etc/systemd/system.conf.d/xentool.conf", SYSTEM_CONF)
    for unit in MASKED_UNITS:
        _symlink(root / "etc/systemd/system" / unit, "/dev/null")
    for generator in MASKED_GENERATORS:
        _symlink(root / "etc/systemd/system-generators" / generator, "/dev/null")
    _write(root, "boot/grub/grub.cfg", grub_cfg(kernel_version))
    # Empty: each copy of the image makes its own machine id at its first boot.
    _write(root, "etc/machine-id", "", 0o444)
    (root / "var/lib/dbus/machine-id").unlink(missing_ok=True)
    for tree in UNUSED_TREES:
        _empty_directory(root / tree)
    for tree in UNUSED_MODULE_TREES:
        shutil.rmtree(root / "usr/lib/modules" / kernel_version / tree, ignore_errors=True)


def _symlink(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    link.unlink(missing_ok=True)
    link.symlink_to(target)


def _empty_directory(path: Path) -> None:
    if not path.is_dir():
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _install_grub_modules(root: Path) -> None:
    """What grub-install puts in /boot/grub/i386-pc: the modules core.img loads from its prefix."""
    source = root / "usr/lib/grub/i386-pc"
    target = root / "boot/grub/i386-pc"
    target.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        if path.suffix in (".mod", ".lst"):
            shutil.copyfile(path, target / path.name)


def _tree_bytes(root: Path) -> int:
    total = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(folder, name)).st_blocks * 512
            except OSError:
                pass
    return total


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _write_disk(root: Path, image: Path, partition_bytes: int, mkfs: str, mkimage: str) -> None:
    """The MBR disk: one bootable Linux partition from 1 MiB holding ``root`` as ext4 (mkfs.ext4
    -d, at that offset in the image itself: no loop device or mount), GRUB's boot.img in the MBR
    and its core.img in the sectors after it, where grub-install embeds it.

    boot.img loads the sector it names (1, its default) and core.img's first sector (diskboot.img)
    the rest, by the block list grub-mkimage wrote into it (from sector 2, core.img's length):
    written there, they need none of grub-bios-setup's patching, which wants a block device."""
    with image.open("wb") as f:
        f.truncate(PARTITION_START + partition_bytes)
    _run([mkfs, "-q", "-F", "-t", "ext4", "-L", ROOT_LABEL, "-U", ROOT_UUID, "-E", f"offset={PARTITION_START}",
          "-d", str(root), "--", str(image), f"{partition_bytes >> 10}k"], "mkfs.ext4 of the Debian root")
    grub_dir = root / "usr/lib/grub/i386-pc"
    with tempfile.TemporaryDirectory(prefix="xentool-grub-core-") as tmp:
        core_path = Path(tmp) / "core.img"
        _run([mkimage, "-O", "i386-pc", "-d", str(grub_dir), "-o", str(core_path), "-p", "(hd0,msdos1)/boot/grub",
              "biosdisk", "part_msdos", "ext2"], "grub-mkimage of GRUB's BIOS core image")
        core = core_path.read_bytes()
    if SECTOR + len(core) > PARTITION_START:
        raise LabError(f"GRUB's core image ({len(core)} bytes) does not fit before the partition at {PARTITION_START}")
    boot = (grub_dir / "boot.img").read_bytes()
    with image.open("r+b") as f:
        f.write(master_boot_record(boot, PARTITION_START // SECTOR, partition_bytes // SECTOR))
        f.write(core)


def master_boot_record(boot_code: bytes, first_sector: int, sectors: int) -> bytes:
    """Sector 0: ``boot_code``'s first 440 bytes, a disk signature, one active partition of type
    0x83 (Linux) by LBA (its CHS fields say "past 1024 cylinders", as for any disk today), and
    the 0x55AA signature."""
    if len(boot_code) != SECTOR:
        raise LabError(f"GRUB's boot.img is {len(boot_code)} bytes, not one sector")
    past_chs = bytes((0xFE, 0xFF, 0xFF))
    entry = bytes((0x80,)) + past_chs + bytes((0x83,)) + past_chs + struct.pack("<II", first_sector, sectors)
    signature = struct.pack("<I", int(ROOT_UUID[:8], 16))
    return boot_code[:440] + signature + b"\0\0" + entry + bytes(48) + b"\x55\xaa"


def _remove_tree(scratch: Path) -> None:
    """rm -rf ``scratch``, after unmounting whatever debootstrap left mounted in it (a failed run
    can leave /proc and /sys of the new system mounted; removing through those would fail)."""
    prefix = str(scratch.resolve()) + "/"
    try:
        mounts = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()]
    except OSError:
        mounts = []
    for mountpoint in sorted((m for m in mounts if m.startswith(prefix)), reverse=True):
        subprocess.run(["umount", "-l", mountpoint], capture_output=True, stdin=subprocess.DEVNULL)
    shutil.rmtree(scratch, ignore_errors=True)
