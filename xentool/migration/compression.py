"""The migration stream, compressed on its way (zstd, fast level): what the sender sends after the
target accepted the guest (Xen's stream, QEMU's state, "go") is one zstd frame, flushed after
every write so that nothing waits in the compressor while the receiver waits for it.

Why: over ssh the copy is bound by ssh's own work (its cipher), not by the link: in the lab, 1-1.7
MB/s over ssh where the link carries 8 MB/s.  Xen's stream sends every page of the guest, and
most of a guest's memory is zero pages or repeats, which zstd's fastest levels shrink at far more
than the link's speed while costing little on pages that do not shrink (they pass as raw blocks).
The two ends agree on it: the receiver lists what it can read in its hello, the offer says what
the sender uses.
"""

from __future__ import annotations

import fcntl
import os
import threading
from typing import Any

from xentool.savefile import write_all

ZSTD = "zstd"
LEVEL = 1
CHUNK = 1 << 20
PIPE_BYTES = 1 << 20  # fewer, larger reads and writes between the stream's writer and the thread


def supported() -> list[str]:
    """What this end can compress and decompress (zstd needs the ``zstandard`` module)."""
    try:
        import zstandard  # noqa: F401
    except ImportError:
        return []
    return [ZSTD]


def widen_pipe(fd: int) -> None:
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # above the host's pipe-max-size: the default size works, more slowly


class CompressingPipe:
    """``fd``: what is written to it goes to ``destination`` compressed.  Closing it (:meth:`close`)
    ends the frame; a destination that fails (the connection broke) closes the pipe's reading end,
    so the writer gets EPIPE, as it would writing to the connection itself."""

    def __init__(self, destination: int) -> None:
        import zstandard

        self._compressor = zstandard.ZstdCompressor(level=LEVEL).compressobj()
        self._flush_block = zstandard.COMPRESSOBJ_FLUSH_BLOCK
        read_end, self.fd = os.pipe2(os.O_CLOEXEC)
        widen_pipe(self.fd)
        self._thread = threading.Thread(target=self._run, args=(read_end, destination), name="migration-compress", daemon=True)
        self._thread.start()

    def _run(self, read_end: int, destination: int) -> None:
        try:
            while data := os.read(read_end, CHUNK):
                write_all(destination, self._compressor.compress(data) + self._compressor.flush(self._flush_block))
            write_all(destination, self._compressor.flush())
        except OSError:
            pass  # the connection broke: closing read_end tells the writer
        finally:
            os.close(read_end)

    def close(self, timeout: float = 30.0) -> None:
        try:
            os.close(self.fd)
        except OSError:
            pass
        self._thread.join(timeout)


def decompressor(method: str) -> Any:
    """An object whose ``decompress(data)`` returns what ``data`` continues of the sender's stream."""
    if method != ZSTD or not supported():
        raise ValueError(f"the sender compresses its stream with {method!r}, which this host cannot read")
    import zstandard

    return zstandard.ZstdDecompressor().decompressobj()


__all__ = ["ZSTD", "CompressingPipe", "decompressor", "supported", "widen_pipe"]
