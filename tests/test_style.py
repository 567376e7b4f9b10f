"""The style checks, as part of the test suite (so `make test` and CI run them): ruff with the rule
set in pyproject.toml, and mypy: strict on the creation steps, the hypervisor interface, the API
and the data models between them; the rest of the tree type-checked without --strict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREES = ("xentool", "hypercalls", "pvdrivers", "tests", "bench", "ansible_collections")
STRICT = ("xentool/create", "xentool/devices", "xentool/domains.py", "xentool/api.py", "hypercalls/interface.py")


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_finds_nothing():
    result = run("ruff", "check", "--no-cache", *TREES)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("args", [("--strict", *STRICT), ("xentool", "hypercalls", "pvdrivers")], ids=["strict", "tree"])
def test_mypy_finds_nothing(args):
    result = run("mypy", "--cache-dir", "/tmp/xentool-mypy-cache", *args)
    assert result.returncode == 0, result.stdout + result.stderr
