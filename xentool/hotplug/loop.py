"""Loop devices for file-backed disks: blkback serves block devices only, so an image file is put
behind /dev/loopN first (what Xen's block hotplug script does with losetup).

The device is configured with LO_FLAGS_AUTOCLEAR: the kernel detaches it when its last user closes
it.  xentool holds it open until blkback has opened it too, then lets go; from then on blkback is
its only user, and the loop device goes away by itself when the backend does (destroy, detach, or a
guest that ends while no xentool process runs).  A failure before that closes xentool's handle and
so detaches it at once: nothing is left behind either way.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from dataclasses import dataclass

# <linux/loop.h>
LOOP_CTL_GET_FREE = 0x4C82
LOOP_CONFIGURE = 0x4C0A
LO_FLAGS_READ_ONLY = 1
LO_FLAGS_AUTOCLEAR = 4
LO_NAME_SIZE = 64
# struct loop_config { __u32 fd; __u32 block_size; struct loop_info64 info; __u64 __reserved[8]; }
# struct loop_info64 { __u64 lo_device, lo_inode, lo_rdevice, lo_offset, lo_sizelimit;
#   __u32 lo_number, lo_encrypt_type, lo_encrypt_key_size, lo_flags;
#   __u8 lo_file_name[64], lo_crypt_name[64], lo_encrypt_key[32]; __u64 lo_init[2]; }
_LOOP_CONFIG = struct.Struct("=II5Q4I64s64s32s2Q8Q")
_ATTEMPTS = 8  # another process may take the free device between GET_FREE and CONFIGURE


@dataclass
class LoopDevice:
    """An attached loop device, held open by this process until :meth:`release`."""

    path: str
    major: int
    minor: int
    fd: int

    def release(self) -> None:
        """Close xentool's handle; the device detaches once nobody else has it open."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def attach(image: str, read_only: bool) -> LoopDevice:
    """Put ``image`` behind a free loop device (read-only if asked), with autoclear set."""
    image_fd = os.open(image, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
    try:
        with open("/dev/loop-control", "rb", buffering=0) as control:
            for _ in range(_ATTEMPTS):
                number = fcntl.ioctl(control, LOOP_CTL_GET_FREE)
                path = f"/dev/loop{number}"
                loop_fd = os.open(path, (os.O_RDONLY if read_only else os.O_RDWR) | os.O_CLOEXEC)
                flags = LO_FLAGS_AUTOCLEAR | (LO_FLAGS_READ_ONLY if read_only else 0)
                name = os.fsencode(image)[: LO_NAME_SIZE - 1]
                config = _LOOP_CONFIG.pack(image_fd, 0, 0, 0, 0, 0, 0, 0, 0, 0, flags, name, b"", b"", 0, 0,
                                           *([0] * 8))
                try:
                    fcntl.ioctl(loop_fd, LOOP_CONFIGURE, config)
                except OSError as e:
                    os.close(loop_fd)
                    if e.errno == errno.EBUSY:
                        continue  # somebody else took it
                    raise
                rdev = os.fstat(loop_fd).st_rdev
                return LoopDevice(path, os.major(rdev), os.minor(rdev), loop_fd)
        raise OSError(errno.EBUSY, f"no free loop device after {_ATTEMPTS} attempts")
    finally:
        os.close(image_fd)  # the loop device holds its own reference to the file


def backing_file(loop_name: str) -> str | None:
    """The file behind /dev/``loop_name`` (None when it is not attached), from sysfs."""
    try:
        with open(f"/sys/block/{loop_name}/loop/backing_file") as f:
            return f.read().strip()
    except OSError:
        return None
