"""Runs ``test_real_xen.py`` inside the lab's dom0 (the session's `lab` fixture boots the lab)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from hypercalls.connect import is_dom0
from hypercalls.xen import _ffi_build

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(is_dom0(), reason="this is dom0: test_real_xen.py runs here directly"),
]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent


def test_the_real_backend_passes_its_tests_in_dom0(lab):
    # dom0 sees this checkout read-only: compile the bindings here first.
    if _ffi_build.missing_build_prerequisites():
        pytest.skip("cannot compile the Xen bindings on this host: " + ", ".join(
            map(str, _ffi_build.missing_build_prerequisites())))
    _ffi_build.compile_bindings()
    result = lab.exec(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfEs", str(HERE / "test_real_xen.py")],
        cwd=REPO, capture=True, timeout=1800,
    )
    assert result.returncode == 0, result.out[-6000:] + result.err[-2000:]
