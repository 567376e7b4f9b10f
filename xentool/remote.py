"""Another host's xentool, through its daemon: ``xentool --connect ssh://[user@]HOST[:PORT] CMD``,
``--connect tls://HOST:PORT`` and ``xentool.connect("ssh://HOST")``.

The protocol is the daemon's own (xentool.wire, docs/api.md), carried
- over ssh: ``ssh HOST xentool daemon pipe`` relays it to the remote daemon's socket, as
  libvirt's ``qemu+ssh://`` does with its helper; the remote user's rights decide which socket
  (root and the `xentool` group: the full one; anyone else: the read-only one);
- over TLS with certificates both ways: the daemon listens only when told to
  (``xentoold --listen tls://ADDR:PORT``), and takes clients whose certificate its CA signed (and,
  if it has an ``allowed-clients`` list, whose name is on it).

A :class:`RemoteToolstack` is a Toolstack whose calls go to the remote daemon: the same methods,
the same results and the same exceptions.  What the API does not carry yet (consoles, migration
from there, ...) fails with one line saying so, never on this host by mistake.  Configs are read
and checked here, so their errors point into the local file; the paths inside them (kernels,
disks), a hot-plugged disk's and a save file's are the remote host's.
"""

from __future__ import annotations

import os
import select
import shlex
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, Any
from urllib.parse import parse_qs, urlsplit

from hypercalls.interface import SchedParams
from xentool.api import Toolstack
from xentool.api import connect as connect_here
from xentool.config import config_from_dict, load_config
from xentool.cpupools import CpuPool, PoolScheduling
from xentool.daemon_client import DEFAULT_TLS_PORT, DaemonConnection, DaemonUnavailable, follow_events, tls_socket
from xentool.definitions import Definition
from xentool.domains import DomainDetails, DomainSummary
from xentool.errors import UsageError
from xentool.events import Event
from xentool.host import HostInfo
from xentool.live_devices import DeviceStatus
from xentool.placement import VcpuPlacement
from xentool.saving import SaveResult
from xentool.stats import GuestStats
from xentool.wire import client_tls_dir


def _device(data: dict[str, Any]) -> DeviceStatus:
    """A DeviceStatus from its JSON, where the details sit beside the common fields."""
    common = {key: data[key] for key in ("kind", "devid", "name", "backend", "backend_state", "frontend_state")}
    return DeviceStatus(**common, details={k: v for k, v in data.items() if k not in common})


def _device_data(device: Any) -> Any:
    """A disk or vif as the API carries it: xl's string form or a dict, as given; a model as its dict."""
    return device.model_dump(mode="json", exclude_none=True) if hasattr(device, "model_dump") else device


def connect(url: str | None = None, records_dir: str | Path | None = None) -> Toolstack:
    """A toolstack on this host (see :func:`xentool.api.connect`) or, for ssh:// and tls:// URLs,
    on the host the URL names."""
    url = url if url is not None else os.environ.get("XENTOOL_CONNECT") or None
    if url and url.split("://", 1)[0] in ("ssh", "tls"):
        return RemoteToolstack(url)
    return connect_here(url, records_dir)


def open_connection(url: str, timeout: float | None = 300.0) -> DaemonConnection:
    """A connection to the daemon that ``url`` names (ssh://[user@]HOST[:PORT], tls://HOST[:PORT])."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise UsageError(f"--connect {url}: name a host, as ssh://[user@]HOST[:PORT] or tls://HOST[:PORT]")
    query = parse_qs(parts.query)
    if parts.scheme == "ssh":
        program = query.get("xentool", ["xentool"])[0]
        if not (program == "xentool" or program.startswith("/")):
            raise UsageError(f"--connect {url}: xentool= takes the remote program's absolute path")
        target = f"{parts.username}@{parts.hostname}" if parts.username else parts.hostname
        argv = ["ssh", "-o", "BatchMode=yes", "-e", "none", *(["-p", str(parts.port)] if parts.port else []), "--", target,
                # ssh hands the remote command to the remote user's shell: one quoted word per argument
                shlex.join([program, "daemon", "pipe"])]
        return DaemonConnection(stream=SshStream(argv, timeout), where=url, timeout=timeout)
    if parts.scheme == "tls":
        tls_dir = Path(query["tls_dir"][0]) if "tls_dir" in query else client_tls_dir()
        return DaemonConnection(stream=tls_socket(parts.hostname, parts.port or DEFAULT_TLS_PORT, tls_dir, timeout),
                                where=url, timeout=timeout)
    raise UsageError(f"--connect {url}: use ssh://[user@]HOST[:PORT] or tls://HOST[:PORT]")


class SshStream:
    """The daemon protocol over an ssh process's pipes."""

    def __init__(self, argv: list[str], timeout: float | None) -> None:
        try:
            self._process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except OSError as e:
            raise DaemonUnavailable(f"cannot run ssh ({e.strerror or e}); install openssh-client") from e
        self._timeout = timeout
        self._stdin: IO[bytes] = self._process.stdin  # type: ignore[assignment]
        self._stdout: IO[bytes] = self._process.stdout  # type: ignore[assignment]

    def sendall(self, data: bytes, /) -> None:
        try:
            self._stdin.write(data)
            self._stdin.flush()
        except BrokenPipeError:
            raise DaemonUnavailable(self._why()) from None

    def recv(self, size: int, /) -> bytes:
        ready, _, _ = select.select([self._stdout], [], [], self._timeout)
        if not ready:
            raise TimeoutError("the remote daemon did not answer in time")
        data = os.read(self._stdout.fileno(), size)
        if not data:
            raise DaemonUnavailable(self._why())
        return data

    def settimeout(self, seconds: float | None, /) -> None:
        self._timeout = seconds

    def close(self) -> None:
        for pipe in (self._stdin, self._stdout):
            pipe.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stderr is not None:
            self._process.stderr.close()

    def _why(self) -> str:
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            return "the remote daemon closed the connection"
        said = self._process.stderr.read().decode(errors="replace").strip() if self._process.stderr else ""
        last = said.splitlines()[-1] if said else f"ssh exited with status {self._process.returncode}"
        return f"the remote xentool daemon is not reachable: {last}"


class _NotRemote:
    """Stands in for the hypervisor, records and definitions of a remote toolstack: whatever
    reaches for them is a command the API does not carry yet, and says so."""

    def __init__(self, url: str) -> None:
        self._url = url

    def __getattr__(self, name: str) -> Any:
        raise UsageError(f"this command does not work over {self._url} yet; run it on that host "
                         "(ssh HOST xentool ...)")


class RemoteToolstack(Toolstack):
    def __init__(self, url: str) -> None:  # no super().__init__: nothing here is this host's
        self.url = url
        self.hv = self.records = self.definitions = _NotRemote(url)  # type: ignore[assignment]
        self._conn = open_connection(url)

    def close(self) -> None:
        self._conn.close()

    def _call(self, call: str, /, **args: Any) -> Any:
        return self._conn.call(call, **args)

    def _config_data(self, source: Any, overrides: Sequence[str]) -> dict[str, Any]:
        if isinstance(source, str | Path):
            config = load_config(source, overrides)
        elif isinstance(source, Mapping):
            config = config_from_dict(source)
        else:
            config = source
        return config.as_data()

    # The calls the API carries, with the local toolstack's results.
    def host_info(self) -> HostInfo:
        return HostInfo(**self._call("host_info"))

    def list_domains(self) -> list[DomainSummary]:
        return [DomainSummary(**d) for d in self._call("list")]

    def lookup(self, ref: str | int) -> DomainSummary:
        data = self._call("info", domain=ref)
        return DomainSummary(**{k: v for k, v in data.items() if k in DomainSummary.__dataclass_fields__})

    def info(self, ref: str | int) -> DomainDetails:
        return DomainDetails(**self._call("info", domain=ref))

    def create(self, source: Any, overrides: Sequence[str] = (), paused: bool = False, timings: Any = None) -> DomainSummary:
        return DomainSummary(**self._call("create", config=self._config_data(source, overrides), paused=paused))

    def destroy(self, ref: str | int) -> None:
        self._call("destroy", domain=ref)

    def pause(self, ref: str | int) -> None:
        self._call("pause", domain=ref)

    def unpause(self, ref: str | int) -> None:
        self._call("unpause", domain=ref)

    def resume(self, ref: str | int) -> None:
        self._call("resume", domain=ref)

    def shutdown(self, ref: str | int, wait: bool = False, timeout: float = 60.0, acpi: bool = False) -> str:
        return str(self._call("shutdown", domain=ref, wait=wait, timeout=timeout, acpi=acpi))

    def reboot(self, ref: str | int, wait: bool = True, timeout: float = 60.0) -> str:
        return str(self._call("reboot", domain=ref, wait=wait, timeout=timeout))

    def block_list(self, ref: str | int) -> list[DeviceStatus]:
        return [_device(d) for d in self._call("block_list", domain=ref)]

    def network_list(self, ref: str | int) -> list[DeviceStatus]:
        return [_device(d) for d in self._call("network_list", domain=ref)]

    def block_attach(self, ref: str | int, disk: Any) -> DeviceStatus:
        return _device(self._call("block_attach", domain=ref, disk=_device_data(disk)))

    def block_detach(self, ref: str | int, vdev: str, force: bool = False) -> None:
        self._call("block_detach", domain=ref, vdev=vdev, force=force)

    def network_attach(self, ref: str | int, vif: Any) -> DeviceStatus:
        return _device(self._call("network_attach", domain=ref, vif=_device_data(vif)))

    def network_detach(self, ref: str | int, which: str | int, force: bool = False) -> None:
        self._call("network_detach", domain=ref, which=which, force=force)

    def save(self, ref: str | int, path: str | Path, checkpoint: bool = False, progress: Any = None) -> SaveResult:
        """The file is written on the daemon's host; no progress comes back over the API."""
        return SaveResult(**self._call("save", domain=ref, path=str(path), checkpoint=checkpoint))

    def restore(self, path: str | Path, paused: bool = False, timings: Any = None, progress: Any = None) -> DomainSummary:
        """``path`` is a file on the daemon's host (no progress over the API)."""
        return DomainSummary(**self._call("restore", path=str(path), paused=paused))

    def handle_shutdown(self, ref: str | int) -> str | None:
        return None  # the remote daemon's supervisor keeps the on_* actions

    def rename(self, ref: str | int, new_name: str) -> None:
        self._call("rename", domain=ref, new_name=new_name)

    def vcpu_pin(self, ref: str | int, vcpu: int | str, cpus: str, soft: str = "-") -> None:
        self._call("vcpu_pin", domain=ref, vcpu=vcpu, cpus=cpus, soft=soft)

    def vcpu_list(self, ref: str | int | None = None) -> list[VcpuPlacement]:
        return [VcpuPlacement(**row) for row in self._call("vcpu_list", domain=ref)]

    def sched_get(self, ref: str | int) -> SchedParams:
        return SchedParams(**self._call("sched_get", domain=ref))

    def sched_set(self, ref: str | int, weight: int | None = None, cap: int | None = None,
                  scheduler: str | None = None) -> None:
        self._call("sched_set", domain=ref, weight=weight, cap=cap, scheduler=scheduler)

    def stats(self, ref: str | int | None = None, interval: float = 1.0) -> list[GuestStats]:
        return [GuestStats(**row) for row in self._call("stats", domain=ref, interval=interval)]

    def cpupools(self) -> list[CpuPool]:
        return [CpuPool(**row) for row in self._call("cpupools")]

    def pool_sched_get(self, pool: str = "Pool-0", scheduler: str = "credit2") -> PoolScheduling:
        return PoolScheduling(**self._call("pool_sched_get", pool=pool, scheduler=scheduler))

    def pool_sched_set(self, pool: str = "Pool-0", scheduler: str = "credit2", ratelimit_us: int | None = None,
                       tslice_ms: int | None = None, migration_delay_us: int | None = None) -> PoolScheduling:
        return PoolScheduling(**self._call("pool_sched_set", pool=pool, scheduler=scheduler, ratelimit_us=ratelimit_us,
                                           tslice_ms=tslice_ms, migration_delay_us=migration_delay_us))

    def cpupool_create(self, name: str, scheduler: str = "credit2", cpus: Sequence[int] = ()) -> CpuPool:
        return CpuPool(**self._call("cpupool_create", name=name, scheduler=scheduler, cpus=list(cpus)))

    def cpupool_destroy(self, name: str) -> None:
        self._call("cpupool_destroy", name=name)

    def cpupool_cpu_add(self, name: str, cpu: int) -> None:
        self._call("cpupool_cpu_add", name=name, cpu=cpu)

    def cpupool_cpu_remove(self, name: str, cpu: int) -> None:
        self._call("cpupool_cpu_remove", name=name, cpu=cpu)

    def cpupool_migrate(self, ref: str | int, pool: str) -> None:
        self._call("cpupool_migrate", domain=ref, pool=pool)

    def mem_max(self, ref: str | int, max_mib: int) -> None:
        self._call("mem_max", domain=ref, max_mib=max_mib)

    def mem_set(self, ref: str | int, memory_mib: int) -> None:
        self._call("mem_set", domain=ref, memory_mib=memory_mib)

    def vcpu_set(self, ref: str | int, vcpus: int) -> None:
        self._call("vcpu_set", domain=ref, vcpus=vcpus)

    def wait_for_state(self, ref: str | int, states: Sequence[str], timeout: float = 60.0) -> str:
        return str(self._call("wait", domain=ref, states=list(states), timeout=timeout))

    def define(self, source: Any, overrides: Sequence[str] = ()) -> Definition:
        return Definition(**self._call("define", config=self._config_data(source, overrides)))

    def undefine(self, name: str) -> None:
        self._call("undefine", name=name)

    def start(self, name: str, paused: bool = False) -> DomainSummary:
        return DomainSummary(**self._call("start", name=name, paused=paused))

    def set_autostart(self, name: str, on: bool, order: int | None = None, delay: float | None = None) -> Definition:
        return Definition(**self._call("autostart", name=name, on=on, order=order, delay=delay))

    def defined(self) -> list[Definition]:
        return [Definition(**d) for d in self._call("defined")]

    def defined_guest(self, name: str) -> Definition:
        return Definition(**self._call("defined_guest", name=name))

    def events(self, names: Sequence[str] = (), subscribed: Callable[[], None] | None = None) -> Iterator[Event]:
        return follow_events(names, subscribed=subscribed, connect=lambda: open_connection(self.url, timeout=None))


__all__ = ["RemoteToolstack", "connect", "open_connection"]
