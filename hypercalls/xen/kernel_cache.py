"""Decompressed kernels, kept so that the next guest with the same kernel file skips decompression.

Distribution kernels are bzImages whose payload is XZ-compressed.  libxenguest unpacks the payload
in ``xc_dom_parse_image`` on every create: in the lab's dom0 (Xen under QEMU TCG) that is 16 of
xl's 19 seconds for the Debian kernel, and on real hardware still the largest share of a PV
create.  After the builder has unpacked a kernel once, this cache keeps the ELF image it found
inside; the next build of the same file hands libxenguest that ELF, which its ELF loader takes
as it is (the same loader the bzImage loader ends in, so PV and PVH boot exactly as before).

An entry is keyed by the kernel file's identity and change stamps (device, inode, size, mtime and
ctime in nanoseconds): rewriting the file in any way changes the ctime, which no unprivileged
program can set back, so a changed kernel is never served from the cache.  The directory is
root's alone (0700), entries are written to a temporary name and renamed into place, and only
the most recently used few are kept.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DIR = Path("/var/cache/xentool/kernels")
KEEP_ENTRIES = 4  # a Debian kernel unpacks to ~65 MB
ELF_MAGIC = b"\x7fELF"


@dataclass(frozen=True)
class KernelCache:
    directory: Path = DEFAULT_DIR
    keep: int = KEEP_ENTRIES

    def entry_for(self, kernel: str, digest: str | None = None) -> Path:
        """Where the unpacked image of ``kernel`` is (or would be) kept; with ``digest`` (the
        file's SHA-256, which the caller computed), the entry is the content's wherever it lies."""
        if digest is not None:
            identity = f"sha256\0{digest}"
        else:
            st = os.stat(kernel)
            identity = f"{os.path.realpath(kernel)}\0{st.st_dev}\0{st.st_ino}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}"
        return self.directory / (hashlib.sha256(identity.encode()).hexdigest()[:32] + ".elf")

    def lookup(self, kernel: str, digest: str | None = None) -> Path | None:
        """The unpacked image of ``kernel`` if one is kept, marked as just used."""
        try:
            entry = self.entry_for(kernel, digest)
            os.utime(entry)  # the eviction order is the order of use
        except OSError:
            return None
        return entry

    def store(self, kernel: str, image: bytes | memoryview, digest: str | None = None) -> Path | None:
        """Keep ``image`` (what libxenguest unpacked from ``kernel``) if it is an ELF image and
        ``kernel`` is not one already.  A cache that cannot be written costs speed only, so any
        failure here is swallowed and the build goes on."""
        try:
            with open(kernel, "rb") as f:
                if f.read(4) == ELF_MAGIC:
                    return None  # nothing was unpacked
            if bytes(image[:4]) != ELF_MAGIC:
                return None
            entry = self.entry_for(kernel, digest)
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            temporary = entry.with_suffix(f".{os.getpid()}.tmp")
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(image)
                os.replace(temporary, entry)
            except BaseException:
                temporary.unlink(missing_ok=True)
                raise
            self._evict()
            return entry
        except OSError:
            return None

    def _evict(self) -> None:
        entries = sorted(self.directory.glob("*.elf"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
        for old in entries[self.keep:]:
            old.unlink(missing_ok=True)


__all__ = ["KernelCache", "DEFAULT_DIR"]
