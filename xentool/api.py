"""The Python API: everything the CLI does, for scripts.

    import xentool
    with xentool.connect("sim:///tmp/xen-sim") as xt:      # or connect() in a dom0
        dom = xt.create("configs/examples/pv-hello.yaml", overrides=["memory=256"])
        print(xt.info(dom.name).state)
        xt.shutdown(dom.name, wait=True)

Domains are named by a *ref*: a domid ("3" or 3), a name, or a uuid.  Errors are
:class:`xentool.errors.XentoolError` subclasses carrying their cause (``__cause__`` is the
``hypercalls.errors.XenError`` with errno and operation when the hypervisor refused).
"""

from __future__ import annotations

import os
import uuid as uuid_module
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from hypercalls.connect import open_hypervisor
from hypercalls.errors import BackendUnavailable, XenError
from hypercalls.interface import DomainInfo, GuestType, Hypervisor, RunState, SchedParams, ShutdownReason
from pvdrivers.blkif import vdev_to_devid
from xentool import lifecycle, obituaries
from xentool.console.attach import ConsoleUnavailable, attach
from xentool.console.paths import console_log_path, console_socket_path
from xentool.daemon_client import await_daemon, ensure_running, follow_events, wait_with_events
from xentool.definitions import DEFINITIONS_DIR, Definition, DefinitionStore
from xentool.devicemodel.qmp import QmpFailed
from xentool.domains import DOMAIN_GONE, DomainDetails, DomainSummary, is_shut_down, state_of, summarize, wait_until
from xentool.errors import DomainNotFound, DomainOperationError, NoHypervisor, NotDefined, UsageError
from xentool.events import DEFINED, PAUSED, RENAMED, RESTORED, STARTED, UNDEFINED, UNPAUSED, Event, publish
from xentool.host import HostInfo
from xentool.records import DomainRecord, RecordStore

if TYPE_CHECKING:
    from xentool.config import GuestConfig
    from xentool.config.model import Disk, Vif
    from xentool.cpupools import CpuPool, PoolScheduling
    from xentool.create import BuildPlan, OpTiming, RestoreSource
    from xentool.live_devices import DeviceStatus
    from xentool.migration import MigrationResult
    from xentool.placement import VcpuPlacement
    from xentool.saving import SaveResult
    from xentool.stats import GuestStats

# Deferred imports, measured: the config model (pydantic), the creation steps and what needs them
# (saving, shutdown actions, the supervisor, hot plug) are imported by the methods that use them.
# `xentool list` and `destroy` need none of them, and in the lab's dom0 (Python under QEMU TCG)
# they cost seconds (tests/toolstack/test_cli_imports.py holds the line).

REAL_RECORDS_DIR = Path("/var/lib/xentool/domains")
# How long a command naming a guest waits for a restart of it (the supervisor acting on its
# on_reboot, say) to finish: a create, which takes a minute on the lab's emulated CPU at worst.
RESTART_WAIT_SECONDS = 120.0


def connect(url: str | None = None, records_dir: str | Path | None = None) -> Toolstack:
    """Open the hypervisor named by ``url`` (see :func:`hypercalls.open_hypervisor`).

    ``url`` defaults to ``$XENTOOL_CONNECT``; with neither, the real Xen of this dom0 — and an
    error that says how to reach one when this is not a dom0.  The simulator is only ever used when
    asked for by name.
    """
    url = url if url is not None else os.environ.get("XENTOOL_CONNECT") or None
    if url == "lab":
        raise NoHypervisor("the lab is reached through the CLI: `xentool --lab COMMAND`, or run Python with `xentool lab exec`")
    try:
        hv = open_hypervisor(url)
    except BackendUnavailable as e:
        raise NoHypervisor(str(e)) from e
    if records_dir is None:
        records_dir = Path(url[len("sim://"):]) / "xentool" if url and url.startswith("sim://") else REAL_RECORDS_DIR
    # A simulator's defined guests are its own, beside its records; a real host's are in /etc.
    definitions = Path(records_dir) / "defined" if url and url.startswith("sim://") else DEFINITIONS_DIR
    return Toolstack(hv, RecordStore(Path(records_dir)), DefinitionStore(definitions))


class Toolstack:
    def __init__(self, hv: Hypervisor, records: RecordStore, definitions: DefinitionStore | None = None) -> None:
        self.hv = hv
        self.records = records
        self.definitions = definitions if definitions is not None else DefinitionStore(records.directory / "defined")

    def close(self) -> None:
        self.hv.close()

    def __enter__(self) -> Toolstack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the host -----------------------------------------------------------------------------
    def host_info(self) -> HostInfo:
        p = self.hv.physinfo()
        return HostInfo(
            hostname=os.uname().nodename,
            backend=self.hv.kind,
            xen_version=str(p.xen_version),
            nr_cpus=p.nr_cpus,
            total_memory_mib=p.total_kib // 1024,
            free_memory_mib=p.free_kib // 1024,
            virt_caps=list(p.virt_caps),
            capabilities=p.capabilities,
        )

    def dmesg(self, clear: bool = False) -> str:
        return self.hv.dmesg(clear)

    # -- finding domains ----------------------------------------------------------------------
    def list_domains(self) -> list[DomainSummary]:
        return [summarize(self.hv, info) for info in self.hv.domain_list()]

    def lookup(self, ref: str | int) -> DomainSummary:
        """The domain that ``ref`` names: a domid, a name, or a uuid.  A guest that is being
        restarted (its old domain gone, its new one not yet named) is waited for."""
        text = str(ref).strip()
        matches = self._matching(text)
        if not matches and not text.isdigit() and self._waited_for_restart(text):
            matches = self._matching(text)
        if not matches:
            note = obituaries.find(text) if self.hv.runs_device_models else None
            raise DomainNotFound(text, str(note) if note else None)
        return matches[0]

    def _matching(self, text: str) -> list[DomainSummary]:
        domains = self.list_domains()
        if text.isdigit():
            return [d for d in domains if d.domid == int(text)]
        return [d for d in domains if d.name == text] or [d for d in domains if d.uuid == text.lower()]

    def _waited_for_restart(self, text: str) -> bool:
        """Whether a guest called (or with the uuid) ``text`` was being restarted: its record's
        lock is held from the old domain's destruction until the new one is built."""
        records: list[DomainRecord | None]
        try:
            records = [self.records.load(str(uuid_module.UUID(text)))]
        except ValueError:
            records = list(self.records.named(text))
        waited = False
        for record in records:
            if record is not None and self.records.wait_while_locked(record.uuid, RESTART_WAIT_SECONDS):
                waited = True
        return waited

    def info(self, ref: str | int) -> DomainDetails:
        summary = self.lookup(ref)
        info = self.hv.domain_getinfo(summary.domid)
        target = self.hv.xenstore().read_or(f"/local/domain/{summary.domid}/memory/target")
        record = self.records.load(summary.uuid)
        return DomainDetails(
            **summary.to_json(),
            target_memory_mib=int(target) // 1024 if target else None,
            max_vcpus=info.max_vcpu_id + 1,
            config=record.config if record else None,
            paging=None if info.guest_type == GuestType.PV else "hap" if info.hap else "shadow",
            **self._scheduling(info),
        )

    def _scheduling(self, info: DomainInfo) -> dict[str, Any]:
        """info's scheduler, weight, cap and cpupool (from the look info took); none if the domain
        went away meanwhile."""
        from xentool.cpupools import pool_name

        try:
            params = self.hv.sched_get(info.domid)
        except XenError:
            return {}
        return {"scheduler": params.scheduler, "weight": params.weight, "cap": params.cap,
                "pool": pool_name(self.hv, info.cpupool)}

    def console_log(self, ref: str | int) -> str:
        """Everything the guest has printed on its console so far (since its creation by xentool)."""
        domain = self.lookup(ref)
        output = self.hv.guest_console_output(domain.domid)
        if output is not None:
            return output
        try:
            return console_log_path(domain.uuid).read_bytes().decode(errors="replace")
        except FileNotFoundError:
            raise DomainOperationError(
                "console", domain.name,
                f"it has no xentool console log (not created by xentool?); try `xl console {domain.name}`",
            ) from None

    def attach_console(self, ref: str | int, output: BinaryIO, input_fd: int | None = None,
                       replay_bytes: int | None = 2048) -> str:
        """Stream the guest's console to ``output`` until it ends ("ended") or Ctrl-] on a terminal
        ("detached"); ``input_fd`` goes to the guest.  A console no backend serves (a simulated guest,
        one that has shut down) is shown as its log so far ("ended")."""
        domain = self.lookup(ref)
        if self.hv.needs_console_backend:
            try:
                return attach(console_socket_path(domain.domid), console_log_path(domain.uuid), output,
                              input_fd, replay_bytes)
            except ConsoleUnavailable:
                pass
        text = self.console_log(ref).encode()
        output.write(text if replay_bytes is None else text[-replay_bytes:])
        output.flush()
        return "ended"

    # -- creation -----------------------------------------------------------------------------
    def load(
        self, source: GuestConfig | str | Path | Mapping[str, Any], overrides: Sequence[str] = ()
    ) -> GuestConfig:
        """A validated config from a file path, a dict, or a GuestConfig (overrides apply to files)."""
        from xentool.config import GuestConfig, config_from_dict, load_config

        if isinstance(source, GuestConfig):
            if overrides:
                raise UsageError("overrides apply to a config file; change the GuestConfig object instead")
            return source
        if isinstance(source, Mapping):
            if overrides:
                raise UsageError("overrides apply to a config file; change the dict instead")
            return config_from_dict(source)
        return load_config(source, overrides)

    def plan(self, config: GuestConfig, paused: bool = False) -> BuildPlan:
        """The build plan `create` would run (what --dry-run prints); touches nothing."""
        from xentool.create import HostFeatures, plan_creation

        uuid = str(config.uuid) if config.uuid else "{uuid}"
        return plan_creation(config, uuid, paused, host=HostFeatures.of(self.hv))

    def create(
        self,
        source: GuestConfig | str | Path | Mapping[str, Any],
        overrides: Sequence[str] = (),
        paused: bool = False,
        timings: list[OpTiming] | None = None,
    ) -> DomainSummary:
        """``timings``, if given, receives how long each step took (`create --timings`)."""
        config = self.load(source, overrides)
        uuid = str(config.uuid) if config.uuid else str(uuid_module.uuid4())
        domain = self._create(config, uuid, paused, timings=timings)
        self._ensure_supervised()
        return domain

    # -- defined guests ---------------------------------------------------------------------------
    def define(self, source: GuestConfig | str | Path | Mapping[str, Any], overrides: Sequence[str] = ()) -> Definition:
        """Keep a validated config, to start by name (:meth:`start`) and at the host's boot
        (:meth:`set_autostart`).  Defining a name again replaces its config and keeps its uuid
        (unless the config names another) and its autostart settings."""
        config = self.load(source, overrides)
        old = self.definitions.load(config.name)
        uuid = str(config.uuid) if config.uuid else (old.uuid if old else str(uuid_module.uuid4()))
        resolved = config.as_data()
        resolved["uuid"] = uuid
        # The file it came from, and its text as written: given by path, or a config loaded from one.
        given = source if isinstance(source, str | Path) else getattr(source, "source", None)
        text, where = "", "<data>"
        if given and Path(given).is_file():
            where = str(Path(given).resolve())
            text = Path(given).read_text(encoding="utf-8")
        # Autostart: what the config says where it says it, else what was set before (`xentool autostart`).
        autostart = {key: getattr(config, key) if key in config.model_fields_set or old is None else getattr(old, key)
                     for key in ("autostart", "autostart_order", "autostart_delay")}
        definition = self.definitions.save(Definition(config.name, uuid, where, text, resolved, **autostart))
        publish(Event(DEFINED, config.name, uuid, detail={"source": where}))
        return definition

    def undefine(self, name: str) -> None:
        """Forget a defined guest's config (a running guest of that name goes on running)."""
        definition = self.defined_guest(name)
        self.definitions.remove(name)
        publish(Event(UNDEFINED, name, definition.uuid))

    def start(self, name: str, paused: bool = False) -> DomainSummary:
        """Create the defined guest ``name`` from its kept config, with its uuid."""
        from xentool.config import config_from_dict

        definition = self.defined_guest(name)
        config = config_from_dict(definition.resolved, source=f"<the definition of {name}>")
        domain = self._create(config, definition.uuid, paused)
        publish(Event(STARTED, domain.name, domain.uuid, domain.domid))
        self._ensure_supervised()
        return domain

    def set_autostart(self, name: str, on: bool, order: int | None = None, delay: float | None = None) -> Definition:
        """Whether the daemon starts ``name`` when the host boots; ``order`` (lower first) and
        ``delay`` (seconds before the next one) if given."""
        definition = self.defined_guest(name)
        changed = replace(definition, autostart=on,
                          autostart_order=definition.autostart_order if order is None else order,
                          autostart_delay=definition.autostart_delay if delay is None else delay)
        return self.definitions.save(changed)

    def defined(self) -> list[Definition]:
        """Every defined guest, running or not."""
        return self.definitions.all()

    def defined_guest(self, name: str) -> Definition:
        """The definition of ``name`` (NotDefined if there is none)."""
        definition = self.definitions.load(name)
        if definition is None:
            raise NotDefined(name)
        return definition

    # -- save and restore -------------------------------------------------------------------------
    def save(self, ref: str | int, path: str | Path, checkpoint: bool = False,
             progress: Callable[[str, int, int], None] | None = None) -> SaveResult:
        """Suspend the guest and write it to ``path`` (Xen's migration stream, with its config);
        then destroy it, or with ``checkpoint`` let it go on running.  ``progress`` hears Xen's
        copy: (what is being done, pages done, pages in all)."""
        from xentool.saving import save_guest

        return save_guest(self.hv, self.records, self._guest(ref), path, checkpoint, progress)

    def restore(self, path: str | Path, paused: bool = False, timings: list[OpTiming] | None = None,
                progress: Callable[[str, int, int], None] | None = None) -> DomainSummary:
        """Bring back a guest saved by :meth:`save`, with its uuid, config and devices; it goes on
        where it stopped.  The file is checked whole before anything is created.  ``progress``
        hears what is being done ("checking the file", then "loading the guest's memory"), MiB
        done and MiB in all."""
        from xentool import savefile  # hashlib: only restore reads a save file
        from xentool.config import config_from_dict
        from xentool.create import SaveFileSource

        saved = savefile.read(path, progress)
        config = config_from_dict(saved.config, source=f"{path} (the saved config)")
        source = SaveFileSource(str(path), saved.stream_offset, saved.dm_state_offset, saved.stream_length, progress)
        domain = self._create(config, saved.uuid, paused, restore=source, timings=timings)
        publish(Event(RESTORED, domain.name, domain.uuid, domain.domid, {"path": str(path)}))
        self._ensure_supervised()
        return domain

    # -- migration --------------------------------------------------------------------------------
    def migrate(self, ref: str | int, host: str, live: bool = True, keep_source_definition: bool = False,
                ssh_command: str = "ssh", remote_xentool: str = "xentool", compress: bool = True,
                progress: Callable[[str, int, int], None] | None = None) -> MigrationResult:
        """Move the guest to ``host`` (HOST or USER@HOST, reached with ssh, where ``remote_xentool``
        runs `migrate-receive`; or ``tls://HOST[:PORT][?tls_dir=DIR]``, the target's daemon over its
        mutual-TLS API, with this client's certificate as for ``connect``): live unless ``live`` is
        False (then it is suspended for the whole copy) or this Xen cannot copy it live (the
        result's ``note`` says why).  It keeps its name, uuid, config and devices; a defined
        guest's definition moves with it.  On failure it runs on here, except when the target went
        silent after it was told to start the guest: then it stays suspended here (MigrationError
        says which).  The stream goes compressed (zstd) when both hosts can, unless ``compress`` is
        False (a fast link and slow CPUs).  ``progress`` hears Xen's copy, as for :meth:`save`."""
        from xentool.migration import migrate_guest

        return migrate_guest(self.hv, self.records, self.definitions, self._guest(ref), host, live,
                             keep_source_definition, ssh_command, remote_xentool, compress, progress)

    def migrate_receive(self, data_fd: int = 0, answer_fd: int = 1) -> DomainSummary:
        """The target's end of :meth:`migrate` (what `xentool migrate-receive` runs, over ssh, and
        what the daemon runs for a migration over its API)."""
        from xentool.migration import receive

        domain = receive(self.hv, self.records, self.definitions, data_fd, answer_fd)
        self._ensure_supervised()
        return domain

    def _ensure_supervised(self) -> None:
        """On a real host, somebody must keep a new guest's on_* promises from now on: the host's
        daemon, started if it is not running.  (Not in create_guest: the daemon's own restarts go
        through it.)"""
        if self.hv.needs_console_backend:
            ensure_running()

    # -- events ---------------------------------------------------------------------------------
    def events(self, names: Sequence[str] = (), subscribed: Callable[[], None] | None = None) -> Iterator[Event]:
        """What happens to the guests called ``names`` (or to all), as it happens, from the host's
        daemon (started if none runs); goes on across a restart of the daemon (see
        :func:`xentool.daemon_client.follow_events`)::

            for event in xt.events(["web"]):
                print(event.kind, event.name, event.detail)

        ``subscribed`` is called once the stream has begun (from then on nothing is missed).
        """
        if self.hv.needs_console_backend:
            await_daemon()
        # On the simulator, only a daemon started by hand serves events (`xentool daemon run` with
        # the same --connect): none is started for it, and without one this fails with one line.
        return follow_events(names, subscribed=subscribed)

    def reconnect(self) -> Toolstack:
        """A new Toolstack on the same hypervisor and records, with a connection of its own (for a
        forked process, which must not share this one's)."""
        return Toolstack(self.hv.reopen(), RecordStore(self.records.directory), DefinitionStore(self.definitions.directory))

    def _create(self, config: GuestConfig, uuid: str, paused: bool, restore: RestoreSource | None = None,
                timings: list[OpTiming] | None = None) -> DomainSummary:
        from xentool.create import create_guest

        return create_guest(self.hv, self.records, config, uuid, paused, restore=restore, timings=timings)

    # -- lifecycle ------------------------------------------------------------------------------
    def _guest(self, ref: str | int) -> DomainSummary:
        domain = self.lookup(ref)
        if domain.domid == 0:
            raise UsageError("that is dom0, the domain xentool runs in; it cannot be managed as a guest")
        return domain

    def destroy(self, ref: str | int) -> None:
        domain = self._guest(ref)
        # Under the guest's lock: a supervisor restarting it meanwhile would otherwise build it
        # again after this destroy.  Once the lock is ours the guest may have a new domid.  A
        # restart that does not end in RESTART_WAIT_SECONDS does not keep the guest alive.
        with self.records.lock(domain.uuid, timeout=RESTART_WAIT_SECONDS):
            current = next((d for d in self.list_domains() if d.uuid == domain.uuid), None)
            if current is not None:
                lifecycle.checked("destroy", current.name, lambda: lifecycle.destroy(self.hv, current.domid))
            self.records.remove(domain.uuid)

    def pause(self, ref: str | int) -> None:
        domain = self._guest(ref)
        lifecycle.checked("pause", domain.name, lambda: self.hv.domain_pause(domain.domid))
        # A pause fires no xenstore watch, and an unpause may follow before the daemon's next
        # look: it is told (and logs it once, whether or not it saw it too).
        publish(Event(PAUSED, domain.name, domain.uuid, domain.domid))

    def unpause(self, ref: str | int) -> None:
        domain = self._guest(ref)
        if self.hv.runs_device_models and lifecycle.has_device_model(self.hv, domain.domid):
            try:
                lifecycle.resume_device_model(domain.domid)
            except QmpFailed as e:
                raise DomainOperationError("unpause", domain.name, e) from e
        lifecycle.checked("unpause", domain.name, lambda: self.hv.domain_unpause(domain.domid))
        publish(Event(UNPAUSED, domain.name, domain.uuid, domain.domid))

    def resume(self, ref: str | int) -> None:
        """Let a guest left suspended go on as if it had not been (a migration that could not tell
        whether the target runs it leaves it so: resume it only once sure that it does not)."""
        from xentool.saving import resume_guest

        domain = self._guest(ref)
        info = state_of(self.hv, domain.domid)
        if info is None or not (info.shutdown and info.shutdown_reason == ShutdownReason.SUSPEND):
            raise UsageError(f"{domain.name} is not suspended (it is {domain.state}): `xentool unpause` goes on with a paused guest")
        try:
            lifecycle.checked("resume", domain.name, lambda: resume_guest(self.hv, domain.domid, domain.type == "hvm"))
        except QmpFailed as e:
            raise DomainOperationError("resume", domain.name, e) from e
        publish(Event(UNPAUSED, domain.name, domain.uuid, domain.domid))

    def rename(self, ref: str | int, new_name: str) -> None:
        domain = self._guest(ref)
        from xentool.config import validate_domain_name

        # The same rules as a config's name, so a rename cannot make a name a config could not hold.
        try:
            validate_domain_name(new_name)
        except ValueError as e:
            raise UsageError(f"cannot rename {domain.name} to {new_name!r}: {e}") from None
        lifecycle.checked("rename", domain.name, lambda: lifecycle.rename(self.hv, domain.domid, new_name))
        self.records.renamed(domain.uuid, new_name)
        publish(Event(RENAMED, new_name, domain.uuid, domain.domid, {"old": domain.name}))

    def mem_set(self, ref: str | int, memory_mib: int) -> None:
        domain = self._guest(ref)
        lifecycle.checked(
            "mem-set", domain.name, lambda: lifecycle.set_memory_target(self.hv, domain.domid, memory_mib * 1024, domain.name)
        )

    def mem_max(self, ref: str | int, max_mib: int) -> None:
        """The most memory the guest may balloon up to (xl mem-max)."""
        domain = self._guest(ref)
        lifecycle.checked("mem-max", domain.name, lambda: lifecycle.set_memory_max(self.hv, domain.domid, max_mib * 1024, domain.name))

    def vcpu_set(self, ref: str | int, vcpus: int) -> None:
        domain = self._guest(ref)
        lifecycle.checked("vcpu-set", domain.name, lambda: lifecycle.set_online_vcpus(self.hv, domain.domid, vcpus, domain.name))

    # -- where vcpus run, and their share of the CPUs -------------------------------------------
    def vcpu_pin(self, ref: str | int, vcpu: int | str, cpus: str, soft: str = "-") -> None:
        """`xl vcpu-pin`: ``vcpu`` a number or "all"; ``cpus`` (hard) and ``soft`` are CPU sets
        ("all", "0-3,5", or "-" to leave it as it is)."""
        from xentool import placement

        domain = self.lookup(ref)
        nr_cpus = self.hv.physinfo().nr_cpus
        which = None if str(vcpu).strip() == "all" else _vcpu_number(vcpu)
        hard = placement.cpu_set(cpus, nr_cpus, "hard affinity")
        preferred = placement.cpu_set(soft, nr_cpus, "soft affinity")
        lifecycle.checked("vcpu-pin", domain.name, lambda: placement.pin(self.hv, domain.domid, which, hard, preferred))

    def vcpu_list(self, ref: str | int | None = None) -> list[VcpuPlacement]:
        """`xl vcpu-list`: every vcpu of ``ref``'s domain, or of every domain."""
        from xentool.placement import placement_rows

        nr_cpus = self.hv.physinfo().nr_cpus
        domains = [self.lookup(ref)] if ref is not None else self.list_domains()
        rows: list[VcpuPlacement] = []
        for domain in domains:
            try:
                rows += placement_rows(domain.name, domain.domid, self.hv.vcpu_info(domain.domid), nr_cpus)
            except XenError:
                if ref is not None:
                    raise DomainNotFound(str(ref)) from None  # it went away meanwhile
        return rows

    def sched_get(self, ref: str | int) -> SchedParams:
        domain = self.lookup(ref)
        try:
            return self.hv.sched_get(domain.domid)
        except XenError as e:
            raise DomainOperationError("sched", domain.name, e) from e

    def sched_set(self, ref: str | int, weight: int | None = None, cap: int | None = None,
                  scheduler: str | None = None) -> None:
        """Weight and cap under credit or credit2 (None: unchanged); ``scheduler``, if given, must be
        the domain's (the CLI's sched-credit and sched-credit2 say which they mean)."""
        from xentool import placement

        domain = self.lookup(ref)
        placement.check_weight_and_cap(weight, cap, max(1, self.hv.domain_getinfo(domain.domid).online_vcpus))
        if scheduler is not None:
            placement.check_scheduler(self.sched_get(ref), scheduler, f"domain {domain.name}")
        lifecycle.checked("sched", domain.name, lambda: self.hv.sched_set(domain.domid, weight, cap))

    # -- cpupools ----------------------------------------------------------------------------------
    def cpupools(self) -> list[CpuPool]:
        from xentool.cpupools import list_pools

        return list_pools(self.hv)

    def cpupool_create(self, name: str, scheduler: str = "credit2", cpus: Sequence[int] = ()) -> CpuPool:
        """A new pool of free CPUs (``cpus``) running ``scheduler``, named ``name`` (xl cpupool-create)."""
        from xentool.cpupools import PoolSpec, create_pool

        return create_pool(self.hv, PoolSpec(name, scheduler, frozenset(int(c) for c in cpus)))

    def cpupool_destroy(self, name: str) -> None:
        from xentool.cpupools import destroy_pool

        destroy_pool(self.hv, name)

    def cpupool_cpu_add(self, name: str, cpu: int) -> None:
        from xentool.cpupools import add_cpu

        add_cpu(self.hv, name, cpu)

    def cpupool_cpu_remove(self, name: str, cpu: int) -> None:
        from xentool.cpupools import remove_cpu

        remove_cpu(self.hv, name, cpu)

    def pool_sched_get(self, pool: str = "Pool-0", scheduler: str = "credit2") -> PoolScheduling:
        """The cpupool's own scheduler parameters (xl sched-credit2 -s [-p POOL]; sched-credit -s):
        ``scheduler`` must be the pool's."""
        from xentool.cpupools import pool_scheduling

        return pool_scheduling(self.hv, pool, scheduler)

    def pool_sched_set(self, pool: str = "Pool-0", scheduler: str = "credit2", ratelimit_us: int | None = None,
                       tslice_ms: int | None = None, migration_delay_us: int | None = None) -> PoolScheduling:
        """Set the cpupool's rate limit (credit, credit2), time slice and migration delay (credit);
        None leaves one as it is.  Returns them as Xen keeps them."""
        from xentool.cpupools import set_pool_scheduling

        return set_pool_scheduling(self.hv, pool, scheduler, ratelimit_us, tslice_ms, migration_delay_us)

    def cpupool_migrate(self, ref: str | int, pool: str) -> None:
        """Move a guest into another pool (xl cpupool-migrate): it runs on that pool's CPUs, under its scheduler."""
        from xentool.cpupools import move_domain

        domain = self._guest(ref)
        move_domain(self.hv, domain.domid, domain.name, pool)

    # -- what domains use -------------------------------------------------------------------------
    def stats(self, ref: str | int | None = None, interval: float = 1.0) -> list[GuestStats]:
        """CPU, memory and traffic of ``ref``'s domain, or of every domain, measured over
        ``interval`` seconds (as `xentool top` and `xentool stats`)."""
        from xentool.stats import measure

        if interval <= 0:
            raise UsageError(f"interval {interval}: give a number of seconds above 0")
        domains = [self.lookup(ref)] if ref is not None else self.list_domains()
        rows = measure(self.hv, {d.domid: (d.name, d.state) for d in domains}, interval)
        if ref is not None and not rows:
            raise DomainNotFound(str(ref))  # it went away while it was measured
        return rows

    # -- devices of a running guest ------------------------------------------------------------
    def block_list(self, ref: str | int) -> list[DeviceStatus]:
        from xentool.live_devices import list_devices

        return list_devices(self.hv.xenstore(), self.lookup(ref).domid, "vbd")

    def network_list(self, ref: str | int) -> list[DeviceStatus]:
        from xentool.live_devices import list_devices

        return list_devices(self.hv.xenstore(), self.lookup(ref).domid, "vif")

    def block_attach(self, ref: str | int, disk: Disk | str | Mapping[str, Any]) -> DeviceStatus:
        """Give a running guest another disk (a Disk, its dict, or xl's string form
        ``/img/b.raw,raw,xvdb,rw``); returns it once the guest has connected it."""
        from xentool.config.model import disk_adapter
        from xentool.live_devices import attach_disk

        domain = self._hotplug_target(ref)
        spec = _device_spec(disk_adapter(), disk, "disk")
        status = attach_disk(self.hv, domain.domid, domain.name, domain.uuid, spec)
        self._record_devices(domain, lambda c: c.model_copy(update={"disks": [*c.disks, spec]}))
        return status

    def block_detach(self, ref: str | int, vdev: str, force: bool = False) -> None:
        from xentool.live_devices import detach

        domain = self._hotplug_target(ref)
        try:
            devid = vdev_to_devid(vdev)
        except ValueError as e:
            raise UsageError(str(e)) from None
        detach(self.hv, domain.domid, domain.name, "vbd", devid, f"disk {vdev}", force)
        self._record_devices(domain, lambda c: c.model_copy(update={"disks": [d for d in c.disks if d.vdev != vdev]}))

    def network_attach(self, ref: str | int, vif: Vif | str | Mapping[str, Any]) -> DeviceStatus:
        """Give a running guest another network interface (a Vif, its dict, or xl's string form
        ``bridge=xenbr0,mac=...``); returns it once the guest has connected it."""
        from xentool.config.model import vif_adapter
        from xentool.live_devices import attach_vif

        domain = self._hotplug_target(ref)
        spec = _device_spec(vif_adapter(), vif, "vif")
        status = attach_vif(self.hv, domain.domid, domain.name, domain.uuid, spec)
        spec = spec.model_copy(update={"mac": status.details["mac"]})  # a restart keeps the MAC
        self._record_devices(domain, lambda c: c.model_copy(update={"vifs": [*c.vifs, spec]}))
        return status

    def network_detach(self, ref: str | int, which: str | int, force: bool = False) -> None:
        """Take a vif away: ``which`` is its devid or its MAC address."""
        from xentool.live_devices import detach

        domain = self._hotplug_target(ref)
        vifs = self.network_list(domain.domid)
        match = [v for v in vifs if str(v.devid) == str(which) or v.details["mac"] == str(which).lower()]
        if not match:
            raise UsageError(f"domain {domain.name} has no vif {which}; `xentool network-list {domain.name}` shows them")
        gone = match[0]
        detach(self.hv, domain.domid, domain.name, "vif", gone.devid, gone.name, force)
        self._record_devices(domain, lambda c: c.model_copy(update={"vifs": [v for v in c.vifs if v.mac != gone.details["mac"]]}))

    def _hotplug_target(self, ref: str | int) -> DomainSummary:
        domain = self._guest(ref)
        if not self.hv.has_kernel_backends:
            raise UsageError(f"the {self.hv.kind} backend has no device backends to attach devices with; use real Xen")
        return domain

    def _record_devices(self, domain: DomainSummary, change: Callable[[GuestConfig], GuestConfig]) -> None:
        record = self.records.load(domain.uuid)
        if record is not None:
            self.records.reconfigured(domain.uuid, change(record.guest_config()))

    def shutdown(self, ref: str | int, wait: bool = False, timeout: float = 60.0, acpi: bool = False) -> str:
        """Ask the guest to power off.  With ``wait``, wait until it has, then apply its on_poweroff
        action; returns the final state ("shutdown", or "gone" once destroyed).  ``acpi``: press
        an HVM guest's ACPI power button even when its PV drivers could be asked."""
        return self._request(ref, ShutdownReason.POWEROFF, wait, timeout, acpi)

    def reboot(self, ref: str | int, wait: bool = True, timeout: float = 60.0) -> str:
        """Ask the guest to reboot; once it has shut down for reboot, apply on_reboot (restart by default)."""
        return self._request(ref, ShutdownReason.REBOOT, wait, timeout)

    def _request(self, ref: str | int, reason: ShutdownReason, wait: bool, timeout: float, acpi: bool = False) -> str:
        domain = self._guest(ref)
        word = lifecycle.SHUTDOWN_REQUEST[reason]
        if acpi and domain.type != "hvm":
            raise UsageError(f"domain {domain.name}: a {domain.type} guest has no ACPI power button; leave out --acpi "
                             "(its PV drivers are asked)")
        lifecycle.checked(word, domain.name, lambda: lifecycle.request_shutdown(self.hv, domain.domid, reason, acpi))
        if not wait:
            return domain.state
        self._wait(domain, is_shut_down, f"domain {domain.name} to {word}", timeout,
                   hint=f"the guest did not act on the {word} request; `xentool destroy {domain.name}` forces it off")
        return self._outcome(domain)

    def handle_shutdown(self, ref: str | int) -> str | None:
        """If the domain has shut down, do what its config says for the reason (what xl's per-guest
        monitor does); returns the resulting state ("gone", "running", "shutdown", ...), or None
        while the domain has not shut down."""
        domain = self._guest(ref)
        info = state_of(self.hv, domain.domid)
        if info is not None and not info.shutdown:
            return None
        return self._outcome(domain)

    def _outcome(self, domain: DomainSummary) -> str:
        """The guest's state once its shutdown action is done, by us or by the supervisor: the
        action takes the guest's lock, so this waits while the supervisor restarts it, say."""
        outcome = self.apply_shutdown_action(domain)
        if outcome != DOMAIN_GONE:
            return outcome
        try:
            return self.lookup(domain.uuid).state  # restarted, by whoever acted
        except DomainNotFound:
            return DOMAIN_GONE

    def apply_shutdown_action(self, domain: DomainSummary) -> str:
        """Do what the guest's config says for the reason it shut down (on_poweroff, on_reboot, ...);
        see :mod:`xentool.shutdown_actions`."""
        from xentool.shutdown_actions import apply_shutdown_action

        return apply_shutdown_action(self.hv, self.records, domain)

    def wait_for_state(self, ref: str | int, states: Sequence[str], timeout: float = 60.0) -> str:
        """Wait until the domain is in one of ``states`` (RunState values, or "gone")."""
        domain = self.lookup(ref)
        wanted = set(states)
        unknown = wanted - {s.value for s in RunState} - {DOMAIN_GONE}
        if unknown:
            raise UsageError(f"unknown state(s) {sorted(unknown)}; use {[s.value for s in RunState] + ['gone']}")

        def reached(info: DomainInfo | None) -> bool:
            return (DOMAIN_GONE if info is None else info.state.value) in wanted

        info = self._wait(domain, reached, f"domain {domain.name} to be {'/'.join(sorted(wanted))}", timeout)
        return DOMAIN_GONE if info is None else info.state.value

    def _wait(self, domain: DomainSummary, done: Callable[[DomainInfo | None], bool], what: str, timeout: float,
              hint: str = "") -> DomainInfo | None:
        """Wait for ``done(info)``: woken by the daemon's events on a real host (by xenstore
        watches where no daemon runs, and on the simulator)."""
        if not self.hv.needs_console_backend:
            return wait_until(self.hv, domain.domid, done, what, timeout, hint)
        return wait_with_events(self.hv, domain.domid, domain.uuid, done, what, timeout, hint)


def _device_spec(adapter: Any, value: Any, what: str) -> Any:
    """A Disk or Vif from what a script or the command line gave, or one line saying what is wrong."""
    from pydantic import ValidationError

    try:
        return adapter.validate_python(value)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"] if not isinstance(p, int) and p not in ("function-before",))
        raise UsageError(f"{what} {value!r}: {where + ': ' if where else ''}{first['msg'].removeprefix('Value error, ')}") from None


__all__ = ["DomainDetails", "DomainSummary", "HostInfo", "Toolstack", "XenError", "connect"]


def _vcpu_number(vcpu: int | str) -> int:
    try:
        number = int(vcpu)
    except ValueError:
        raise UsageError(f"vcpu {vcpu!r}: give a vcpu number (0 is the first) or all") from None
    if number < 0:
        raise UsageError(f"vcpu {number}: give a vcpu number (0 is the first) or all")
    return number
