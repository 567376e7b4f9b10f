"""The QEMU command line that boots Xen with a PV dom0 (lab-notes: the line that works under TCG).

Plain data in, argv out, so the line is testable without QEMU.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from xentool.errors import UsageError
from xentool.lab.link import API_MAC, link_mac

QEMU = "/usr/bin/qemu-system-x86_64"
# `-cpu max` crashes dom0 under TCG (create_bounce_frame); svm+npt give Xen HVM with HAP.
TCG_CPU = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+svm,+npt"
AGENT_PORTS = 4


@dataclass(frozen=True)
class LabOptions:
    """What `lab up` was asked for."""

    memory_mib: int = 3072
    vcpus: int = 2
    dom0_memory_mib: int = 1024
    accel: str = "tcg"
    xenconsoled: bool = False
    shares: tuple[str, ...] = ()  # host directories exported read-write at the same path in dom0
    # The one of them that holds guest images (disks, ISOs): dom0 reads it through its page cache,
    # which QEMU needs, at the price of not seeing a host's later change to a file it has read.
    image_share: str | None = None
    # A TCP port on this machine's 127.0.0.1 that QEMU forwards to dom0's port DOM0_API_PORT (the
    # daemon's TLS API, when dom0's daemon is told to listen), over a network with no way out.
    api_port: int | None = None
    # A directory of this machine's that dom0 mounts as its /etc/xentool, so that what xentool
    # keeps there (defined guests, the daemon's settings) outlives a reboot of the lab, as /etc
    # outlives a reboot of a real dom0 (dom0's root is otherwise a tmpfs over the host's).
    etc_dir: str | None = None
    # Which of the lab's hosts this is (its address and name on the link), its end of the link (a
    # Unix datagram socket QEMU binds) and the other host's end, and the lab's ssh material.
    host: int = 1
    link_socket: str | None = None
    peer_socket: str | None = None
    ssh_dir: str | None = None

    def validate(self) -> None:
        if self.accel not in ("tcg", "kvm"):
            raise UsageError(f"--accel {self.accel!r}: use tcg or kvm")
        if self.vcpus < 1:
            raise UsageError("--vcpus must be at least 1")
        if self.dom0_memory_mib < 256:
            raise UsageError("--dom0-memory must be at least 256 MiB")
        if self.memory_mib < self.dom0_memory_mib + 128:
            raise UsageError(f"--memory {self.memory_mib} MiB leaves nothing beside dom0's {self.dom0_memory_mib} MiB")
        for share in (*self.shares, *(path for path in (self.etc_dir, self.link_socket, self.peer_socket, self.ssh_dir) if path)):
            if not share.startswith("/") or any(c in share for c in " ,\t\n\"'"):
                raise UsageError(f"share {share!r}: use an absolute path without spaces, commas or quotes")


@dataclass(frozen=True)
class BootFiles:
    hypervisor: Path
    kernel: Path
    initrd: Path
    agent: Path  # the agent script, at the same path in dom0 (dom0's root is the host's)
    python: str = "/usr/bin/python3"
    # xentoold, which dom0's init starts as contrib/systemd's unit does (None: no daemon at boot)
    daemon: Path | None = None


@dataclass(frozen=True)
class LabPaths:
    state: Path
    pidfile: Path = field(init=False)
    serial_log: Path = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "pidfile", self.state / "qemu.pid")
        object.__setattr__(self, "serial_log", self.state / "serial.log")

    def agent_socket(self, n: int) -> Path:
        return self.state / f"agent-{n}.sock"


DOM0_API_ADDRESS = "10.0.2.15"  # dom0's address on the API forward's network (QEMU user networking's default)
DOM0_API_PORT = 16514


def xen_cmdline(opts: LabOptions) -> str:
    mem = opts.dom0_memory_mib
    # guest_loglvl=all: `xl dmesg` then tells why a guest died (a triple fault, a bad hypercall),
    # which is what a failed lab test needs to show.  That is many lines per HVM guest: a 1 MiB
    # console ring (16 KiB by default) keeps the boot messages a session's worth of guests later.
    return f"dom0_mem={mem}M,max:{mem}M console=com1 com1=115200,8n1 guest_loglvl=all conring_size=1M"


def dom0_cmdline(files: BootFiles, opts: LabOptions) -> str:
    parts = ["console=hvc0", "earlyprintk=xen", "rdinit=/init", f"xentool.agent={files.agent}",
             f"xentool.python={files.python}"]
    parts += [f"xentool.share={s}" for s in opts.shares]
    if opts.image_share:
        parts.append(f"xentool.imageshare={opts.image_share}")
    if opts.xenconsoled:
        parts.append("xentool.xenconsoled=1")
    if files.daemon is not None:
        parts.append(f"xentool.daemon={files.daemon}")
    if opts.api_port is not None:
        parts.append(f"xentool.apinet={DOM0_API_ADDRESS}")
    if opts.etc_dir is not None:
        parts.append("xentool.etc=1")
    if opts.link_socket is not None:
        parts.append(f"xentool.host={opts.host}")
    if opts.ssh_dir is not None:
        parts.append(f"xentool.ssh={opts.ssh_dir}")
    return " ".join(parts)


def qemu_argv(name: str, files: BootFiles, opts: LabOptions, paths: LabPaths, qemu: str = QEMU) -> list[str]:
    """QEMU's argv: daemonized, serial to the state dir's log, the host's / read-only over 9p, the
    shares read-write, and the agent's virtio-serial ports on Unix sockets (never a network address)."""
    for path in (files.kernel, files.initrd):
        if "," in str(path):
            raise ValueError(f"{path}: QEMU's -initrd list cannot hold a path with a comma")
    accel = opts.accel
    cpu = "host" if accel == "kvm" else TCG_CPU
    modules = f"{files.kernel} {dom0_cmdline(files, opts)},{files.initrd}"
    argv = [
        qemu,
        "-name", f"xentool-lab-{name},process=xentool-lab-{name}",
        "-machine", f"q35,accel={accel}",
        "-cpu", cpu,
        "-m", str(opts.memory_mib),
        "-smp", str(opts.vcpus),
        "-display", "none", "-vga", "none", "-monitor", "none", "-parallel", "none",
        "-serial", f"file:{paths.serial_log}",
        "-no-reboot",
        "-kernel", str(files.hypervisor),
        "-append", xen_cmdline(opts),
        "-initrd", modules,
        "-fsdev", "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap",
        "-device", "virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot",
    ]
    for n, share in enumerate(opts.shares, start=1):
        argv += ["-fsdev", f"local,id=share{n},path={share},security_model=none,multidevs=remap",
                 "-device", f"virtio-9p-pci,fsdev=share{n},mount_tag=share{n}"]
    if opts.etc_dir is not None:
        argv += ["-fsdev", f"local,id=etc,path={opts.etc_dir},security_model=none",
                 "-device", "virtio-9p-pci,fsdev=etc,mount_tag=etcxentool"]
    if opts.api_port is not None:
        # restrict=on: dom0 reaches nothing through it; hostfwd listens on this machine's loopback only.
        argv += ["-netdev", f"user,id=api,restrict=on,net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:{opts.api_port}-{DOM0_API_ADDRESS}:"
                            f"{DOM0_API_PORT}",
                 "-device", f"virtio-net-pci,netdev=api,mac={API_MAC}"]
    if opts.link_socket is not None and opts.peer_socket is not None:
        # The link to the lab's other host: datagrams between two Unix sockets, no address of this machine's.
        argv += ["-netdev", f"dgram,id=link,local.type=unix,local.path={opts.link_socket},"
                            f"remote.type=unix,remote.path={opts.peer_socket}",
                 "-device", f"virtio-net-pci,netdev=link,mac={link_mac(opts.host)}"]
    if opts.api_port is None and opts.link_socket is None:
        argv += ["-nic", "none"]
    argv += ["-device", "virtio-serial-pci,id=agentbus"]
    for n in range(AGENT_PORTS):
        argv += ["-chardev", f"socket,id=agent{n},path={paths.agent_socket(n)},server=on,wait=off",
                 "-device", f"virtserialport,bus=agentbus.0,chardev=agent{n},name=xentool.agent.{n}"]
    argv += ["-daemonize", "-pidfile", str(paths.pidfile)]
    return argv
