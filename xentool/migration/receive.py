"""`xentool migrate-receive`: the target's end of a migration (xentool.migration.protocol).

It checks the offered guest against this host before anything moves (the checks `create` makes,
and the ones only a migration needs: the same storage, a Xen at least as new), builds the domain
from the stream as restore does (create_guest with the stream in the builder's place), and starts
it only on the sender's "go".  On any failure, and when the sender goes away before "go", the
domain and all creation made is undone (the creation's own executor undoes a failed build; a built
domain is destroyed here), so nothing of the guest is left on this host.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import ClassVar

from hypercalls.interface import Hypervisor
from xentool import lifecycle
from xentool.config import GuestConfig, config_from_dict
from xentool.console.paths import console_log_path
from xentool.create import OpTiming, create_guest
from xentool.create.preflight import preflight
from xentool.definitions import Definition, DefinitionStore
from xentool.devicemodel.qmp import QmpFailed
from xentool.domains import DomainSummary
from xentool.errors import DomainOperationError, UsageError, XentoolError
from xentool.events import MIGRATED_IN, Event, publish
from xentool.migration import compression
from xentool.migration.protocol import (
    ACCEPTED,
    CONSOLE_LOG_MAGIC,
    DM_STATE_MAGIC,
    GO,
    HELLO,
    MAGIC,
    RESTORED,
    RUNNING,
    VERSION,
    Offer,
    answer,
    answer_error,
    read_frame,
    read_line,
    write_all,
)
from xentool.migration.silence import SENDER_SILENCE_SECONDS, SilenceGuard
from xentool.records import RecordStore

DISK_PROBE_BYTES = 4096  # what both ends hash of a disk to tell it is the same one (its first sector(s))


@dataclass(frozen=True)
class IncomingStream:
    """The sender's stream, in the builder's place (xentool.create.RestoreSource): Xen's part is
    read by xc_domain_restore straight from the connection; QEMU's state, which follows it, is read
    into memory when the device model starts and handed to QEMU as a file."""

    fd: int
    source_host: str
    carries_console_log: ClassVar[bool] = True

    def describe(self) -> str:
        return f"the migration stream from {self.source_host}"

    def open_stream(self) -> int:
        return os.dup(self.fd)

    def loading(self, fd: int) -> contextlib.AbstractContextManager[object]:
        return contextlib.nullcontext()  # the sender shows the copy's progress

    def open_device_state(self) -> int | None:
        state = read_frame(self.fd, DM_STATE_MAGIC, "the device model's state")
        fd = os.memfd_create("xentool-dm-state", os.MFD_CLOEXEC)
        write_all(fd, state)
        os.lseek(fd, 0, os.SEEK_SET)
        return fd

    def read_console_log(self) -> bytes:
        return read_frame(self.fd, CONSOLE_LOG_MAGIC, "the guest's console log")


def disk_fingerprint(path: str) -> dict[str, object] | None:
    """A disk's size and the hash of its first bytes, as both ends see it; None if it cannot be read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        head = os.pread(fd, DISK_PROBE_BYTES, 0)
    except OSError:
        return None
    finally:
        os.close(fd)
    return {"size": size, "head": hashlib.sha256(head).hexdigest()}


def check_target(hv: Hypervisor, config: GuestConfig, offer: Offer, source_disks: dict[str, object]) -> None:
    """Whether the offered guest can run here: what create checks (name, memory, disks, bridges),
    then what a migration needs besides."""
    if any(info.uuid == offer.uuid for info in hv.domain_list()):
        raise UsageError(f"domain {offer.name} (uuid {offer.uuid}) already runs on this host: "
                         "a guest migrates to another host")
    here = hv.physinfo().xen_version
    if _version(str(here)) < _version(offer.xen_version):
        raise UsageError(f"this host runs Xen {here}, older than the source's {offer.xen_version}: "
                         "a guest migrates to the same Xen or a newer one")
    preflight(hv, config)
    for disk in config.disks:
        if disk.target is None or disk.target not in source_disks:
            continue
        if disk_fingerprint(disk.target) != source_disks[disk.target]:
            raise UsageError(f"disk {disk.vdev} of {offer.name}: {disk.target} here is not the disk the source "
                             "host has at that path (size or first sector differ): a migrated guest needs the "
                             "same storage on both hosts (a shared directory, NFS, a SAN)")


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(".")[:2] if part.isdigit())


def receive(hv: Hypervisor, records: RecordStore, definitions: DefinitionStore,
            data_fd: int = 0, answer_fd: int = 1, silence_seconds: float = SENDER_SILENCE_SECONDS) -> DomainSummary:
    """Take in one guest from ``data_fd``, answering on ``answer_fd``; returns it running.  A
    sender silent for ``silence_seconds`` is taken as gone (xentool.migration.silence)."""
    guard = SilenceGuard(data_fd, silence_seconds)
    try:
        return _receive(hv, records, definitions, guard, answer_fd)
    except Exception as e:
        # Whatever failed, it failed because the stream was cut: say why.
        if guard.silent:
            raise XentoolError(f"the sender said nothing for {guard.seconds:g} s (the link or the source host is gone); "
                               "what was built here was undone") from e
        if guard.damaged:
            raise XentoolError(f"the sender's compressed stream could not be read ({guard.damaged}); "
                               "what was built here was undone") from e
        raise
    finally:
        guard.close()


def _receive(hv: Hypervisor, records: RecordStore, definitions: DefinitionStore, guard: SilenceGuard,
             answer_fd: int) -> DomainSummary:
    data_fd = guard.fd
    answer(answer_fd, HELLO, protocol=VERSION, hostname=os.uname().nodename, xen_version=str(hv.physinfo().xen_version),
           compression=compression.supported())
    phase = "checking the guest against the target"
    try:
        if read_line(data_fd) != MAGIC:
            raise UsageError("the sender does not speak xentool's migration protocol 1")
        offer = Offer.from_json(json.loads(read_line(data_fd)))
        config = config_from_dict(offer.config, source=f"{offer.name}'s config, sent by {offer.source_host}")
        check_target(hv, config, offer, dict(offer.disks))
        if offer.compression:
            guard.decompress_from_now(offer.compression)
        answer(answer_fd, ACCEPTED)
        phase = "receiving and restoring the guest"
        timings: list[OpTiming] = []
        domain = create_guest(hv, records, config, offer.uuid, paused=True,
                              restore=IncomingStream(data_fd, offer.source_host), timings=timings)
    except BaseException as e:
        _tell(answer_fd, phase, e)
        raise
    try:
        # Each step's time goes back with the answer: the sender's `migrate --timings` shows where
        # the time went on both hosts.
        answer(answer_fd, RESTORED, domid=domain.domid, timings=[[t.step, t.op, round(t.seconds, 3)] for t in timings])
        phase = "waiting for the sender's go"
        if read_line(data_fd) != GO:
            raise UsageError("the sender said something other than go")
        phase = "starting the guest on the target"
        starting = time.monotonic()
        _start(hv, domain, config)
        started = round(time.monotonic() - starting, 3)
        if offer.definition is not None:
            definitions.save(Definition(**offer.definition))
        answer(answer_fd, RUNNING, domid=domain.domid, timings=[["start", "QEMU (HVM) and the guest go on", started]])
    except BaseException as e:
        _undo(hv, records, domain)
        console_log_path(domain.uuid).unlink(missing_ok=True)  # carried here (xentool.create.console)
        _tell(answer_fd, phase, e)
        raise
    publish(Event(MIGRATED_IN, domain.name, domain.uuid, domain.domid, {"from": offer.source_host, "live": offer.live}))
    return domain


def _start(hv: Hypervisor, domain: DomainSummary, config: GuestConfig) -> None:
    """As unpause does: QEMU goes on (HVM), then the guest."""
    try:
        if hv.runs_device_models and lifecycle.has_device_model(hv, domain.domid):
            lifecycle.resume_device_model(domain.domid)
        hv.domain_unpause(domain.domid)
    except (QmpFailed, OSError) as e:
        raise DomainOperationError("unpause", config.name, e) from e


def _undo(hv: Hypervisor, records: RecordStore, domain: DomainSummary) -> None:
    try:
        lifecycle.destroy(hv, domain.domid)
    finally:
        records.remove(domain.uuid)


def _tell(answer_fd: int, phase: str, error: BaseException) -> None:
    """The sender hears why (it may be gone already: a broken pipe is its own answer)."""
    if isinstance(error, EOFError):
        error = XentoolError(f"the sender went away ({error})")
    elif isinstance(error, KeyboardInterrupt):  # what a signal to the receiver (or its launcher) becomes
        error = XentoolError("the receiver on the target was stopped (interrupted or killed); what was built there was undone")
    try:
        answer_error(answer_fd, phase, error)
    except OSError:
        pass


__all__ = ["IncomingStream", "check_target", "disk_fingerprint", "receive"]
