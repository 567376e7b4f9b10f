"""The dom0 initramfs: busybox, the kernel modules dom0 needs (with their dependencies, in load
order), and an /init that mounts the host's root over 9p with a tmpfs overlay, starts the Xen
daemons a Debian dom0 starts for a toolstack, and then the lab's agent.

The cpio archive is written here (newc format) rather than with cpio(1), so that /dev/console can
be a real device node without root: the kernel opens it for init's stdout before any devtmpfs exists.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import stat
from dataclasses import dataclass
from pathlib import Path

from xentool.lab import link

# Load order matters: virtio before virtio_ring fails with unknown symbols (lab-notes).  The
# dependency walk below would sort that out, but the list is kept in a working order regardless.
DOM0_MODULES: tuple[str, ...] = (
    "netfs", "fscache", "9pnet", "virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
    "virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_console",
    "xen-privcmd", "xen-evtchn", "xen-gntdev", "xen-gntalloc", "xenfs", "xen-blkback", "xen-netback",
    # for guests' devices: file-backed disks, bridged and routed vifs
    "loop", "bridge", "tun",
    # the network of the daemon's API forward (xentool.lab.qemu DOM0_API_ADDRESS)
    "virtio_net",
)


def _norm(name: str) -> str:
    return name.replace("-", "_")


@dataclass(frozen=True)
class ModuleTree:
    """A kernel's modules.dep, modules.builtin: enough to list what to load and in which order."""

    deps: dict[str, list[str]]  # normalized module name -> its direct+indirect deps (as listed)
    paths: dict[str, str]  # normalized module name -> path relative to the module dir
    builtin: frozenset[str]

    @classmethod
    def parse(cls, modules_dep: str, modules_builtin: str = "") -> ModuleTree:
        deps: dict[str, list[str]] = {}
        paths: dict[str, str] = {}
        for line in modules_dep.splitlines():
            if ":" not in line:
                continue
            path, _, rest = line.partition(":")
            name = _norm(Path(path).name.split(".ko")[0])
            paths[name] = path
            deps[name] = [_norm(Path(p).name.split(".ko")[0]) for p in rest.split()]
        builtin = frozenset(_norm(Path(p).name.split(".ko")[0]) for p in modules_builtin.split())
        return cls(deps, paths, builtin)

    @classmethod
    def load(cls, modules_dir: Path) -> ModuleTree:
        builtin = modules_dir / "modules.builtin"
        return cls.parse((modules_dir / "modules.dep").read_text(),
                         builtin.read_text() if builtin.exists() else "")

    def load_order(self, wanted: tuple[str, ...] | list[str]) -> list[str]:
        """Module paths (relative) to insmod in order: each module after everything it needs."""
        order: list[str] = []
        seen: set[str] = set()

        def visit(name: str, chain: tuple[str, ...]) -> None:
            if name in seen or name in self.builtin:
                return
            if name not in self.paths:
                raise KeyError(f"kernel module {name!r} is neither a module nor built in"
                               + (f" (needed by {chain[-1]})" if chain else ""))
            seen.add(name)
            for dep in self.deps.get(name, []):
                visit(dep, chain + (name,))
            order.append(self.paths[name])

        for module in wanted:
            visit(_norm(module), ())
        return order


# The dom0 /init.  Parameters come from the dom0 kernel command line (xentool.*=), so one image
# serves every lab; everything it says goes to hvc0, i.e. the serial log, prefixed "xentool-lab:".
INIT_SCRIPT = r"""#!/bin/busybox sh
/bin/busybox mkdir -p /proc /sys /dev /usr/bin /usr/sbin /sbin
/bin/busybox --install -s
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
say() { echo "xentool-lab: $*" > /dev/console; }
fail() { say "FAILED: $*"; sleep 2; poweroff -f; }
say "init started"

AGENT= SHARES= IMAGESHARE= XENCONSOLED=0 PYTHON=/usr/bin/python3 PORTS=1 DAEMON= APINET= ETC= HOST= SSHDIR=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    xentool.agent=*) AGENT="${arg#xentool.agent=}" ;;
    xentool.python=*) PYTHON="${arg#xentool.python=}" ;;
    xentool.share=*) SHARES="$SHARES ${arg#xentool.share=}" ;;
    xentool.imageshare=*) IMAGESHARE="${arg#xentool.imageshare=}" ;;
    xentool.xenconsoled=*) XENCONSOLED="${arg#xentool.xenconsoled=}" ;;
    xentool.daemon=*) DAEMON="${arg#xentool.daemon=}" ;;
    xentool.apinet=*) APINET="${arg#xentool.apinet=}" ;;
    xentool.etc=*) ETC="${arg#xentool.etc=}" ;;
    xentool.host=*) HOST="${arg#xentool.host=}" ;;
    xentool.ssh=*) SSHDIR="${arg#xentool.ssh=}" ;;
  esac
done

for m in $(cat /modules.order); do
  insmod "/modules/$m" || fail "insmod $m"
done
say "modules loaded"

mkdir -p /hostroot /overlay /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=512000 hostroot /hostroot || fail "mount host root (9p)"
mount -t tmpfs -o mode=0755 overlay-upper /overlay
mkdir -p /overlay/upper /overlay/work
mount -t overlay -o lowerdir=/hostroot,upperdir=/overlay/upper,workdir=/overlay/work overlay /newroot \
  || fail "mount overlay"
R=/newroot
mount -t proc proc $R/proc
mount -t sysfs sysfs $R/sys
mount -t devtmpfs devtmpfs $R/dev
mkdir -p $R/dev/pts $R/dev/shm
mount -t devpts -o gid=5,mode=0620,ptmxmode=0666 devpts $R/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $R/dev/shm
mount -t xenfs xenfs $R/proc/xen || fail "mount xenfs"
mount -t tmpfs -o mode=0755 tmpfs $R/run
[ -L $R/var/run ] || mount -t tmpfs -o mode=0755 tmpfs $R/var/run
for d in /var/lib/xen /var/log/xen /var/lib/xentool /var/lib/xenstored; do
  mkdir -p $R$d && mount -t tmpfs -o mode=0755 tmpfs $R$d
done
mkdir -p $R/run/xenstored $R/run/xen $R/run/xentool-lab $R/var/log/xen/console
# QEMU (an HVM guest's device model) reads option ROMs straight into guest memory that it maps from
# Xen.  9p's zero-copy reads cannot fill such foreign pages, and dom0 hangs in them: keep QEMU's
# firmware in RAM.
for d in /usr/share/seabios /usr/share/qemu /usr/lib/ipxe/qemu; do
  if [ -d "$R$d" ]; then
    mkdir -p "/firmware$d" && cp -RL "$R$d/." "/firmware$d/" && mount -o bind "/firmware$d" "$R$d" \
      || fail "firmware $d in RAM"
  fi
done
n=0
for share in $SHARES; do
  n=$((n+1))
  # The guest image share is read through dom0's page cache (cache=loose), so QEMU can read a disk
  # image from it straight into guest memory (uncached 9p reads cannot fill foreign pages; see
  # above).  The others stay uncached: what one side writes, the other reads at once.
  cache=none; [ "$share" = "$IMAGESHARE" ] && cache=loose
  mkdir -p "$R$share" && mount -t 9p -o "trans=virtio,version=9p2000.L,msize=512000,cache=$cache" "share$n" "$R$share" \
    || fail "mount share $share"
done
if [ "$ETC" = 1 ]; then
  # xentool's /etc (defined guests, the daemon's settings): the lab's own, kept across its reboots.
  mkdir -p $R/etc/xentool && mount -t 9p -o trans=virtio,version=9p2000.L,msize=512000,cache=none etcxentool $R/etc/xentool \
    || fail "mount /etc/xentool"
fi
# The loopback interface, as any system brings it up: QEMU serves VNC on 127.0.0.1.
ip link set lo up || fail "loopback up"
nic_with_mac() { for n in /sys/class/net/*; do [ "$(cat "$n/address")" = "$1" ] && { basename "$n"; return; }; done; }
if [ -n "$APINET" ]; then
  # The daemon's API forward: a network that leads nowhere else.
  nic=$(nic_with_mac @API_MAC@)
  [ -n "$nic" ] && ip addr add "$APINET/24" dev "$nic" && ip link set "$nic" up || fail "API network ($nic)"
fi
if [ -n "$HOST" ]; then
  # The link to the lab's other host (xentool.lab.link): this dom0's address and name on it.
  nic=$(nic_with_mac "$(printf '@LINK_MAC_PREFIX@:%02x' "$HOST")")
  [ -n "$nic" ] && ip addr add "@NETWORK@.$HOST/24" dev "$nic" && ip link set "$nic" up || fail "link network ($nic)"
  hostname "xen$HOST"
  for h in $(seq 1 @MAX_HOSTS@); do echo "@NETWORK@.$h xen$h" >> $R/etc/hosts; done
else
  hostname xentool-lab
fi
if [ -n "$SSHDIR" ] && [ -n "$HOST" ]; then
  # sshd on the link only, with the lab's keys (never this machine's): as root with the lab's
  # client key, from the other host.  Debian's sshd, unpacked in the lab's cache (sshd.env).
  . "$R$SSHDIR/sshd.env"
  K=/run/xentool-lab/ssh
  mkdir -p $R$K $R/run/sshd $R/etc/ssh/ssh_config.d && chmod 700 $R$K
  cp "$R$SSHDIR/host$HOST/ssh_host_ed25519_key" "$R$SSHDIR/client/id_ed25519" "$R$SSHDIR/known_hosts" \
     "$R$SSHDIR/authorized_keys" $R$K/ && chmod 600 $R$K/* || fail "ssh keys"
  # Without PAM, sshd refuses an account whose password is locked ("!"): root logs in by key only.
  sed -i 's/^root:![^:]*:/root:*:/' $R/etc/shadow 2>/dev/null || true
  grep -q '^sshd:' $R/etc/passwd || echo 'sshd:x:998:65534:sshd privilege separation:/run/sshd:/usr/sbin/nologin' >> $R/etc/passwd
  printf '%s\n' "ListenAddress @NETWORK@.$HOST" "HostKey $K/ssh_host_ed25519_key" "AuthorizedKeysFile $K/authorized_keys" \
    "PermitRootLogin prohibit-password" "PasswordAuthentication no" "KbdInteractiveAuthentication no" "UsePAM no" \
    "PidFile /run/sshd.pid" "Subsystem sftp $SFTP" > $R$K/sshd_config
  printf '%s\n' "Host xen* @NETWORK@.*" "  User root" "  IdentityFile $K/id_ed25519" "  IdentitiesOnly yes" \
    "  UserKnownHostsFile $K/known_hosts" "  StrictHostKeyChecking yes" "  BatchMode yes" \
    > $R/etc/ssh/ssh_config.d/xentool-lab.conf
  # bash sources ~/.bashrc for every command sshd runs; this machine's root's (pyenv init, say)
  # took 10 s of each ssh session under TCG.  dom0's root gets an empty one, in the overlay only.
  home=$(awk -F: '$1 == "root" {print $6}' $R/etc/passwd)
  [ -n "$home" ] && [ -f "$R$home/.bashrc" ] && echo "# the Xen lab's dom0: this machine's ~/.bashrc is not run here" > "$R$home/.bashrc"
  chroot $R env -i LD_LIBRARY_PATH="$LIBS" PATH=/usr/sbin:/usr/bin:/sbin:/bin "$SSHD" -f $K/sshd_config -E /var/log/sshd.log \
    || fail "sshd ($(tail -n 3 $R/var/log/sshd.log 2>/dev/null))"
  say "sshd started on xen$HOST"
fi
say "root filesystem ready (host / over 9p, tmpfs overlay)"
grep -q control_d $R/proc/xen/capabilities || fail "not a control domain: $(cat $R/proc/xen/capabilities)"

chroot $R /usr/lib/xen-4.17/bin/xenstored --pid-file /run/xenstored.pid > /dev/console 2>&1 \
  || fail "xenstored"
say "xenstored started"
chroot $R /usr/lib/xen-4.17/bin/xen-init-dom0 > /dev/console 2>&1 || fail "xen-init-dom0"
touch $R/run/xentool-lab/init-dom0-done
say "xen-init-dom0 done"
if [ "$XENCONSOLED" = 1 ]; then
  chroot $R /usr/lib/xen-4.17/bin/xenconsoled --pid-file=/run/xenconsoled.pid > /dev/console 2>&1 \
    || fail "xenconsoled"
  say "xenconsoled started"
fi

[ -n "$AGENT" ] || fail "no xentool.agent= on the kernel command line"
say "starting the agent"
cd $R
chroot $R env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
  "$PYTHON" -I -S "$AGENT" < /dev/null > /dev/console 2>&1 &
if [ -n "$DAEMON" ]; then
  # xentoold as contrib/systemd/xentoold.service runs it: in the foreground, with a clean
  # environment, started again 2 s after it ends (Restart=always).  A test that needs it gone for a
  # while holds it back with /run/xentool-lab/daemon.hold (systemctl stop, in a real dom0).
  ( while true; do
      while [ -e $R/run/xentool-lab/daemon.hold ]; do sleep 1; done
      chroot $R env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 \
        "$DAEMON" --wait < /dev/null > /dev/null 2>&1
      sleep 2
    done ) &
  say "xentoold started"
fi
# PID 1 stays this shell: it reaps what the daemons leave behind and never exits.
while true; do wait; sleep 1; done
"""


def init_script() -> str:
    """INIT_SCRIPT with the link's constants (xentool.lab.link) filled in."""
    return (INIT_SCRIPT.replace("@API_MAC@", link.API_MAC).replace("@LINK_MAC_PREFIX@", link.link_mac(1)[:-3])
            .replace("@NETWORK@", link.NETWORK).replace("@MAX_HOSTS@", str(link.MAX_HOSTS)))


@dataclass(frozen=True)
class Entry:
    """One file in the initramfs: path inside it, mode, and content or device numbers."""

    path: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def contents(busybox: Path, modules_dir: Path, wanted: tuple[str, ...] = DOM0_MODULES) -> list[Entry]:
    """What goes into the dom0 initramfs, in archive order (directories before their files)."""
    order = ModuleTree.load(modules_dir).load_order(wanted)
    entries = [Entry(d, stat.S_IFDIR | 0o755) for d in ("bin", "dev", "proc", "sys", "modules", "newroot")]
    entries.append(Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1)))
    entries.append(Entry("bin/busybox", stat.S_IFREG | 0o755, busybox.read_bytes()))
    entries.append(Entry("init", stat.S_IFREG | 0o755, init_script().encode()))
    flat = [Path(p).name for p in order]
    entries.append(Entry("modules.order", stat.S_IFREG | 0o644, ("\n".join(flat) + "\n").encode()))
    for rel, name in zip(order, flat, strict=True):
        entries.append(Entry(f"modules/{name}", stat.S_IFREG | 0o644, (modules_dir / rel).read_bytes()))
    return entries


def newc_archive(entries: list[Entry]) -> bytes:
    """A cpio "newc" archive (what the kernel unpacks as an initramfs)."""
    buf = io.BytesIO()

    def pad(n: int) -> None:
        buf.write(b"\0" * ((4 - n % 4) % 4))

    def header(ino: int, path: str, mode: int, size: int, rdev: tuple[int, int], nlink: int) -> None:
        name = path.encode() + b"\0"
        fields = (ino, mode, 0, 0, nlink, 0, size, 0, 0, rdev[0], rdev[1], len(name), 0)
        buf.write(b"070701" + b"".join(b"%08X" % f for f in fields))
        buf.write(name)
        pad(110 + len(name))

    for ino, e in enumerate(entries, start=1):
        header(ino, e.path, e.mode, len(e.data), e.rdev, 2 if stat.S_ISDIR(e.mode) else 1)
        buf.write(e.data)
        pad(len(e.data))
    header(0, "TRAILER!!!", 0, 0, (0, 0), 1)
    return buf.getvalue()


def build(cache: Path, busybox: Path, modules_dir: Path, kernel_release: str) -> Path:
    """Build (or reuse) the dom0 initramfs for this kernel; the file name is a hash of its content."""
    entries = contents(busybox, modules_dir)
    archive = newc_archive(entries)
    digest = hashlib.sha256(archive).hexdigest()[:16]
    path = cache / f"initrd-{kernel_release}-{digest}.cpio.gz"
    if not path.exists():
        tmp = path.with_suffix(".partial")
        tmp.write_bytes(gzip.compress(archive, compresslevel=6, mtime=0))
        tmp.rename(path)
        for old in cache.glob(f"initrd-{kernel_release}-*.cpio.gz"):
            if old != path:
                old.unlink(missing_ok=True)
    return path
