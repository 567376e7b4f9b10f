"""The Debian packages the lab boots: the Xen hypervisor and a dom0-capable kernel, downloaded with
`apt-get download` and unpacked with `dpkg -x` into the user's cache (no root needed), and the host
programs that must already be installed (QEMU, the Xen user tools), each named by its package.

The kernel is whatever Debian's `linux-image-amd64` meta-package currently depends on, so a new
kernel ABI in a point release is picked up without a code change.  The `-cloud-` flavour lacks
CONFIG_XEN_DOM0 and is never chosen.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from xentool.lab.errors import MissingTool, NoDiskSpace, PackageFetchError

HYPERVISOR_PACKAGE = "xen-hypervisor-4.17-amd64"
KERNEL_META_PACKAGE = "linux-image-amd64"
XEN_LIBEXEC = Path("/usr/lib/xen-4.17/bin")

# What must be on the host, and which Debian package brings it.  dom0 runs the host's own root
# filesystem, so the Xen user tools are needed on the host even though the host has no Xen.
HOST_TOOLS: dict[str, tuple[str, str]] = {
    "qemu": ("/usr/bin/qemu-system-x86_64", "qemu-system-x86"),
    "xenstored": (str(XEN_LIBEXEC / "xenstored"), "xen-utils-4.17"),
    "xen-init-dom0": (str(XEN_LIBEXEC / "xen-init-dom0"), "xen-utils-4.17"),
    "xl": (str(XEN_LIBEXEC / "xl"), "xen-utils-4.17"),
    "depmod": ("/sbin/depmod", "kmod"),
    "dpkg-deb": ("/usr/bin/dpkg-deb", "dpkg"),
    "python3 for the dom0 agent": ("/usr/bin/python3", "python3"),
}
BUSYBOX_PACKAGE = "busybox-static"
BUSYBOX_PATH = Path("/bin/busybox")

# A kernel deb unpacks to ~400 MiB; the hypervisor and initramfs are small.
NEEDED_MIB_FOR_KERNEL = 600
NEEDED_MIB_FOR_STATE = 20


@dataclass(frozen=True)
class Artifacts:
    """What the lab boots, all in the cache: reuse ``kernel`` and ``modules_dir`` to build guests."""

    hypervisor: Path  # unpacked (QEMU's multiboot loader cannot read the .gz)
    hypervisor_version: str  # Debian version of the package
    kernel: Path  # vmlinuz, works as dom0 and as a PV/PVH/HVM guest kernel
    kernel_release: str  # "6.1.0-56-amd64"
    modules_dir: Path  # .../lib/modules/<release>, depmod'ed
    busybox: Path
    openssh: OpenSsh


@dataclass(frozen=True)
class OpenSsh:
    """Debian's sshd unpacked in the cache, for dom0s to run on the lab's link: not installed on this
    machine, whose own sshd (if any) the lab never touches, and which gets none it did not have."""

    sshd: Path
    sftp_server: Path
    library_path: str  # LD_LIBRARY_PATH for the libraries this machine lacks (libwrap)


def check_host_tools() -> None:
    for what, (path, package) in HOST_TOOLS.items():
        if not os.access(path, os.X_OK):
            raise MissingTool(what, path, package)


def parse_kernel_dependency(apt_output: str) -> str:
    """The kernel release named by `apt-cache depends linux-image-amd64` (or `apt-cache show`'s
    Depends: line): "linux-image-6.1.0-56-amd64" -> "6.1.0-56-amd64"."""
    releases = re.findall(r"\blinux-image-(\d+\.\d+\.\d+-\d+(?:-[a-z0-9]+)*-amd64)\b", apt_output)
    releases = [r for r in releases if "-cloud-" not in r and "-rt-" not in r]
    if not releases:
        raise ValueError("no linux-image-<release>-amd64 dependency in apt-cache's answer")
    return max(releases, key=_release_key)


def _release_key(release: str) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", release))


def parse_candidate_version(apt_policy_output: str) -> str | None:
    m = re.search(r"^\s*Candidate:\s*(\S+)", apt_policy_output, re.M)
    return None if not m or m.group(1) == "(none)" else m.group(1)


def _run(argv: list[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)


def current_kernel_release(cache: Path) -> str:
    """Ask apt which kernel linux-image-amd64 points at now; offline, fall back to the newest cached one."""
    try:
        result = _run(["apt-cache", "depends", KERNEL_META_PACKAGE])
        if result.returncode == 0:
            return parse_kernel_dependency(result.stdout)
    except (OSError, ValueError):
        pass
    cached = sorted((p.name.removeprefix("linux-") for p in cache.glob("linux-*") if p.is_dir()), key=_release_key)
    if cached:
        return cached[-1]
    raise PackageFetchError(KERNEL_META_PACKAGE, "apt-cache does not know it and nothing is cached; run `apt-get update`")


def _ensure_space(where: Path, needed_mib: int) -> None:
    where.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(where).free // (1 << 20)
    if free < needed_mib:
        raise NoDiskSpace(str(where), needed_mib, free)


def _download_and_unpack(package: str, cache: Path, dest: Path) -> None:
    """`apt-get download` into cache/debs, `dpkg -x` into a temporary directory renamed to ``dest``
    once complete, so an interrupted fetch never looks finished."""
    debs = cache / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    existing = sorted(debs.glob(f"{package}_*.deb"))
    version = None
    policy = _run(["apt-cache", "policy", package]) if shutil.which("apt-cache") else None
    if policy is not None and policy.returncode == 0:
        version = parse_candidate_version(policy.stdout)
    wanted = [d for d in existing if version is None or d.name.startswith(f"{package}_{version.replace(':', '%3a')}_")]
    if not wanted:
        if not shutil.which("apt-get"):
            raise PackageFetchError(package, "apt-get is not available")
        result = _run(["apt-get", "download", package], cwd=debs)
        if result.returncode != 0:
            detail = (result.stderr.strip().splitlines() or ["apt-get download failed"])[-1]
            if "No space left" in result.stderr:
                raise NoDiskSpace(str(debs), NEEDED_MIB_FOR_KERNEL, shutil.disk_usage(debs).free >> 20)
            raise PackageFetchError(package, f"{detail} (is the network up? try `apt-get update`)")
        wanted = sorted(debs.glob(f"{package}_*.deb"), key=lambda p: p.stat().st_mtime)
        if not wanted:
            raise PackageFetchError(package, "apt-get download reported success but left no .deb")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    result = _run(["dpkg-deb", "-x", str(wanted[-1]), str(tmp)])
    if result.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        if "No space left" in result.stderr:
            raise NoDiskSpace(str(cache), NEEDED_MIB_FOR_KERNEL, shutil.disk_usage(cache).free >> 20)
        raise PackageFetchError(package, f"dpkg-deb -x {wanted[-1].name}: {result.stderr.strip()}")
    (tmp / ".deb").write_text(wanted[-1].name + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


def fetch_hypervisor(cache: Path) -> tuple[Path, str]:
    dest = cache / "xen-4.17"
    if not (dest / "xen").is_file():
        _ensure_space(cache, 50)
        _download_and_unpack(HYPERVISOR_PACKAGE, cache, dest)
        gz = dest / "boot" / "xen-4.17-amd64.gz"
        if not gz.is_file():
            found = sorted((dest / "boot").glob("xen-4.17*.gz"))
            if not found:
                raise PackageFetchError(HYPERVISOR_PACKAGE, "no /boot/xen-4.17*.gz in the package")
            gz = found[-1]
        with gzip.open(gz) as src, open(dest / "xen.partial", "wb") as out:
            shutil.copyfileobj(src, out)
        (dest / "xen.partial").rename(dest / "xen")
    deb = (dest / ".deb").read_text().strip() if (dest / ".deb").exists() else ""
    version = deb.split("_")[1] if deb.count("_") >= 2 else "unknown"
    return dest / "xen", version


def fetch_kernel(cache: Path) -> tuple[Path, str, Path]:
    release = current_kernel_release(cache)
    dest = cache / f"linux-{release}"
    modules = dest / "lib" / "modules" / release
    vmlinuz = dest / "boot" / f"vmlinuz-{release}"
    if not vmlinuz.is_file() or not (modules / "modules.dep").is_file():
        if not vmlinuz.is_file():
            _ensure_space(cache, NEEDED_MIB_FOR_KERNEL)
            _download_and_unpack(f"linux-image-{release}", cache, dest)
        result = _run([HOST_TOOLS["depmod"][0], "-b", str(dest), release])
        if result.returncode != 0:
            raise PackageFetchError(f"linux-image-{release}", f"depmod failed: {result.stderr.strip()}")
    return vmlinuz, release, modules


def fetch_busybox(cache: Path) -> Path:
    if BUSYBOX_PATH.is_file():
        return BUSYBOX_PATH
    dest = cache / "busybox"
    if not (dest / "bin" / "busybox").is_file():
        _download_and_unpack(BUSYBOX_PACKAGE, cache, dest)
    return dest / "bin" / "busybox"


OPENSSH_PACKAGES = ("openssh-server", "openssh-sftp-server", "libwrap0")


def fetch_openssh(cache: Path) -> OpenSsh:
    dirs = {package: cache / package for package in OPENSSH_PACKAGES}
    for package, dest in dirs.items():
        if not (dest / ".deb").is_file():
            _download_and_unpack(package, cache, dest)
    libs = ":".join(str(d / sub / "x86_64-linux-gnu") for d in dirs.values() for sub in ("lib", "usr/lib"))
    found = OpenSsh(dirs["openssh-server"] / "usr" / "sbin" / "sshd",
                    dirs["openssh-sftp-server"] / "usr" / "lib" / "openssh" / "sftp-server", libs)
    for path in (found.sshd, found.sftp_server):
        if not path.is_file():
            raise PackageFetchError(path.parts[len(cache.parts)], f"{path} is not in the unpacked package")
    ldd = subprocess.run(["ldd", str(found.sshd)], capture_output=True, text=True, env={"LD_LIBRARY_PATH": libs})
    missing = [line.split()[0] for line in ldd.stdout.splitlines() if "not found" in line]
    if missing:
        raise PackageFetchError("openssh-server", f"sshd needs libraries this machine lacks: {', '.join(missing)}")
    return found


def fetch_all(cache: Path) -> Artifacts:
    """Everything the lab boots, fetching only what the cache lacks."""
    cache.mkdir(parents=True, exist_ok=True)
    hypervisor, version = fetch_hypervisor(cache)
    kernel, release, modules = fetch_kernel(cache)
    busybox = fetch_busybox(cache)
    return Artifacts(hypervisor, version, kernel, release, modules, busybox, fetch_openssh(cache))
