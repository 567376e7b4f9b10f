"""Shared fixtures.  `lab`: the Xen lab (real Xen 4.17 in QEMU), booted once per test session for
every test marked `lab`, and powered off at the end."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def lab():
    """A running :class:`xentool.lab.Lab` named "pytest" (XENTOOL_TEST_LAB overrides the name;
    XENTOOL_TEST_LAB_KEEP=1 leaves it running afterwards, for the next run to reuse).

    Files the tests put under the host's /tmp are visible (read-only) in dom0; to get files back
    from dom0, write them under ``lab.share_dir``, which is the same directory on both sides."""
    from xentool.lab import Lab

    the_lab = Lab(os.environ.get("XENTOOL_TEST_LAB", "pytest"))
    the_lab.up(timeout=float(os.environ.get("XENTOOL_TEST_LAB_TIMEOUT", "600")))
    # dom0's init starts xentoold as its systemd unit would; the tests run xentool in dom0 a few
    # hundred times, and under TCG Python's start-up costs seconds each time: wait until the
    # daemon serves them warm.  Commands it does not run (consoles, lab) still start their own.
    started = the_lab.exec([str(Path(sys.prefix) / "bin" / "xentool"), "daemon", "start"], capture=True, timeout=600)
    assert started.returncode == 0, started.err
    try:
        yield the_lab
    finally:
        if not os.environ.get("XENTOOL_TEST_LAB_KEEP"):
            the_lab.down()


@pytest.fixture
def kernel(tmp_path: Path) -> Path:
    """A file the simulator's builder accepts as a kernel (it checks the ELF magic, as Xen's does)."""
    path = tmp_path / "vmlinuz"
    path.write_bytes(b"\x7fELF\x02\x01\x01" + bytes(4089))
    return path
