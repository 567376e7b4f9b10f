"""Fixtures the lab's test modules share (the session's ``lab`` itself is in tests/conftest.py;
the helpers that go with these are in tests/kit/lab.py)."""

from __future__ import annotations

import pytest

from xentool.lab import Lab
from xentool.lab.guest_images import GuestImages, install_guest_images


@pytest.fixture(scope="module")
def guests(lab: Lab) -> GuestImages:
    """The lab's kernel and busybox initramfs, with the bootable example ISO, in the lab's share
    (each module installs them once; nothing is rebuilt unless its inputs changed).
    tests/lab/test_pv_devices.py has its own, without the ISO."""
    return install_guest_images(lab.artifacts.kernel, lab.artifacts.busybox, lab.share_dir / "guests",
                                modules_dir=lab.artifacts.modules_dir)
