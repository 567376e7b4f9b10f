"""Virtual block device numbering (docs/misc/vbd-interface.txt, libxl__device_disk_dev_number).

A guest's disk is named by a vdev ("xvda", "hdc", "sdb2"); xenstore and the blkif protocol name it
by a number, the devid, which the frontend turns back into a Linux device.  The ranges are libxl's,
so a config xentool accepts is one xl accepts too.
"""

from __future__ import annotations

import re

XVD_MAJOR = 202
SCSI_MAJOR = 8
IDE_MAJORS = (3, 22)  # hda/hdb, hdc/hdd: libxl numbers no further IDE disks
EXTENDED = 1 << 28

# prefix -> (highest disk index, highest partition)
_LIMITS = {"xvd": ((1 << 20) - 1, 255), "hd": (3, 63), "sd": (15, 15)}
_VDEV = re.compile(r"^(xvd|hd|sd)([a-z]+)([1-9]\d*)?$")  # no leading zero in a partition, as libxl


def _disk_index(letters: str) -> int:
    """a -> 0, z -> 25, aa -> 26: bijective base 26, as Linux names disks."""
    index = 0
    for ch in letters:
        index = index * 26 + (ord(ch) - ord("a") + 1)
    return index - 1


def vdev_to_devid(vdev: str) -> int:
    """The xenstore devid for ``vdev``; raises ValueError for a name Xen does not accept."""
    match = _VDEV.match(vdev)
    if not match:
        raise ValueError(f"{vdev!r} is not a virtual disk name (xvdX, hdX or sdX, with an optional partition number)")
    prefix, letters, part_text = match.groups()
    disk, part = _disk_index(letters), int(part_text or 0)
    max_disk, max_part = _LIMITS[prefix]
    if disk > max_disk or part > max_part:
        raise ValueError(f"{vdev!r} is outside what Xen can number ({prefix} disks up to index {max_disk}, partitions up to {max_part})")
    if prefix == "xvd":
        if disk <= 15 and part <= 15:
            return (XVD_MAJOR << 8) | (disk << 4) | part
        return EXTENDED | (disk << 8) | part
    if prefix == "hd":
        return (IDE_MAJORS[disk // 2] << 8) | ((disk & 1) << 6) | part
    return (SCSI_MAJOR << 8) | (disk << 4) | part
