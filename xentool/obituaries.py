"""Why a domain that xentool ended on its own is gone.

When a guest's device model dies, its console service destroys the half-alive domain (see
:func:`xentool.console.service.serve_serial`); nobody is there to be told.  It leaves a note here,
by uuid, which `xentool info` and the other commands show when asked for a domain that is gone.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

OBITUARY_DIR = Path("/var/lib/xentool/ended")
KEEP = 50  # notes kept; older ones are removed as new ones come


@dataclass(frozen=True)
class Obituary:
    uuid: str
    name: str
    domid: int
    reason: str
    ended: float

    def __str__(self) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.ended))
        return f"domain {self.name} (was domain {self.domid}) was destroyed by xentool at {when}: {self.reason}"


def record(uuid: str, name: str, domid: int, reason: str, directory: Path = OBITUARY_DIR) -> None:
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    note = Obituary(uuid, name, domid, reason, time.time())
    path = directory / f"{uuid}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(note.__dict__))
    os.replace(tmp, path)
    notes = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
    for old in notes[:-KEEP]:
        old.unlink(missing_ok=True)


def find(ref: str, directory: Path = OBITUARY_DIR) -> Obituary | None:
    """The newest note for a domain named, numbered or identified ``ref``."""
    found: list[Obituary] = []
    for path in directory.glob("*.json") if directory.is_dir() else ():
        try:
            note = Obituary(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            continue
        if ref in (note.name, note.uuid, str(note.domid)):
            found.append(note)
    return max(found, key=lambda n: n.ended) if found else None


def forget(uuid: str, directory: Path = OBITUARY_DIR) -> None:
    """A new domain with this uuid exists: its old note would only mislead."""
    (directory / f"{uuid}.json").unlink(missing_ok=True)


__all__ = ["Obituary", "find", "forget", "record"]
