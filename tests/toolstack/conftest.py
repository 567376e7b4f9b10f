"""Fixtures for the toolstack tests: a fresh simulated host per test, and guest files to boot."""

from __future__ import annotations

from pathlib import Path

import pytest

import xentool
from xentool.config import config_from_dict


@pytest.fixture
def sim_url(tmp_path: Path) -> str:
    return f"sim://{tmp_path / 'host'}"


@pytest.fixture
def xt(sim_url: str):
    with xentool.connect(sim_url) as toolstack:
        yield toolstack


@pytest.fixture
def make_config(kernel: Path):
    def make(**fields):
        data = {"name": "web", "type": "pv", "kernel": str(kernel), "memory": 128, "vcpus": 1}
        data.update(fields)
        return config_from_dict(data)

    return make


def xenstore_dump(xs, path: str = "/") -> dict[str, str]:
    """Every node below ``path`` with its value and permissions, for before/after comparisons."""
    nodes: dict[str, str] = {}

    def walk(p: str) -> None:
        perms = ",".join(f"{x.perm.value}{x.domid}" for x in xs.get_perms(p))
        nodes[p] = f"{xs.read_or(p, '')} [{perms}]"
        for child in xs.list_or_empty(p):
            walk(f"{p.rstrip('/')}/{child}")

    walk(path)
    return nodes


def host_snapshot(toolstack) -> dict:
    hv = toolstack.hv
    return {
        "domains": [(d.domid, d.name, d.state) for d in toolstack.list_domains()],
        "free_kib": hv.physinfo().free_kib,
        "xenstore": xenstore_dump(hv.xenstore()),
        "dom0_evtchns": hv.evtchn_list(0),
    }
