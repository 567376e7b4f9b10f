"""Defined guests: configs xentool keeps so that a guest can be started by name, and started by the
daemon when the host boots (autostart).  libvirt's `virsh define`, XAPI's halted VMs.

One file per guest, ``NAME.json`` in DEFINITIONS_DIR (/etc/xentool/guests: configuration, kept
across reboots, as /etc/libvirt/qemu is), root's only: the YAML as it was written, the config it
resolved to (uuid included, so a defined guest keeps its uuid, and with it the MACs xentool
derives from it, across starts), and the autostart settings.  Writes are atomic (a temporary file
renamed over the old one).
"""

from __future__ import annotations

import json
import os
import re
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

DEFINITIONS_DIR = Path("/etc/xentool/guests")
_NAME = re.compile(r"(?!\.)[A-Za-z0-9._-]{1,64}")  # what a config's name may be (xentool.config), nothing else


@dataclass(frozen=True)
class Definition:
    name: str
    uuid: str
    source: str  # the file it was defined from, or "<dict>" for one given as data
    text: str  # the YAML as written ("" when given as data)
    resolved: dict[str, Any]  # the config it resolved to: what `start` builds
    autostart: bool = False
    autostart_order: int = 0  # lower first when the host boots; equal ones by name
    autostart_delay: float = 0.0  # seconds to wait after starting it before the next one
    defined: float = 0.0  # when (time.time())

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class DefinitionStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        if not _NAME.fullmatch(name):  # a name from a command line must not walk out of the directory
            raise ValueError(f"{name!r} is not a guest's name")
        return self.directory / f"{name}.json"

    def save(self, definition: Definition) -> Definition:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        definition = replace(definition, defined=definition.defined or time.time())
        path = self._path(definition.name)
        temporary = path.with_suffix(f".json.tmp{os.getpid()}")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(definition.to_json(), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
        return definition

    def load(self, name: str) -> Definition | None:
        try:
            path = self._path(name)
        except ValueError:  # not a name a config can give
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None  # none, or a damaged file, which is not a definition: `xentool define` writes it again
        try:
            return Definition(**data)
        except TypeError:
            return None

    def all(self) -> list[Definition]:
        if not self.directory.is_dir():
            return []
        found = (self.load(path.stem) for path in sorted(self.directory.glob("*.json")))
        return [definition for definition in found if definition is not None]

    def remove(self, name: str) -> bool:
        try:
            self._path(name).unlink()
        except (FileNotFoundError, ValueError):
            return False
        return True


__all__ = ["DEFINITIONS_DIR", "Definition", "DefinitionStore"]
