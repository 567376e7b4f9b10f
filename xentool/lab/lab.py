"""A lab: Xen 4.17 in QEMU with a PV dom0 whose root is this host's own, driven through the agent.

`up` is a named sequence of steps, each of which can fail; a failure after QEMU started kills it,
so a failed `up` leaves no process behind:
  check host tools -> claim the state dir (flock) -> fetch packages -> build the initramfs
  -> start QEMU (daemonized) -> wait for dom0 (serial log markers, then the agent's own answer).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from xentool.lab import guest_images, initramfs, link, packages
from xentool.lab.client import AgentConnection, ExecResult
from xentool.lab.errors import AgentError, BootFailed, LabError, LabNotRunning, LabOwnedByOtherUser, NoDiskSpace
from xentool.lab.paths import cache_dir, check_name, state_dir
from xentool.lab.qemu import AGENT_PORTS, QEMU, BootFiles, LabOptions, LabPaths, qemu_argv

AGENT_SCRIPT = Path(__file__).resolve().with_name("agent.py")
DEFAULT_ENV_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Serial-log markers, in boot order: (text, what the lab is doing once it has been seen).
BOOT_PHASES: tuple[tuple[str, str], ...] = (
    ("", "starting Xen"),
    ("Linux version", "dom0 kernel booting"),
    ("xentool-lab: init started", "loading dom0 modules"),
    ("xentool-lab: modules loaded", "mounting the host root over 9p"),
    ("xentool-lab: root filesystem ready", "starting xenstored"),
    ("xentool-lab: xenstored started", "running xen-init-dom0"),
    ("xentool-lab: xen-init-dom0 done", "starting daemons"),
    ("xentool-lab: starting the agent", "starting the agent (Python starts slowly in dom0)"),
    ("xentool-lab: agent ready", "asking the agent"),
)
# What `up` says it does before the boot's phases: with them, every step of a lab's start, in order
# (the CLI's progress bar counts them).
PREPARE_STEPS = ("checking host tools", "fetching Debian packages (hypervisor, kernel)", "building the dom0 initramfs",
                 "installing the example guests' kernel and initramfs", "making the lab's ssh keys", "starting QEMU")
UP_STEPS = PREPARE_STEPS + tuple(what for _, what in BOOT_PHASES)
FATAL_MARKS = ("xentool-lab: FAILED", "Kernel panic", "Panic on CPU", "(XEN) Reboot in", "Hardware Dom0 crashed")


@dataclass
class LabStatus:
    name: str
    running: bool
    state_dir: str
    pid: int | None = None
    dom0_ready: bool = False
    xen_version: str | None = None
    total_memory_mib: int | None = None
    free_memory_mib: int | None = None
    uptime_s: float | None = None
    shares: list[str] = field(default_factory=list)
    xenconsoled: bool = False
    boot_seconds: float | None = None
    already_running: bool = False
    host: int = 1
    link_name: str | None = None  # dom0's name and address on the link between the lab's hosts
    link_address: str | None = None

    def to_json(self) -> dict:
        return asdict(self)


class Lab:
    """One named lab's host.  ``Lab("default").up()`` boots it (or finds it running); ``exec`` runs
    commands as root in its dom0; ``down`` powers it off.  ``Lab("default", host=2)`` is the same
    lab's second host, on the private link with the first (xentool.lab.link); it keeps its state in
    the first's state directory and shares the first's ``share_dir``."""

    def __init__(self, name: str = "default", host: int = 1) -> None:
        self.name = check_name(name)
        self.host = link.check_host(host)
        self.lab_state = state_dir(name)  # the lab's, which is host 1's
        self.state = self.lab_state if host == 1 else self.lab_state / f"host{host}"
        self.cache = cache_dir()
        self.paths = LabPaths(self.state)
        self._artifacts: packages.Artifacts | None = None

    @property
    def label(self) -> str:
        """How messages name it: "lab NAME", or "lab NAME host 2"."""
        return f"lab {self.name}" + (f" host {self.host}" if self.host > 1 else "")

    @property
    def qemu_name(self) -> str:
        return f"xentool-lab-{self._instance}"

    @property
    def _instance(self) -> str:
        return self.name + (f"-host{self.host}" if self.host > 1 else "")

    @property
    def link_name(self) -> str:
        """dom0's name on the lab's link (ssh to it from the other host)."""
        return link.host_name(self.host)

    @property
    def link_address(self) -> str:
        return link.address(self.host)

    @property
    def link_socket(self) -> Path:
        return self.state / "link.sock"

    def peer(self) -> Lab:
        """The lab's other host."""
        return Lab(self.name, 2 if self.host == 1 else 1)

    # -- files ------------------------------------------------------------------------------------

    @property
    def serial_log_path(self) -> Path:
        return self.paths.serial_log

    @property
    def share_dir(self) -> Path:
        """The default shared directory: read-write at this same path on this machine and in every
        host's dom0 (the storage a migrated guest finds on both, as NFS or a SAN would be)."""
        return self.lab_state / "share"

    @property
    def artifacts(self) -> packages.Artifacts:
        """The cached hypervisor, kernel and modules (fetched on first use)."""
        if self._artifacts is None:
            self._artifacts = packages.fetch_all(self.cache)
        return self._artifacts

    @property
    def hypervisor(self) -> Path:
        return self.artifacts.hypervisor

    @property
    def kernel(self) -> Path:
        return self.artifacts.kernel

    @property
    def modules_dir(self) -> Path:
        return self.artifacts.modules_dir

    def serial_log(self) -> str:
        try:
            return self.serial_log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def serial_tail(self, lines: int = 20) -> list[str]:
        return self.serial_log().splitlines()[-lines:]

    @property
    def etc_dir(self) -> Path:
        """dom0's /etc/xentool, kept here across the lab's reboots, for as long as the lab's state
        directory is."""
        return self.state / "etc-xentool"

    @property
    def api_port(self) -> int | None:
        """The port on this machine's 127.0.0.1 that reaches dom0's daemon API (xentoold --listen
        tls://0.0.0.0:16514), if this lab has one."""
        port = self._meta().get("options", {}).get("api_port")
        return int(port) if port else None

    def _meta(self) -> dict:
        try:
            return json.loads((self.state / "lab.json").read_text())
        except (OSError, ValueError):
            return {}

    # -- process ----------------------------------------------------------------------------------

    def _check_owner(self) -> None:
        try:
            st = self.state.stat()
        except FileNotFoundError:
            return
        if st.st_uid != os.geteuid():
            raise LabOwnedByOtherUser(self.name, str(self.state), st.st_uid)

    def pid(self) -> int | None:
        """QEMU's pid if this lab's QEMU runs (checked by its command line, not just the pid file)."""
        try:
            pid = int(self.paths.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        return pid if self._is_our_qemu(pid) else None

    def _is_our_qemu(self, pid: int) -> bool:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        if state in ("Z", "X"):
            return False
        return f"{self.qemu_name},process={self.qemu_name}".encode() in cmdline and \
            any(str(self.paths.pidfile).encode() == arg for arg in cmdline)

    def is_running(self) -> bool:
        return self.pid() is not None

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self._check_owner()
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.state, 0o700)
        fd = os.open(self.state / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            if not self.is_running():
                (self.state / "lock").unlink(missing_ok=True)
            os.close(fd)

    # -- up ---------------------------------------------------------------------------------------

    def up(self, options: LabOptions | None = None, timeout: float = 300.0,
           progress: Callable[[str], None] | None = None) -> LabStatus:
        """Boot the lab and wait until dom0 is ready; if it already runs, report it."""
        options = options or LabOptions()
        options.validate()
        say = progress or (lambda phase: None)
        with self._locked():
            if self.is_running():
                status = self.status()
                status.already_running = True
                return status
            self._remove_leftovers()
            say(PREPARE_STEPS[0])
            packages.check_host_tools()
            free = shutil.disk_usage(self.state).free >> 20
            if free < packages.NEEDED_MIB_FOR_STATE:
                raise NoDiskSpace(str(self.state), packages.NEEDED_MIB_FOR_STATE, free)
            say(PREPARE_STEPS[1])
            art = self.artifacts
            say(PREPARE_STEPS[2])
            initrd = initramfs.build(self.cache, art.busybox, art.modules_dir, art.kernel_release)
            say(PREPARE_STEPS[3])
            guests = guest_images.guests_dir()
            guest_images.install_guest_images(art.kernel, art.busybox, guests, modules_dir=art.modules_dir)
            # Shared, not just visible through the root: dom0 has its own tmpfs on /var/lib/xentool,
            # and files added to the host later would not show through the overlay anyway.
            shares = tuple(dict.fromkeys([str(self.share_dir), str(guests), *options.shares]))
            self.share_dir.mkdir(parents=True, exist_ok=True)
            for share in shares:
                Path(share).mkdir(parents=True, exist_ok=True)
            say(PREPARE_STEPS[4])
            ssh_dir = link.ensure_keys(self.lab_state / "ssh", art.openssh)
            options = LabOptions(options.memory_mib, options.vcpus, options.dom0_memory_mib, options.accel,
                                 options.xenconsoled, shares, image_share=str(guests), api_port=_free_loopback_port(),
                                 etc_dir=str(self.etc_dir), host=self.host, link_socket=str(self.link_socket),
                                 peer_socket=str(self.peer().link_socket), ssh_dir=str(ssh_dir))
            self.etc_dir.mkdir(mode=0o700, exist_ok=True)
            options.validate()
            python = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else os.path.realpath(sys.executable)
            # The daemon of the xentool the lab runs: this environment's, as `make install` puts one in place.
            daemon = Path(sys.prefix) / "bin" / "xentoold"
            files = BootFiles(art.hypervisor, art.kernel, initrd, AGENT_SCRIPT, python,
                              daemon if daemon.exists() and " " not in str(daemon) else None)
            argv = qemu_argv(self._instance, files, options, self.paths)
            for n in range(AGENT_PORTS):
                if len(str(self.paths.agent_socket(n)).encode()) > 107:
                    raise LabError(f"state directory {self.state} is too deep for a Unix socket path; "
                                   "set XDG_RUNTIME_DIR to a shorter directory")
            started = time.monotonic()
            say(PREPARE_STEPS[5])
            self.serial_log_path.write_bytes(b"")
            self._start_qemu(argv)
            meta = {"name": self.name, "host": self.host, "started": time.time(), "options": asdict(options),
                    "argv": argv, "uid": os.geteuid(), "hypervisor_version": art.hypervisor_version,
                    "kernel_release": art.kernel_release}
            (self.state / "lab.json").write_text(json.dumps(meta, indent=2))
            try:
                self._wait_ready(timeout, started, say)
            except BaseException:
                self._kill_qemu()
                self._remove_leftovers()
                raise
            boot = time.monotonic() - started
            meta["boot_seconds"] = round(boot, 2)
            (self.state / "lab.json").write_text(json.dumps(meta, indent=2))
            status = self.status()
            status.boot_seconds = round(boot, 2)
            return status

    def _start_qemu(self, argv: list[str]) -> None:
        qemu_log = self.state / "qemu.log"
        with open(qemu_log, "wb") as log:
            try:
                result = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=60)
            except FileNotFoundError:
                raise packages.MissingTool("qemu", QEMU, "qemu-system-x86") from None
            except subprocess.TimeoutExpired:
                self._kill_qemu()
                raise BootFailed(self._instance, "QEMU did not daemonize within 60 s", self.serial_tail()) from None
        if result.returncode != 0 or not self.is_running():
            self._kill_qemu()
            text = qemu_log.read_text(errors="replace").strip().splitlines()
            raise BootFailed(self._instance, f"QEMU failed to start (exit {result.returncode}): "
                             + (" | ".join(text[-3:]) if text else "no message"), self.serial_tail())

    def _wait_ready(self, timeout: float, started: float, say: Callable[[str], None]) -> None:
        deadline = started + timeout
        phase = -1
        while True:
            log = self.serial_log()
            for i, (mark, _) in enumerate(BOOT_PHASES):
                if i > phase and mark in log:
                    phase = i
                    say(BOOT_PHASES[i][1])
            for mark in FATAL_MARKS:
                if mark in log:
                    time.sleep(1)
                    raise BootFailed(self._instance, f"dom0 did not come up ({mark.strip()!r} in the serial log)",
                                     self.serial_tail())
            if not self.is_running():
                raise BootFailed(self._instance, "QEMU exited while dom0 was booting", self.serial_tail())
            if phase == len(BOOT_PHASES) - 1:
                try:
                    with AgentConnection(self.state, timeout=5) as agent:
                        reply = agent.request("status", timeout=max(5.0, deadline - time.monotonic()), full=False)
                    if reply.get("dom0_ready"):
                        return
                    raise BootFailed(self._instance, f"the agent answers but dom0 is not ready: {reply}", self.serial_tail())
                except (AgentError, TimeoutError):
                    pass
            if time.monotonic() > deadline:
                raise BootFailed(self._instance, f"dom0 was not ready within {timeout:g} s (last step: "
                                 f"{BOOT_PHASES[max(phase, 0)][1]})", self.serial_tail())
            time.sleep(0.2)

    # -- status -----------------------------------------------------------------------------------

    def status(self, full: bool = True) -> LabStatus:
        self._check_owner()
        pid = self.pid()
        meta = self._meta()
        status = LabStatus(self.name, pid is not None, str(self.state), pid, host=self.host)
        if pid is None:
            return status
        status.shares = list(meta.get("options", {}).get("shares", []))
        status.xenconsoled = bool(meta.get("options", {}).get("xenconsoled"))
        status.boot_seconds = meta.get("boot_seconds")
        if meta.get("options", {}).get("link_socket"):
            status.link_name, status.link_address = self.link_name, self.link_address
        if "started" in meta:
            status.uptime_s = round(time.time() - meta["started"], 1)
        try:
            with AgentConnection(self.state, timeout=30) as agent:
                reply = agent.request("status", timeout=90, full=full)
        except (AgentError, TimeoutError):
            return status
        status.dom0_ready = bool(reply.get("dom0_ready"))
        status.xen_version = reply.get("xen_version")
        status.total_memory_mib = reply.get("total_memory_mib")
        status.free_memory_mib = reply.get("free_memory_mib")
        return status

    # -- exec -------------------------------------------------------------------------------------

    def exec(self, argv: list[str], cwd: str | os.PathLike[str] | None = None, env: dict[str, str] | None = None,
             capture: bool = False, timeout: float | None = None, inherit_env: bool = False,
             on_output: Callable[[str, bytes], None] | None = None) -> ExecResult:
        """Run ``argv`` as root in dom0 and return its exit status (and output, with ``capture``).

        ``cwd`` defaults to the caller's working directory (the same path exists in dom0).  The
        environment is a clean root one plus ``env``; ``inherit_env`` starts from this process's
        instead.  stdin is /dev/null.  Without ``capture`` the output streams to this process's
        stdout and stderr as it arrives."""
        if not argv:
            raise LabError("nothing to run: the command is empty")
        if self.pid() is None:
            raise LabNotRunning(self.name, self.host)
        base = dict(os.environ) if inherit_env else {
            "PATH": DEFAULT_ENV_PATH, "HOME": "/root", "LANG": "C.UTF-8", "TERM": os.environ.get("TERM", "dumb")}
        if base.get("XENTOOL_CONNECT") == "lab":  # dom0's xentool must use the Xen it runs on
            base.pop("XENTOOL_CONNECT")
        full_env = {**base, **(env or {})}
        if "/usr/sbin" not in full_env.get("PATH", "").split(":"):
            full_env["PATH"] = full_env.get("PATH", "") + ":/usr/sbin:/sbin"
        result = ExecResult(list(argv), -1)
        out_parts: list[bytes] = []
        err_parts: list[bytes] = []

        def sink(kind: str, data: bytes) -> None:
            if on_output is not None:
                on_output(kind, data)
            elif capture:
                (out_parts if kind == "out" else err_parts).append(data)
            else:
                stream = sys.stdout if kind == "out" else sys.stderr
                stream.flush()
                stream.buffer.write(data)
                stream.buffer.flush()

        with AgentConnection(self.state) as agent:
            result.returncode = agent.exec([str(a) for a in argv], str(cwd or os.getcwd()), full_env, sink, timeout)
        result.stdout, result.stderr = b"".join(out_parts), b"".join(err_parts)
        return result

    # -- down -------------------------------------------------------------------------------------

    def down(self, timeout: float = 60.0) -> bool:
        """Power the lab off (cleanly through the agent, else SIGTERM then SIGKILL); True if it ran."""
        with self._locked():
            pid = self.pid()
            if pid is None:
                self._remove_leftovers()
                return False
            try:
                with AgentConnection(self.state, timeout=10) as agent:
                    agent.request("poweroff", timeout=15)
            except (AgentError, TimeoutError):
                pass
            deadline = time.monotonic() + timeout
            while self._is_our_qemu(pid) and time.monotonic() < deadline:
                # Xen halts rather than powers off when it cannot: no point waiting for that.
                if "halting machine" in "\n".join(self.serial_tail(5)):
                    break
                time.sleep(0.2)
            self._kill_qemu()
            self._remove_leftovers()
            return True

    def _kill_qemu(self) -> None:
        try:
            pid = int(self.paths.pidfile.read_text().strip())
        except (OSError, ValueError):
            return
        for sig, wait in ((signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
            if not self._is_our_qemu(pid):
                return
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return
            end = time.monotonic() + wait
            while self._is_our_qemu(pid) and time.monotonic() < end:
                time.sleep(0.05)

    def _remove_leftovers(self) -> None:
        """No pid file, socket or lock outlives the QEMU they belong to (the serial log stays)."""
        # The state lock itself is held by our caller, which removes it on release.
        names = ["qemu.pid", "link.sock"] + [f"agent-{n}.sock" for n in range(AGENT_PORTS)] + \
                [f"agent-{n}.lock" for n in range(AGENT_PORTS)]
        for name in names:
            (self.state / name).unlink(missing_ok=True)


def up_hosts(name: str, count: int, options: LabOptions | None = None, timeout: float = 300.0,
             progress: Callable[[Lab, str], None] | None = None) -> list[LabStatus]:
    """Hosts 1 to ``count`` of the lab ``name`` up (those running are reported as they are).  They
    are prepared one after the other (they share the cache: packages, the initramfs, guest images)
    and boot side by side.  If one fails, the others this call booted are powered off again."""
    labs = [Lab(name, host) for host in range(1, link.check_host(count) + 1)]
    results: dict[int, LabStatus | BaseException] = {}
    threads = []
    for lab in labs:
        qemu_started = threading.Event()

        def boot(lab: Lab = lab, qemu_started: threading.Event = qemu_started) -> None:
            def say(phase: str) -> None:
                if progress is not None:
                    progress(lab, phase)
                if phase == "starting QEMU":
                    qemu_started.set()
            try:
                results[lab.host] = lab.up(options, timeout=timeout, progress=say)
            except BaseException as e:  # noqa: BLE001 - raised below, once every host has ended its boot
                results[lab.host] = e
            finally:
                qemu_started.set()

        thread = threading.Thread(target=boot, name=f"lab-{lab.host}", daemon=True)
        thread.start()
        qemu_started.wait()
        threads.append(thread)
    for thread in threads:
        thread.join()
    failed = [result for result in results.values() if isinstance(result, BaseException)]
    if failed:
        for lab in labs:
            status = results[lab.host]
            if isinstance(status, LabStatus) and not status.already_running:
                lab.down()
        raise failed[0]
    return [result for _, result in sorted(results.items()) if isinstance(result, LabStatus)]


def hosts_of(name: str) -> list[Lab]:
    """The lab's hosts that have state (host 1 always): what `lab status` and `lab down` cover."""
    first = Lab(name)
    return [first] + [Lab(name, host) for host in range(2, link.MAX_HOSTS + 1) if (first.state / f"host{host}").is_dir()]


def _free_loopback_port() -> int:
    """A TCP port free on 127.0.0.1 now, for QEMU's forward (which binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
