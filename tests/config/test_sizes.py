"""Memory sizes as people write them."""

from __future__ import annotations

import pytest

from xentool.config.sizes import parse_size_mib


@pytest.mark.parametrize(
    "text, mib",
    [(512, 512), ("512", 512), ("512M", 512), ("512MiB", 512), ("512m", 512), ("2G", 2048), ("2GiB", 2048),
     ("2GB", 2048), ("1T", 1024 * 1024), ("1048576K", 1024), ("1.5G", 1536), (" 64 M ", 64), (2.0, 2)],
)
def test_sizes_people_write(text, mib):
    assert parse_size_mib(text) == mib


@pytest.mark.parametrize("text", ["lots", "", "0", 0, -5, "-5M", "1000K", "0.5M", 1.5, "2X", "2 G B", True, None, [], "1e3", float("nan")])
def test_not_sizes(text):
    with pytest.raises(ValueError):
        parse_size_mib(text)


def test_message_says_what_is_accepted():
    with pytest.raises(ValueError, match='"lots" is not a size; use MiB or a size like 512M or 2G'):
        parse_size_mib("lots")
    with pytest.raises(ValueError, match="whole number of MiB"):
        parse_size_mib("1000K")
