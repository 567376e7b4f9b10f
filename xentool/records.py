"""What xentool remembers about the domains it created: the config each was built from.

xl keeps the same thing in /var/lib/xen/userdata-d.DOMID.UUID.libxl-json; xentool keeps one JSON file
per domain uuid, so that `info` can show the config and restart actions can rebuild the guest.  The
file is the toolstack's, not the hypervisor's: a domain without one (made by xl) is still listed and
managed, just without those extras.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from xentool.config import GuestConfig


@dataclass(frozen=True)
class DomainRecord:
    uuid: str
    domid: int
    name: str
    created: float
    config: dict[str, Any]
    restarts: tuple[float, ...] = ()  # when xentool restarted it lately (restart_window), for loop detection

    def guest_config(self) -> GuestConfig:
        from xentool.config import config_from_dict  # the config model: only restarts need it

        return config_from_dict(self.config, source=f"<record of {self.name}>")


class RecordStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, uuid: str) -> Path:
        return self.directory / f"{uuid}.json"

    def save(self, config: GuestConfig, uuid: str, domid: int, restarts: tuple[float, ...] = ()) -> DomainRecord:
        record = DomainRecord(
            uuid=uuid,
            domid=domid,
            name=config.name,
            created=time.time(),
            config=config.as_data(),
            restarts=tuple(restarts),
        )
        self._write(record)
        return record

    def _write(self, record: DomainRecord) -> None:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self._path(record.uuid)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record.__dict__, indent=1, sort_keys=True))
        os.replace(tmp, path)

    def load(self, uuid: str) -> DomainRecord | None:
        try:
            data = json.loads(self._path(uuid).read_text())
        except (OSError, ValueError):
            return None
        data["restarts"] = tuple(data.get("restarts", ()))
        return DomainRecord(**data)

    def named(self, name: str) -> list[DomainRecord]:
        """The records of the guests called ``name`` (one, unless a rename-restart kept the old)."""
        found = []
        for path in sorted(self.directory.glob("*.json")):
            record = self.load(path.stem)
            if record is not None and record.name == name:
                found.append(record)
        return found

    @contextlib.contextmanager
    def lock(self, uuid: str, timeout: float | None = None) -> Iterator[bool]:
        """Held while a shutdown action runs (the supervisor restarting a guest, say) and while a
        command destroys the guest, so that no two of them act on it at once.  Yields whether it
        is held: with a ``timeout``, the body runs without it once that is over (destroy must
        work even beside a restart that hangs)."""
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(self.directory / f"{uuid}.lock", "w") as f:
            yield _flock_within(f, fcntl.LOCK_EX, timeout)

    def wait_while_locked(self, uuid: str, timeout: float) -> bool:
        """Wait until nobody holds ``uuid``'s lock (at most ``timeout`` seconds); True if somebody
        did.  A command that names a guest the supervisor is restarting waits here rather than
        finding the guest absent for the moment between the old domain and the new."""
        try:
            f = open(self.directory / f"{uuid}.lock")
        except FileNotFoundError:
            return False
        with f:
            if _flock_within(f, fcntl.LOCK_SH, 0):
                return False
            _flock_within(f, fcntl.LOCK_SH, timeout)
            return True

    def renamed(self, uuid: str, new_name: str) -> None:
        record = self.load(uuid)
        if record is None:
            return
        config = dict(record.config, name=new_name)
        self._write(dataclasses.replace(record, name=new_name, config=config))

    def moved(self, uuid: str, domid: int) -> None:
        record = self.load(uuid)
        if record is not None:
            self._write(dataclasses.replace(record, domid=domid))

    def reconfigured(self, uuid: str, config: GuestConfig) -> None:
        """The guest's devices changed while it ran: a restart must rebuild it as it is now."""
        record = self.load(uuid)
        if record is not None:
            dumped = config.as_data()
            self._write(dataclasses.replace(record, config=dumped))

    def remove(self, uuid: str) -> None:
        for path in (self._path(uuid), self.directory / f"{uuid}.lock"):
            path.unlink(missing_ok=True)


def _flock_within(f: IO[str], operation: int, timeout: float | None) -> bool:
    """flock(``operation``) on ``f``, waiting at most ``timeout`` seconds (None: as long as it
    takes); whether it was had."""
    if timeout is None:
        fcntl.flock(f, operation)
        return True
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(f, operation | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)
