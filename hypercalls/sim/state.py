"""The simulated host's state, and how every process that names the same directory shares it.

A simulated host is a directory: ``state.json`` holds everything (domains, event channels, the
xenstore tree, the watch change log, pending injected failures, the console ring) and ``lock`` is
the file every operation ``flock``s exclusively.  An operation loads the state, changes it, writes
it back atomically (a temporary file, then ``os.replace``) and unlocks, so that several commands,
forked processes or threads working on one host see each other's changes as they would on one
real machine, and a crash in the middle of an operation never leaves a half-written file.

The data classes here are plain records; the rules that govern them live in ``tree`` (xenstore),
``guest`` (what a simulated guest does) and ``hypervisor`` (the hypercalls).
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypercalls.errors import XenError
from hypercalls.interface import GuestType, ShutdownReason, XenVersion, XsPerm, XsPermission

STATE_FILE = "state.json"
LOCK_FILE = "lock"
FORMAT = 1  # bumped when the layout of state.json changes incompatibly

MAX_CHANGES = 4096  # watch change log entries kept; a connection further behind gets a catch-up event
MAX_DMESG_LINES = 2000

XEN_VERSION = XenVersion(4, 17, ".7")
CAPABILITIES = "xen-3.0-x86_64 hvm-3.0-x86_32 hvm-3.0-x86_32p hvm-3.0-x86_64"
VIRT_CAPS = ("pv", "hvm", "hap")
DOM0_UUID = "00000000-0000-0000-0000-000000000000"
DOM0_MEMORY_MIB = 1024
DEFAULT_MEMORY_MIB = 8192
DEFAULT_CPUS = 4
SIM_SCHEDULER = "credit2"  # Xen 4.17's default
CPU_KHZ = 2_000_000

PAGES_PER_MIB = 256


@dataclass(frozen=True, slots=True)
class Node:
    """One xenstore node.  Immutable: a change replaces the node (and gives it a new ``gen``).

    ``gen`` is the value of the host's generation counter when the node's value, permissions or
    child list last changed; transactions compare it to detect concurrent changes.
    """

    value: str
    perms: tuple[XsPermission, ...]
    gen: int
    children: tuple[str, ...] = ()

    def to_json(self) -> list[Any]:
        return [self.value, [[p.domid, p.perm.value] for p in self.perms], self.gen, list(self.children)]

    @classmethod
    def from_json(cls, data: list[Any]) -> Node:
        value, perms, gen, children = data
        return cls(value, tuple(XsPermission(d, XsPerm(p)) for d, p in perms), gen, tuple(children))


@dataclass
class Domain:
    """A domain as the simulated hypervisor keeps it (more than xc_domain_getinfo reports)."""

    domid: int
    uuid: str
    guest_type: GuestType
    max_vcpus: int
    online_vcpus: int
    paused: bool = True
    shutdown_reason: ShutdownReason | None = None  # None while not shut down
    tot_pages: int = 0
    max_pages: int = 0  # 0: not set yet (the builder then sets it to what it populates)
    cpu_time_ns: int = 0  # accumulated up to running_since_ns
    running_since_ns: int | None = None  # wall clock (time.time_ns) when it last started running
    built: bool = False
    booted_ns: int | None = None  # when the guest first ran; console timestamps count from it
    kernel: str | None = None
    cmdline: str = ""
    console: str = ""
    affinity: dict[int, list[int]] = field(default_factory=dict)  # vcpu -> hard affinity; unset: every cpu
    soft_affinity: dict[int, list[int]] = field(default_factory=dict)
    weight: int = 256  # credit2's, as Xen's default scheduler gives a new domain
    cap: int = 0
    cpupool: int = 0
    evtchns: dict[int, int] = field(default_factory=dict)  # port -> remote domid
    max_evtchn_port: int = -1
    hap: bool = False

    @property
    def is_shutdown(self) -> bool:
        return self.shutdown_reason is not None

    @property
    def is_running(self) -> bool:
        return not self.paused and not self.is_shutdown

    def cpu_time(self, now_ns: int) -> int:
        extra = now_ns - self.running_since_ns if self.running_since_ns is not None else 0
        return self.cpu_time_ns + max(0, extra)

    def to_json(self) -> dict[str, Any]:
        return {
            "domid": self.domid,
            "uuid": self.uuid,
            "guest_type": self.guest_type.value,
            "max_vcpus": self.max_vcpus,
            "online_vcpus": self.online_vcpus,
            "paused": self.paused,
            "shutdown_reason": None if self.shutdown_reason is None else int(self.shutdown_reason),
            "tot_pages": self.tot_pages,
            "max_pages": self.max_pages,
            "cpu_time_ns": self.cpu_time_ns,
            "running_since_ns": self.running_since_ns,
            "built": self.built,
            "booted_ns": self.booted_ns,
            "kernel": self.kernel,
            "cmdline": self.cmdline,
            "console": self.console,
            "affinity": {str(k): v for k, v in self.affinity.items()},
            "soft_affinity": {str(k): v for k, v in self.soft_affinity.items()},
            "weight": self.weight,
            "cap": self.cap,
            "cpupool": self.cpupool,
            "evtchns": {str(k): v for k, v in self.evtchns.items()},
            "max_evtchn_port": self.max_evtchn_port,
            "hap": self.hap,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Domain:
        data = dict(data)
        data["guest_type"] = GuestType(data["guest_type"])
        reason = data["shutdown_reason"]
        data["shutdown_reason"] = None if reason is None else ShutdownReason(reason)
        data["affinity"] = {int(k): v for k, v in data["affinity"].items()}
        data["soft_affinity"] = {int(k): v for k, v in data.get("soft_affinity", {}).items()}
        data["evtchns"] = {int(k): v for k, v in data["evtchns"].items()}
        return cls(**data)


@dataclass
class HostState:
    """Everything about one simulated host."""

    nr_cpus: int
    total_pages: int
    booted_ns: int
    next_domid: int = 1
    domains: dict[int, Domain] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    xs_gen: int = 0  # the xenstore generation counter (see Node.gen)
    change_seq: int = 0  # sequence number of the last watch change logged
    changes: list[tuple[int, str, bool]] = field(default_factory=list)  # (seq, path, subtree removed)
    introduced: dict[int, tuple[int, int]] = field(default_factory=dict)  # domid -> (store mfn, evtchn)
    failures: dict[str, tuple[int, int]] = field(default_factory=dict)  # op -> (errno, times left)
    dmesg: list[str] = field(default_factory=list)
    # cpupool id -> (scheduler, its cpus); Pool-0 has every CPU at boot
    pools: dict[int, tuple[str, list[int]]] = field(default_factory=dict)
    # cpupool id -> its scheduler's own parameters, once set (Xen's defaults until then)
    pool_params: dict[int, dict[str, int]] = field(default_factory=dict)

    # -- small primitives shared by the hypervisor, xenstore and the guests ----------------------

    def next_gen(self) -> int:
        self.xs_gen += 1
        return self.xs_gen

    def log_change(self, path: str, removed_subtree: bool = False) -> None:
        """Record a change for watches: every connection's read_watch replays this log."""
        self.change_seq += 1
        self.changes.append((self.change_seq, path, removed_subtree))
        if len(self.changes) > MAX_CHANGES:
            del self.changes[: len(self.changes) - MAX_CHANGES]

    def used_pages(self) -> int:
        return sum(d.tot_pages for d in self.domains.values())

    def free_pages(self) -> int:
        return self.total_pages - self.used_pages()

    def domain(self, domid: int, op: str) -> Domain:
        try:
            return self.domains[domid]
        except KeyError:
            raise XenError(op, errno.ESRCH, domid, "no such domain") from None

    def take_failure(self, op: str) -> int | None:
        """Consume one injected failure of ``op``; its errno, or None when none is pending."""
        pending = self.failures.get(op)
        if pending is None:
            return None
        err, left = pending
        if left <= 1:
            del self.failures[op]
        else:
            self.failures[op] = (err, left - 1)
        return err

    def log(self, line: str) -> None:
        self.dmesg.append(f"(XEN) {line}")
        if len(self.dmesg) > MAX_DMESG_LINES:
            del self.dmesg[: len(self.dmesg) - MAX_DMESG_LINES]

    def stop_clock(self, dom: Domain, now_ns: int) -> None:
        if dom.running_since_ns is not None:
            dom.cpu_time_ns = dom.cpu_time(now_ns)
            dom.running_since_ns = None

    def start_clock(self, dom: Domain, now_ns: int) -> None:
        if dom.is_running and dom.running_since_ns is None:
            dom.running_since_ns = now_ns

    def shut_down(self, dom: Domain, reason: ShutdownReason) -> None:
        """The domain stops for good (it stays, shut down, until destroyed); xenstored's
        @releaseDomain tells toolstacks so."""
        if dom.is_shutdown:
            return
        self.stop_clock(dom, time.time_ns())
        dom.shutdown_reason = reason
        self.log(f"d{dom.domid}: shut down ({reason.name.lower()})")
        self.log_change("@releaseDomain")

    # -- JSON -------------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "nr_cpus": self.nr_cpus,
            "total_pages": self.total_pages,
            "booted_ns": self.booted_ns,
            "next_domid": self.next_domid,
            "domains": [d.to_json() for d in self.domains.values()],
            "nodes": {path: node.to_json() for path, node in self.nodes.items()},
            "xs_gen": self.xs_gen,
            "change_seq": self.change_seq,
            "changes": [list(c) for c in self.changes],
            "introduced": {str(k): list(v) for k, v in self.introduced.items()},
            "failures": {k: list(v) for k, v in self.failures.items()},
            "dmesg": self.dmesg,
            "pools": {str(k): [sched, cpus] for k, (sched, cpus) in self.pools.items()},
            "pool_params": {str(k): v for k, v in self.pool_params.items()},
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HostState:
        if data.get("format") != FORMAT:
            raise ValueError(f"simulator state format {data.get('format')!r}, expected {FORMAT}")
        return cls(
            nr_cpus=data["nr_cpus"],
            total_pages=data["total_pages"],
            booted_ns=data["booted_ns"],
            next_domid=data["next_domid"],
            domains={d["domid"]: Domain.from_json(d) for d in data["domains"]},
            nodes={path: Node.from_json(n) for path, n in data["nodes"].items()},
            xs_gen=data["xs_gen"],
            change_seq=data["change_seq"],
            changes=[(seq, path, bool(rm)) for seq, path, rm in data["changes"]],
            introduced={int(k): (v[0], v[1]) for k, v in data["introduced"].items()},
            failures={k: (v[0], v[1]) for k, v in data["failures"].items()},
            dmesg=list(data["dmesg"]),
            pools={int(k): (v[0], list(v[1])) for k, v in data.get("pools", {"0": ["credit2", list(range(data["nr_cpus"]))]}).items()},
            pool_params={int(k): dict(v) for k, v in data.get("pool_params", {}).items()},
        )


DOM0_PERMS = (XsPermission(0, XsPerm.NONE),)

# The tree xenstored starts with once dom0 is up (as after xencommons on Debian): stable, because
# the toolstack's tests compare dumps of it before and after.
INITIAL_NODES: tuple[tuple[str, str], ...] = (
    ("/", ""),
    ("/local", ""),
    ("/local/domain", ""),
    ("/local/domain/0", ""),
    ("/local/domain/0/name", "Domain-0"),
    ("/local/domain/0/domid", "0"),
    ("/vm", ""),
    ("/libxl", ""),
    ("/tool", ""),
    ("/tool/xenstored", ""),
)


def fresh_host(memory_mib: int = DEFAULT_MEMORY_MIB, nr_cpus: int = DEFAULT_CPUS) -> HostState:
    """A host just booted: Xen, dom0 running, xenstored with its initial tree."""
    now = time.time_ns()
    state = HostState(nr_cpus=nr_cpus, total_pages=memory_mib * PAGES_PER_MIB, booted_ns=now,
                      pools={0: (SIM_SCHEDULER, list(range(nr_cpus)))})
    dom0_pages = DOM0_MEMORY_MIB * PAGES_PER_MIB
    state.domains[0] = Domain(
        domid=0,
        uuid=DOM0_UUID,
        guest_type=GuestType.PV,
        max_vcpus=nr_cpus,
        online_vcpus=nr_cpus,
        paused=False,
        tot_pages=dom0_pages,
        max_pages=dom0_pages,
        running_since_ns=now,
        built=True,
        booted_ns=now,
    )
    children: dict[str, list[str]] = {path: [] for path, _ in INITIAL_NODES}
    for path, _ in INITIAL_NODES[1:]:
        parent, _, name = path.rpartition("/")
        children[parent or "/"].append(name)
    for path, value in INITIAL_NODES:
        state.nodes[path] = Node(value, DOM0_PERMS, state.next_gen(), tuple(sorted(children[path])))
    banner = (
        f"Xen version {XEN_VERSION} (simulated) (xentool@sim) (gcc (Debian 12.2.0-14) 12.2.0) debug=n",
        "Latest ChangeSet: (xentool simulator)",
        f"Command line: placeholder dom0_mem={DOM0_MEMORY_MIB}M,max:{DOM0_MEMORY_MIB}M",
        f"System RAM: {memory_mib}MB ({memory_mib * 1024}kB)",
        f"Brought up {nr_cpus} CPUs",
        f"Dom0 has maximum {nr_cpus} VCPUs",
        "Scrubbing Free RAM in background",
        "*** Serial input to DOM0 (type 'CTRL-a' three times to switch input)",
    )
    for line in banner:
        state.log(line)
    return state


class Session:
    """The state of one locked operation; ``save`` writes it back (still under the lock)."""

    def __init__(self, store: StateStore, state: HostState) -> None:
        self._store = store
        self.state = state

    def save(self) -> None:
        self._store._write(self.state)


class StateStore:
    """The state directory: locking, loading and atomic saving.

    The lock file is opened anew for each operation, so ``flock`` excludes other threads of this
    process as well as other processes (locks belong to the open file description).
    """

    def __init__(self, path: Path, fresh: Callable[[], HostState]) -> None:
        self.path = path
        self._fresh = fresh
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._state_file = path / STATE_FILE
        self._lock_file = path / LOCK_FILE
        self._local = threading.local()

    @contextmanager
    def locked(self) -> Iterator[Session]:
        if getattr(self._local, "held", False):
            raise RuntimeError("simulator state lock taken twice in one thread (a bug in hypercalls.sim)")
        fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._local.held = True
            try:
                yield Session(self, self._read())
            finally:
                self._local.held = False
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def _read(self) -> HostState:
        try:
            raw = self._state_file.read_bytes()
        except FileNotFoundError:
            state = self._fresh()
            self._write(state)
            return state
        return HostState.from_json(json.loads(raw))

    def _write(self, state: HostState) -> None:
        tmp = self._state_file.with_name(f".{STATE_FILE}.{os.getpid()}.{threading.get_ident()}.tmp")
        data = json.dumps(state.to_json(), separators=(",", ":")).encode()
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600), "wb") as out:
            out.write(data)
        os.replace(tmp, self._state_file)
