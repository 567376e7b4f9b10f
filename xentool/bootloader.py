"""Booting what a guest's own disk names, for PV and PVH guests (``bootloader:`` in the config).

- ``pvgrub``: Debian's PVGRUB2 image (package grub-xen-host) is the guest's kernel.  It runs in
  the guest, finds /boot/grub/grub.cfg on the guest's disks (its built-in config searches for it,
  after a GRUB the guest installed in /xen/pvboot-*.elf) and boots what it names.  dom0 reads
  nothing of the guest's disk: the safer of the two.
- ``pygrub`` (or another program that speaks its options): run in dom0 before the build, as
  libxl__bootloader_run does, on the guest's first disk.  It writes the kernel and initramfs it
  extracts into a directory of ours and names them, with the command line, in its output file;
  the builder loads them, and they are removed once it has.

pygrub reads a disk the guest can write, so it runs restricted as libxl's bootloader_restrict runs
it: ``--runas`` an unprivileged uid (the device model's: xen-qemuuser-range-base + domid, else
xen-qemuuser-shared), after which pygrub itself unshares its mount, IPC and network namespaces,
bind-mounts the disk read-only into an empty tmpfs, chroots there and drops to that uid.
"""

from __future__ import annotations

import hashlib
import os
import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from hypercalls.interface import GuestType
from xentool.config import GuestConfig
from xentool.config.model import PVGRUB, PYGRUB, DevType, Disk
from xentool.devicemodel.privilege import RANGE_BASE_USER, SHARED_USER
from xentool.devices.disk import check_disk_on_host
from xentool.errors import BootloaderError, UnsupportedByHost

# grub-xen-host's images: a 64-bit PV guest's, and the PVH one (a 32-bit PVH entry point, which
# boots 64-bit kernels too).
PVGRUB_IMAGES = {GuestType.PV: "/usr/lib/grub-xen/grub-x86_64-xen.bin", GuestType.PVH: "/usr/lib/grub-xen/grub-i386-xen_pvh.bin"}
PVGRUB_PACKAGE = "grub-xen-host"
PYGRUB_PROGRAM = "/usr/lib/xen-4.17/bin/pygrub"  # libxl__private_bindir_path()/pygrub (package xen-utils-4.17)
PYGRUB_PACKAGE = "xen-utils-4.17"
# libxl puts them in /var/lib/xen/bootloader.DOMID.{d,out}; ours go under xentool's own directory.
OUTPUT_ROOT = Path("/var/lib/xentool/bootloader")
TIMEOUT = 120.0  # seconds: pygrub reads a config and copies two files, even from a slow disk


@dataclass(frozen=True)
class BootFiles:
    """What the bootloader chose: the kernel and initramfs it copied out of the guest's disk (into
    the domain's output directory, which goes once the builder has read them) and the command line."""

    kernel: str
    ramdisk: str | None
    cmdline: str
    kernel_digest: str  # its SHA-256: the unpacked-kernel cache's key for a file made anew at each boot


def pvgrub_image(guest_type: GuestType) -> str:
    return PVGRUB_IMAGES[guest_type]


def boot_disk(config: GuestConfig) -> Disk:
    """The disk pygrub reads: the first one that is not a cdrom (libxl takes disks[0])."""
    return next(disk for disk in config.disks if disk.devtype == DevType.DISK)


def bootloader_program(config: GuestConfig) -> str:
    return PYGRUB_PROGRAM if config.bootloader == PYGRUB else str(config.bootloader)


def check_bootloader_on_host(config: GuestConfig) -> None:
    """The image or program is there, and pygrub can read the disk where it is: before anything is made."""
    if config.bootloader is None:
        return
    if config.bootloader == PVGRUB:
        image = pvgrub_image(config.type)
        if not os.path.isfile(image):
            raise UnsupportedByHost(config.name, f"bootloader pvgrub: {image} is missing; install Debian's "
                                                 f"{PVGRUB_PACKAGE} package (apt-get install {PVGRUB_PACKAGE})")
        return
    program = bootloader_program(config)
    if not os.access(program, os.X_OK):
        package = f"; install Debian's {PYGRUB_PACKAGE} package" if config.bootloader == PYGRUB else ""
        raise UnsupportedByHost(config.name, f"bootloader {config.bootloader}: {program} is not an executable program{package}")
    disk = boot_disk(config)
    if disk.backend != "0":
        raise BootloaderError(config.name, disk.vdev, f"{config.bootloader} reads the disk in dom0, and domain "
                                                      f"{disk.backend} serves it; use bootloader: pvgrub")
    check_disk_on_host(config.name, disk)  # before pygrub reads it; also where no kernel backend checks disks (the simulator)


def bootloader_uid(name: str, domid: int) -> int:
    """libxl's bootloader_uid: the device model's range user for this domain, else the shared one;
    never root."""
    try:
        return pwd.getpwnam(RANGE_BASE_USER).pw_uid + domid
    except KeyError:
        pass
    try:
        uid = pwd.getpwnam(SHARED_USER).pw_uid
    except KeyError:
        raise UnsupportedByHost(name, f"no unprivileged user to run the bootloader as: create one (adduser --system "
                                            f"--group --no-create-home {SHARED_USER}, which `make setup` does)") from None
    if uid == 0:
        raise UnsupportedByHost(name, f"{SHARED_USER} is root; the bootloader must run unprivileged")
    return uid


def output_paths(domid: int) -> tuple[Path, Path]:
    """The directory the extracted files go to, and the file pygrub names them in."""
    return OUTPUT_ROOT / f"{domid}.d", OUTPUT_ROOT / f"{domid}.out"


def bootloader_argv(config: GuestConfig, domid: int, uid: int) -> list[str]:
    """make_bootloader_args: the config's kernel, ramdisk and cmdline as pygrub's overrides, the
    restriction, the output, the config's own arguments, the disk."""
    directory, output = output_paths(domid)
    argv = [bootloader_program(config)]
    if config.kernel:
        argv.append(f"--kernel={config.kernel}")
    if config.ramdisk:
        argv.append(f"--ramdisk={config.ramdisk}")
    if config.cmdline:
        argv.append(f"--args={config.cmdline}")
    argv += [f"--runas={uid}", "--quiet", f"--output={output}", "--output-format=simple0",
             f"--output-directory={directory}", *config.bootloader_args, str(boot_disk(config).target)]
    return argv


def parse_simple0(data: bytes) -> dict[str, str]:
    """pygrub's ``simple0`` output: NUL-separated "kernel PATH", "ramdisk PATH", "args TEXT"."""
    chosen: dict[str, str] = {}
    for item in data.decode("utf-8", "surrogateescape").split("\0"):
        key, _, value = item.partition(" ")
        if key in ("kernel", "ramdisk", "args"):
            chosen[key] = value.lstrip()
    return chosen


def run_bootloader(config: GuestConfig, domid: int) -> BootFiles:
    """Run the bootloader on the guest's first disk; what it chose, or BootloaderError with what
    it said.  Its exit status is not the test: pygrub's restricted parent exits with its child's
    wait status, which a failure makes 256, seen as 0."""
    disk = boot_disk(config)
    directory, output = output_paths(domid)
    remove_boot_files(domid)
    OUTPUT_ROOT.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.mkdir(mode=0o700)
    output.touch(mode=0o600)  # pygrub opens it without O_CREAT
    try:
        uid = bootloader_uid(config.name, domid)
        entry = entry_asked(config.bootloader_args)
        if entry is not None:
            check_entry_exists(config, domid, uid, entry)
        argv = bootloader_argv(config, domid, uid)
        said = _run(config, argv)
        chosen = parse_simple0(output.read_bytes())
        kernel = chosen.get("kernel")
        if not kernel or not _is_inside(kernel, directory) or not os.path.isfile(kernel) or not os.path.getsize(kernel):
            raise BootloaderError(config.name, disk.vdev, f"{config.bootloader} found nothing to boot on {disk.target}: "
                                                          f"{_last_words(said)}")
        ramdisk = chosen.get("ramdisk") or None
        if ramdisk is not None and not _is_inside(ramdisk, directory):
            raise BootloaderError(config.name, disk.vdev, f"{config.bootloader} named a ramdisk outside its directory: {ramdisk}")
        with open(kernel, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        return BootFiles(kernel, ramdisk, chosen.get("args", ""), digest)
    except BaseException:
        remove_boot_files(domid)
        raise
    finally:
        output.unlink(missing_ok=True)


def entry_asked(args: list[str]) -> str | None:
    """The menu entry pygrub's arguments name (``--entry=N`` or ``--entry N``; the last wins)."""
    entry = None
    for index, arg in enumerate(args):
        if arg.startswith("--entry="):
            entry = arg.partition("=")[2]
        elif arg == "--entry" and index + 1 < len(args):
            entry = args[index + 1]
    return entry


def check_entry_exists(config: GuestConfig, domid: int, uid: int, entry: str) -> None:
    """pygrub boots its default when --entry names no entry; a config that names one wants that
    one, so the menu is listed first and a missing entry refused with the entries there are."""
    directory, output = output_paths(domid)
    disk = boot_disk(config)
    # Not --not-really: pygrub's restricted parent then fails on the files it did not make.
    listing = _run(config, [bootloader_program(config), f"--runas={uid}", "--quiet", "--list-entries",
                            f"--output={output}", f"--output-directory={directory}", str(disk.target)])
    titles = re.findall(r"^title: (.*)$", listing, re.MULTILINE)
    if entry in titles or (entry.isdigit() and int(entry) < len(titles)):
        return
    shown = ", ".join(f"{index} {title!r}" for index, title in enumerate(titles)) or "none"
    raise BootloaderError(config.name, disk.vdev, f"{config.bootloader} finds no menu entry {entry!r} on {disk.target}; "
                                                  f"its entries: {shown}")


def _run(config: GuestConfig, argv: list[str]) -> str:
    disk = boot_disk(config)
    try:
        ran = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        raise BootloaderError(config.name, disk.vdev, f"{config.bootloader} did not finish in {TIMEOUT:g} s") from None
    except OSError as e:
        raise BootloaderError(config.name, disk.vdev, f"{argv[0]} cannot be run: {e.strerror}") from e
    said = (ran.stdout + ran.stderr).decode("utf-8", "replace")
    if ran.returncode != 0:
        raise BootloaderError(config.name, disk.vdev, f"{config.bootloader} failed on {disk.target} (exit status "
                                                      f"{ran.returncode}): {_last_words(said)}")
    return said


def _last_words(said: str) -> str:
    """The line of pygrub's output that says what went wrong (a traceback's last line, its
    exception's name dropped), or the last line."""
    lines = [line.strip() for line in said.splitlines() if line.strip() and not line.startswith(" ")]
    lines = [line for line in lines if not line.startswith(("Traceback", "Using <class"))]
    if not lines:
        return "it said nothing"
    last = re.sub(r"^[A-Za-z]*Error: ", "", lines[-1])
    opening = next((line for line in lines if line.startswith("Error opening")), None)  # which file was missing
    return f"{opening} ({last})" if opening and opening != last else last


def _is_inside(path: str, directory: Path) -> bool:
    return Path(path).parent == directory


def remove_boot_files(domid: int) -> None:
    """The extracted kernel and initramfs, and the output file: once built, or the build undone."""
    directory, output = output_paths(domid)
    shutil.rmtree(directory, ignore_errors=True)
    output.unlink(missing_ok=True)


__all__ = [
    "OUTPUT_ROOT",
    "PVGRUB_IMAGES",
    "PYGRUB_PROGRAM",
    "BootFiles",
    "bootloader_argv",
    "check_bootloader_on_host",
    "parse_simple0",
    "pvgrub_image",
    "remove_boot_files",
    "run_bootloader",
]
