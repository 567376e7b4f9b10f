"""The lab's agent: runs in dom0 (started once by the initramfs's /init, as root), stdlib only.

Transport: virtio-serial ports named ``xentool.agent.N``; QEMU connects each to a Unix socket in the
lab's state directory on the host (agent-N.sock).  A virtio-serial port carries one byte stream and
its QEMU socket accepts one client at a time, so each port serves one request at a time; the lab has
several ports (one thread each here) so that several host commands can run at once.  Nothing listens
on any network address.

Protocol (one JSON object per line, both ways):
  host -> agent  {"id": ID, "op": "exec", "argv": [...], "cwd": DIR, "env": {...}}
                 {"id": ID, "op": "signal", "sig": N}       (while an exec runs: to its process group)
                 {"id": ID, "op": "status"} | {"id": ID, "op": "ping"} | {"id": ID, "op": "poweroff"}
  agent -> host  {"id": ID, "t": "out"|"err", "d": BASE64}  (exec output, streamed as it comes)
                 {"id": ID, "t": "exit", "rc": N}           (last frame of an exec; 128+sig if killed)
                 {"id": ID, "t": "reply", ...}               (status, ping, poweroff)
Every frame carries the request's id, so a host that connects after an interrupted client can skip
whatever was left in the stream for the previous one.  When the host side disconnects during an exec
(the kernel reports POLLHUP on the port), the command's process group is killed, as with a hangup.
"""

from __future__ import annotations

import base64
import ctypes
import errno
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time

PORT_PREFIX = "xentool.agent."
READY_MARK = "xentool-lab: agent ready"


class HostGone(Exception):
    pass


def say(message: str) -> None:
    sys.stdout.write(f"xentool-lab: {message}\n")
    sys.stdout.flush()


def find_ports() -> list[tuple[str, str]]:
    """(name, /dev/vportNpM) of our ports: no udev in dom0, so read the names from sysfs."""
    found = []
    base = "/sys/class/virtio-ports"
    for _ in range(100):
        try:
            for vport in sorted(os.listdir(base)):
                with open(f"{base}/{vport}/name") as f:
                    name = f.read().strip()
                if name.startswith(PORT_PREFIX):
                    found.append((name, f"/dev/{vport}"))
        except OSError:
            pass
        if found:
            return found
        time.sleep(0.1)
    return found


class Port:
    def __init__(self, name: str, dev: str) -> None:
        self.name = name
        self.fd = os.open(dev, os.O_RDWR | os.O_NONBLOCK)
        self.buf = b""

    def connected(self) -> bool:
        p = select.poll()
        p.register(self.fd, select.POLLIN | select.POLLHUP)
        events = p.poll(0)
        return not any(ev & select.POLLHUP for _, ev in events)

    def read_line(self, timeout: float | None) -> dict | None:
        """The next request, or None after ``timeout``.  Raises HostGone if the host is not connected."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while b"\n" not in self.buf:
            p = select.poll()
            p.register(self.fd, select.POLLIN)
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            events = p.poll(None if wait is None else int(wait * 1000))
            if not events:
                return None
            try:
                chunk = os.read(self.fd, 65536)
            except BlockingIOError:
                continue
            if not chunk:  # the host end is closed: the port reads as EOF
                self.buf = b""
                raise HostGone()
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        try:
            return json.loads(line)
        except ValueError:
            return {"op": "invalid", "id": None}

    def send(self, frame: dict) -> None:
        data = (json.dumps(frame, separators=(",", ":")) + "\n").encode()
        while data:
            try:
                n = os.write(self.fd, data)
                data = data[n:]
            except BlockingIOError:
                p = select.poll()
                p.register(self.fd, select.POLLOUT)
                for _, ev in p.poll(1000):
                    if ev & select.POLLHUP:
                        raise HostGone() from None
                if not self.connected():
                    raise HostGone() from None
            except OSError as e:
                if e.errno in (errno.ENOTCONN, errno.EPIPE, errno.ENODEV):
                    raise HostGone() from e
                raise

    def serve(self) -> None:
        while True:
            try:
                request = self.read_line(timeout=None)
            except HostGone:
                time.sleep(0.1)  # the port polls as HUP until a host connects: nothing to block on
                continue
            if request is None:
                continue
            try:
                self.handle(request)
            except HostGone:
                pass
            except Exception as e:  # noqa: BLE001 - never let one bad request kill the port
                try:
                    self.send({"id": request.get("id"), "t": "reply", "error": f"{type(e).__name__}: {e}"})
                except HostGone:
                    pass

    def handle(self, request: dict) -> None:
        op, rid = request.get("op"), request.get("id")
        if op == "exec":
            self.exec(rid, request)
        elif op == "ping":
            self.send({"id": rid, "t": "reply", "pong": True})
        elif op == "status":
            self.send({"id": rid, "t": "reply", **status(request.get("full", True))})
        elif op == "poweroff":
            self.send({"id": rid, "t": "reply", "ok": True})
            threading.Thread(target=poweroff, daemon=True).start()
        elif op == "signal":
            pass  # for an exec that has finished already
        else:
            self.send({"id": rid, "t": "reply", "error": f"unknown op {op!r}"})

    def exec(self, rid: object, request: dict) -> None:
        argv = request["argv"]
        env = request.get("env") or {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        try:
            child = subprocess.Popen(argv, cwd=request.get("cwd") or "/", env=env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:
            rc = 127 if e.errno == errno.ENOENT and not (request.get("cwd") and e.filename == request.get("cwd")) else 126
            self.send({"id": rid, "t": "err", "d": b64(f"xentool lab: {argv[0]}: {e.strerror} ({e.filename})\n")})
            self.send({"id": rid, "t": "exit", "rc": rc})
            return
        assert child.stdout is not None and child.stderr is not None  # both are PIPEs
        streams = {child.stdout.fileno(): "out", child.stderr.fileno(): "err"}
        try:
            while streams:
                ready, _, _ = select.select(list(streams) + [self.fd], [], [], 1.0)
                for fd in ready:
                    if fd == self.fd:
                        try:
                            msg = self.read_line(timeout=0)
                        except HostGone:
                            raise
                        if msg and msg.get("op") == "signal":
                            kill_group(child, int(msg.get("sig", signal.SIGTERM)))
                        continue
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        del streams[fd]
                        continue
                    self.send({"id": rid, "t": streams[fd], "d": base64.b64encode(chunk).decode()})
                if not ready and not self.connected():
                    raise HostGone()
            rc = child.wait()
        except HostGone:
            kill_group(child, signal.SIGHUP)
            time.sleep(0.2)
            kill_group(child, signal.SIGKILL)
            child.wait()
            raise
        finally:
            child.stdout.close()
            child.stderr.close()
        self.send({"id": rid, "t": "exit", "rc": 128 - rc if rc < 0 else rc})


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def kill_group(child: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(child.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def read(path: str, default: str = "") -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def pid_alive(pidfile: str) -> bool:
    try:
        os.kill(int(read(pidfile, "0") or 0), 0)
        return int(read(pidfile, "0") or 0) > 0
    except (OSError, ValueError):
        return False


def status(full: bool) -> dict:
    xen = f"{read('/sys/hypervisor/version/major')}.{read('/sys/hypervisor/version/minor')}" \
          f"{read('/sys/hypervisor/version/extra')}"
    result = {
        "xen_version": xen,
        "capabilities": read("/proc/xen/capabilities"),
        "xenstored": pid_alive("/run/xenstored.pid"),
        "xen_init_dom0": os.path.exists("/run/xentool-lab/init-dom0-done"),
        "xenconsoled": pid_alive("/run/xenconsoled.pid"),
        "dom0_uptime_s": float(read("/proc/uptime", "0 0").split()[0]),
    }
    result["dom0_ready"] = bool(result["xenstored"] and result["xen_init_dom0"] and result["capabilities"] == "control_d")
    if full:
        try:
            out = subprocess.run(["/usr/sbin/xl", "info"], capture_output=True, text=True, timeout=60).stdout
            info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
            info = {k.strip(): v.strip() for k, v in info.items()}
            result["total_memory_mib"] = int(info.get("total_memory", 0))
            result["free_memory_mib"] = int(info.get("free_memory", 0))
            result["nr_cpus"] = int(info.get("nr_cpus", 0))
            result["virt_caps"] = info.get("virt_caps", "")
        except (OSError, ValueError, subprocess.SubprocessError) as e:
            result["xl_info_error"] = str(e)
    return result


def poweroff() -> None:
    """Power the machine off: dom0's power-off is a SCHEDOP_shutdown, on which Xen turns off the
    (emulated) machine and QEMU exits."""
    time.sleep(0.3)  # let the reply leave the port
    libc = ctypes.CDLL(None, use_errno=True)
    libc.sync()
    libc.reboot(0x4321FEDC)  # LINUX_REBOOT_CMD_POWER_OFF


def main() -> None:
    os.umask(0o022)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    ports = find_ports()
    if not ports:
        say("agent: no virtio-serial port named xentool.agent.*; is virtio_console loaded?")
        sys.exit(1)
    threads = []
    for name, dev in ports:
        port = Port(name, dev)
        t = threading.Thread(target=port.serve, name=name, daemon=True)
        t.start()
        threads.append(t)
    print(f"{READY_MARK} ({len(ports)} ports)", flush=True)
    for t in threads:
        t.join()


if __name__ == "__main__":
    main()
