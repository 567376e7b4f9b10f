"""What the simulated domain builder checks about the files it is given.

libxenguest's loader (xc_dom_find_loader) refuses a kernel that none of its probes recognises:
an ELF image, a Linux bzImage, or one of the compressed images it can unpack.  The simulator looks
at the same magic numbers, so that a config naming the wrong file fails here as it would on Xen.
"""

from __future__ import annotations

import errno
import os

from hypercalls.errors import XenError

# (offset, magic, what it is)
KERNEL_MAGICS: tuple[tuple[int, bytes, str], ...] = (
    (0, b"\x7fELF", "ELF"),
    (0x202, b"HdrS", "bzImage"),
    (0, b"\x1f\x8b", "gzip"),
    (0, b"\xfd7zXZ\x00", "xz"),
    (0, b"BZh", "bzip2"),
    (0, b"\x02\x21\x4c\x18", "lz4"),
    (0, b"\x28\xb5\x2f\xfd", "zstd"),
)
_HEADER_BYTES = max(offset + len(magic) for offset, magic, _ in KERNEL_MAGICS)


def check_exists(path: str, what: str, domid: int) -> None:
    """``path`` must be a readable regular file (ENOENT, EISDIR or EACCES otherwise)."""
    try:
        with open(path, "rb"):
            pass
    except FileNotFoundError:
        raise XenError("domain_build", errno.ENOENT, domid, f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise XenError("domain_build", errno.EISDIR, domid, f"{what} {path} is a directory") from None
    except PermissionError:
        raise XenError("domain_build", errno.EACCES, domid, f"{what} {path} cannot be read") from None
    except OSError as e:
        raise XenError("domain_build", e.errno or errno.EIO, domid, f"{what} {path}: {e.strerror}") from None
    if not os.path.isfile(path):
        raise XenError("domain_build", errno.EINVAL, domid, f"{what} {path} is not a regular file")


def kernel_format(header: bytes) -> str | None:
    """The format the header's magic names, or None."""
    for offset, magic, name in KERNEL_MAGICS:
        if header[offset : offset + len(magic)] == magic:
            return name
    return None


def check_kernel(path: str, domid: int) -> str:
    """The kernel's format; XenError ENOENT when missing, EINVAL when it is not a kernel."""
    check_exists(path, "kernel", domid)
    with open(path, "rb") as f:
        header = f.read(_HEADER_BYTES)
    found = kernel_format(header)
    if found is None:
        raise XenError("domain_build", errno.EINVAL, domid, f"{path} is not a kernel (no ELF or bzImage header)")
    return found
