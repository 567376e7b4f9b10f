"""What the two ends of a migration say to each other.

The sender runs the receiver (`xentool migrate-receive`) on the target, over ssh: the receiver's
standard input carries the sender's words and the guest, its standard output its answers, one JSON
line each, in this order (libxl's migration protocol has the same shape):

    receiver: {"phase": "hello", "protocol": 1, "hostname": ..., "xen_version": ..., "compression": ["zstd"]}
    sender:   XENTOOL-MIGRATE 1\\n and the offer, one JSON line: the guest, its config, its
              definition if it is a managed guest, live or not, the compression it uses (or none)
    receiver: {"phase": "accepted"}                after checking the guest fits on this host
    sender:   from here on compressed as the offer said: Xen's migration stream (xc_domain_save,
              live by default), then for an HVM guest XENTOOL-DM-STATE <16 digits>\\n and QEMU's
              device state, then XENTOOL-CONSOLE-LOG <16 digits>\\n and the end of the guest's
              console log, taken once the guest was suspended
    receiver: {"phase": "restored", "domid": N}    the domain is built and paused
    sender:   go\\n                                 the point of no return: the source no longer runs it
    receiver: {"phase": "running", "domid": N}

Any answer may instead be {"phase": ..., "error": {...}} (xentool.wire's typed error): the
receiver has then undone all it made.  The sender undoes its side (the guest runs on at the
source) on any failure before "go"; closing its end is how it tells the receiver to give up.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from xentool.savefile import write_all
from xentool.wire import error_from_wire, error_to_wire

VERSION = 1
MAGIC = b"XENTOOL-MIGRATE 1\n"
DM_STATE_MAGIC = b"XENTOOL-DM-STATE "
CONSOLE_LOG_MAGIC = b"XENTOOL-CONSOLE-LOG "
SIZE_DIGITS = 16
GO = b"go\n"
MAX_LINE = 1 << 20  # the offer holds a config: a few KiB

HELLO = "hello"
ACCEPTED = "accepted"
RESTORED = "restored"
RUNNING = "running"


@dataclass(frozen=True)
class Offer:
    """The guest the sender offers: enough for the receiver to check it and build it."""

    name: str
    uuid: str
    type: str
    config: dict[str, Any]
    live: bool
    source_host: str
    xen_version: str
    definition: dict[str, Any] | None = None  # a managed guest's definition (xentool.definitions), which moves with it
    disks: dict[str, Any] = field(default_factory=dict)  # per disk path, how the source sees it (receive.disk_fingerprint)
    compression: str | None = None  # how what follows the target's "accepted" is compressed (xentool.migration.compression)

    def to_line(self) -> bytes:
        return MAGIC + json.dumps(vars(self), sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: Any) -> Offer:
        if not isinstance(data, dict):
            raise ValueError("the offer is not an object")
        return cls(**{key: data[key] for key in cls.__dataclass_fields__ if key in data})


def answer(fd: int, phase: str, **fields: Any) -> None:
    write_all(fd, json.dumps({"phase": phase, **fields}).encode() + b"\n")


def answer_error(fd: int, phase: str, error: BaseException) -> None:
    write_all(fd, json.dumps({"phase": phase, "error": error_to_wire(error)}).encode() + b"\n")


def parse_answer(line: bytes, expected: str) -> dict[str, Any]:
    """The answer's fields; raises the receiver's own error when it reports one."""
    try:
        data = json.loads(line)
    except ValueError:
        raise ValueError(f"the receiver said something that is not an answer: {line[:200]!r}") from None
    if not isinstance(data, dict):
        raise ValueError(f"the receiver said something that is not an answer: {line[:200]!r}")
    if "error" in data:
        raise error_from_wire(data["error"])
    if data.get("phase") != expected:
        raise ValueError(f"the receiver answered {data.get('phase')!r} where {expected!r} was due")
    return data


def frame(magic: bytes, data: bytes) -> bytes:
    """What follows Xen's stream: a few blobs, each with its magic and size."""
    return magic + f"{len(data):0{SIZE_DIGITS}d}\n".encode() + data


def read_frame(fd: int, magic: bytes, what: str) -> bytes:
    head = read_exactly(fd, len(magic) + SIZE_DIGITS + 1)
    size_text = head[len(magic):].strip()
    if not head.startswith(magic) or not size_text.isdigit():
        raise ValueError(f"{what} does not follow where it should in the sender's stream")
    return read_exactly(fd, int(size_text))


def read_exactly(fd: int, size: int) -> bytes:
    parts = []
    while size:
        chunk = os.read(fd, min(size, 1 << 20))
        if not chunk:
            raise EOFError("the sender's stream ended early")
        parts.append(chunk)
        size -= len(chunk)
    return b"".join(parts)


def read_line(fd: int) -> bytes:
    """One line read a byte at a time: what follows it is Xen's stream, which must stay unread."""
    line = bytearray()
    while not line.endswith(b"\n"):
        byte = os.read(fd, 1)
        if not byte:
            raise EOFError("the sender closed the connection")
        line += byte
        if len(line) > MAX_LINE:
            raise ValueError("a line of the sender's is too long")
    return bytes(line)


__all__ = ["ACCEPTED", "CONSOLE_LOG_MAGIC", "DM_STATE_MAGIC", "GO", "HELLO", "MAGIC", "RESTORED", "RUNNING", "VERSION",
           "Offer", "answer", "answer_error", "frame", "parse_answer", "read_exactly", "read_frame", "read_line", "write_all"]
