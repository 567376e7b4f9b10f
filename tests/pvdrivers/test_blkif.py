"""vdev names to xenstore device numbers, as docs/misc/vbd-interface.txt defines them."""

import pytest

from pvdrivers.blkif import vdev_to_devid


@pytest.mark.parametrize(
    ("vdev", "devid"),
    [
        ("xvda", 51712),  # 202 << 8
        ("hdd63", 5632 | 64 | 63),
        ("xvdb", 51728),
        ("xvda1", 51713),
        ("xvdp", 51952),
        ("xvdq", (1 << 28) | (16 << 8)),  # past 16 disks: the extended encoding
        ("xvdaa", (1 << 28) | (26 << 8)),
        ("hda", 768),
        ("hdb", 832),
        ("hdc", 5632),  # 22 << 8
        ("sda", 2048),
        ("sdb3", 2067),
    ],
)
def test_vdev_numbers_match_xens_documented_encoding(vdev, devid):
    assert vdev_to_devid(vdev) == devid


@pytest.mark.parametrize("vdev", ["vda", "xvd", "hde", "sdq", "xvda256", "xvda01", "XVDA", ""])
def test_names_xen_cannot_number_are_refused(vdev):
    with pytest.raises(ValueError):
        vdev_to_devid(vdev)
