"""Virtual block device numbering (docs/misc/vbd-interface.txt).

A guest's disk is named by a vdev ("xvda", "hdc", "sdb2"); xenstore and the blkif protocol name it
by a number, the devid, which the frontend turns back into a Linux device.  The encodings below are
the ones Xen documents, so a guest sees the disk under the name its config gives.
"""

from __future__ import annotations

import re

_VDEV = re.compile(r"^(xvd|hd|sd)([a-z]+)(\d*)$")

XVD_MAJOR = 202
SCSI_MAJOR = 8
IDE_MAJORS = (3, 22, 33, 34)  # hda/hdb, hdc/hdd, hde/hdf, hdg/hdh
EXTENDED = 1 << 28


def _disk_index(letters: str) -> int:
    """a -> 0, z -> 25, aa -> 26 (bijective base 26, as Linux names disks)."""
    index = 0
    for ch in letters:
        index = index * 26 + (ord(ch) - ord("a") + 1)
    return index - 1


def vdev_to_devid(vdev: str) -> int:
    """The xenstore devid for ``vdev``; raises ValueError for a name Xen does not accept."""
    match = _VDEV.match(vdev)
    if not match:
        raise ValueError(f"{vdev!r} is not a virtual disk name (xvdX, hdX or sdX with an optional partition)")
    prefix, letters, part_text = match.groups()
    disk = _disk_index(letters)
    part = int(part_text) if part_text else 0
    if prefix == "xvd":
        if disk < 16 and part < 16:
            return (XVD_MAJOR << 8) | (disk << 4) | part
        if disk < (1 << 20) and part < 256:
            return EXTENDED | (disk << 8) | part
    elif prefix == "hd":
        if disk < 8 and part < 64:
            return (IDE_MAJORS[disk // 2] << 8) | ((disk % 2) << 6) | part
    elif prefix == "sd":
        if disk < 16 and part < 16:
            return (SCSI_MAJOR << 8) | (disk << 4) | part
    raise ValueError(f"{vdev!r} is outside the range Xen can number")
