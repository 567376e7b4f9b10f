"""Shared fixtures.  `lab`: the Xen lab (real Xen 4.17 in QEMU), booted once per test session for
every test marked `lab`, and powered off at the end.

A session that runs lab tests runs every other test first, while the lab boots in the background
(and, when the Debian guest's tests are in it, while its disk image is built): both take minutes,
mostly of QEMU's or the network's time, which the fast tests would otherwise wait behind."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from kit.session import start, started


def _lab_name() -> str:
    return os.environ.get("XENTOOL_TEST_LAB", "pytest")


def _boot_lab():
    from xentool.lab import Lab

    the_lab = Lab(_lab_name())
    the_lab.up(timeout=float(os.environ.get("XENTOOL_TEST_LAB_TIMEOUT", "600")))
    # dom0's init starts xentoold as its systemd unit would; the tests run xentool in dom0 a few
    # hundred times, and under TCG Python's start-up costs seconds each time: wait until the
    # daemon serves them warm.  Commands it does not run (consoles, lab) still start their own.
    ran = the_lab.exec([str(Path(sys.prefix) / "bin" / "xentool"), "daemon", "start"], capture=True, timeout=600)
    assert ran.returncode == 0, ran.err
    return the_lab


def _build_debian_disk():
    from xentool.lab.debian_image import DEBIAN_DISK_NAME, install_debian_disk
    from xentool.lab.guest_images import guests_dir

    return install_debian_disk(guests_dir() / DEBIAN_DISK_NAME)


@pytest.hookimpl(trylast=True)  # after -m and -k have deselected what will not run
def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests without the lab first (in their order), then the lab's; and start the lab's set-up."""
    lab_items = [item for item in items if item.get_closest_marker("lab")]
    if not lab_items:
        return
    items[:] = [item for item in items if not item.get_closest_marker("lab")] + lab_items
    start("lab", _boot_lab)
    if any(item.nodeid.startswith("tests/lab/test_debian_guest.py") for item in lab_items):
        start("debian-disk", _build_debian_disk)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A lab booted in the background that no test took (the session ended before the lab tests,
    on a failure with -x or an interrupt) is powered off too, as the fixture would have."""
    booting = started("lab")
    if booting is None or booting.taken or os.environ.get("XENTOOL_TEST_LAB_KEEP"):
        return
    try:
        booting.result().down()
    except Exception as e:  # noqa: BLE001 (the session's own outcome is what to report)
        print(f"\nthe lab booted for this session could not be powered off: {e}")


@pytest.fixture(scope="session")
def lab():
    """A running :class:`xentool.lab.Lab` named "pytest" (XENTOOL_TEST_LAB overrides the name;
    XENTOOL_TEST_LAB_KEEP=1 leaves it running afterwards, for the next run to reuse).

    Files the tests put under the host's /tmp are visible (read-only) in dom0; to get files back
    from dom0, write them under ``lab.share_dir``, which is the same directory on both sides."""
    booting = started("lab")
    if booting is not None:
        booting.taken = True
    the_lab = booting.result() if booting is not None else _boot_lab()
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
