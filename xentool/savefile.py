"""The save file: what `xentool save` writes and `xentool restore` reads.

    XENTOOL-SAVE 1\\n
    {"name": ..., "uuid": ..., "config": {...}, ...}\\n      one line of JSON: the guest and its config
    <Xen's migration stream, as xc_domain_save wrote it>
    [<QEMU's device state> XENTOOL-DM-STATE <its length>\\n]      HVM guests only
    XENTOOL-SAVE-END <sha256 of the stream> <length of the stream>\\n

The stream is libxenguest's own format, untouched; around it, the config the guest was built from
(so restore needs no other file) and a trailer.  An HVM guest's emulated devices live in QEMU, not
in Xen: their state follows the stream, with its length after it (so it is found from the end, and
the header need not know it), and counts as part of the stream for the trailer.  The trailer is written last, after the stream is on
disk, so a file that lacks it was never finished; its checksum catches a file damaged since.  Both
are checked before restore creates anything: a bad file costs nothing to undo.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from xentool.errors import XentoolError

MAGIC = b"XENTOOL-SAVE 1\n"
END_MAGIC = b"XENTOOL-SAVE-END "
TRAILER_SIZE = len(END_MAGIC) + 64 + 1 + 16 + 1  # the hex digest, a space, 16 digits, a newline
MAX_HEADER = 1 << 20  # the JSON line: a config is a few KiB
DM_MAGIC = b"XENTOOL-DM-STATE "
DM_FOOTER_SIZE = len(DM_MAGIC) + 16 + 1
CHUNK = 1 << 20


class SaveFileError(XentoolError):
    """A file that restore cannot use; nothing was created."""

    exit_code = 2

    def __init__(self, path: str | os.PathLike[str], problem: str) -> None:
        self.path = str(path)
        super().__init__(f"{path}: {problem}; nothing was restored")


@dataclass(frozen=True)
class SavedGuest:
    """What the save file says about the guest, and where its stream starts."""

    name: str
    uuid: str
    type: str
    config: dict[str, Any]
    saved_at: float
    stream_offset: int
    stream_length: int
    dm_state_offset: int | None = None  # where QEMU's device state starts (HVM guests)


def write_header(fd: int, name: str, uuid: str, guest_type: str, config: dict[str, Any], saved_at: float) -> int:
    """Write the magic and the guest's line; returns the offset where the stream starts."""
    line = json.dumps({"name": name, "uuid": uuid, "type": guest_type, "config": config, "saved_at": saved_at},
                      sort_keys=True).encode() + b"\n"
    os.write(fd, MAGIC + line)
    return len(MAGIC) + len(line)


def append_device_model_state(fd: int, state: bytes) -> None:
    """After the migration stream: QEMU's device state, then its length."""
    os.lseek(fd, 0, os.SEEK_END)
    write_all(fd, state + DM_MAGIC + f"{len(state):016d}\n".encode())


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def finish(fd: int, stream_offset: int) -> None:
    """After the stream: the trailer with its checksum and length, then fsync (``fd`` must be
    open for reading too)."""
    end = os.lseek(fd, 0, os.SEEK_END)
    digest = _digest(fd, stream_offset, end - stream_offset)
    os.write(fd, END_MAGIC + f"{digest} {end - stream_offset:016d}\n".encode())
    os.fsync(fd)


def _digest(fd: int, offset: int, length: int, progress: Progress | None = None) -> str:
    sha = hashlib.sha256()
    remaining = length
    while remaining > 0:
        chunk = os.pread(fd, min(CHUNK, remaining), offset)
        if not chunk:
            break
        sha.update(chunk)
        offset += len(chunk)
        remaining -= len(chunk)
        if progress is not None:
            progress(CHECKING, (length - remaining) >> 20, length >> 20)
    return sha.hexdigest()


# What a restore is doing, as its progress says (with MiB done and MiB in all).
CHECKING = "checking the file"
LOADING = "loading the guest's memory"
Progress = Callable[[str, int, int], None]


def read(path: str | os.PathLike[str], progress: Progress | None = None) -> SavedGuest:
    """The guest a save file holds, after checking the file is whole (``progress`` hears how far
    the check is, in MiB)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise SaveFileError(path, f"cannot open it: {e.strerror}") from e
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, len(MAGIC) + MAX_HEADER, 0)
        if not head.startswith(MAGIC):
            raise SaveFileError(path, "not a xentool save file (it does not start with XENTOOL-SAVE 1)")
        newline = head.find(b"\n", len(MAGIC))
        if newline < 0:
            raise SaveFileError(path, "the guest's description is cut off: the file is truncated")
        try:
            info = json.loads(head[len(MAGIC):newline])
            offset = newline + 1
            guest = SavedGuest(info["name"], info["uuid"], info["type"], dict(info["config"]), float(info["saved_at"]),
                               offset, 0)
        except (ValueError, KeyError, TypeError) as e:
            raise SaveFileError(path, f"the guest's description is damaged ({e})") from e
        trailer = os.pread(fd, TRAILER_SIZE, max(size - TRAILER_SIZE, 0)) if size >= offset + TRAILER_SIZE else b""
        if not trailer.startswith(END_MAGIC):
            raise SaveFileError(path, "it has no end marker: the save did not finish, or the file was cut short")
        digest, _, length_text = trailer[len(END_MAGIC):].decode(errors="replace").strip().partition(" ")
        length = int(length_text) if length_text.isdigit() else -1
        if length != size - offset - TRAILER_SIZE:
            raise SaveFileError(path, f"the stream should be {length} bytes but {size - offset - TRAILER_SIZE} are there: "
                                "the file was cut or added to")
        if _digest(fd, offset, length, progress) != digest:
            raise SaveFileError(path, "the stream's checksum does not match: the file is damaged")
        return SavedGuest(guest.name, guest.uuid, guest.type, guest.config, guest.saved_at, offset, length,
                          _dm_state_offset(path, fd, guest.type, offset, length))
    finally:
        os.close(fd)


def _dm_state_offset(path: str | os.PathLike[str], fd: int, guest_type: str, offset: int, length: int) -> int | None:
    footer = os.pread(fd, DM_FOOTER_SIZE, offset + length - DM_FOOTER_SIZE) if length >= DM_FOOTER_SIZE else b""
    if not footer.startswith(DM_MAGIC):
        if guest_type == "hvm":
            raise SaveFileError(path, "it holds an HVM guest without its device model's state")
        return None
    size_text = footer[len(DM_MAGIC):].strip()
    size = int(size_text) if size_text.isdigit() else -1
    if not 0 <= size <= length - DM_FOOTER_SIZE:
        raise SaveFileError(path, "the device model's state has a damaged length")
    return offset + length - DM_FOOTER_SIZE - size


__all__ = ["SaveFileError", "SavedGuest", "append_device_model_state", "finish", "read", "write_all", "write_header"]
