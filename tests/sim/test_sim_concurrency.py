"""Several processes on one simulated host: the lock keeps the books straight."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from hypercalls.interface import retry_transaction
from hypercalls.sim import SimHypervisor

from .conftest import create_spec


def _create_domains(host_path: Path, count: int, results) -> None:  # runs in a child process
    with SimHypervisor(host_path) as hv:
        results.put([hv.domain_create(create_spec()) for _ in range(count)])


def test_concurrent_creates_from_four_processes_get_distinct_domids(host_path, hv):
    ctx = multiprocessing.get_context("fork")
    results = ctx.Queue()
    procs = [ctx.Process(target=_create_domains, args=(host_path, 5, results)) for _ in range(4)]
    for p in procs:
        p.start()
    domids = sorted(d for _ in procs for d in results.get(timeout=30))
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert domids == list(range(1, 21))
    assert [d.domid for d in hv.domain_list()] == list(range(0, 21))


def _increment(host_path: Path, count: int) -> None:  # runs in a child process
    with SimHypervisor(host_path) as hv:
        xs = hv.xenstore()

        def body(txn) -> None:
            xs.write("/tool/counter", str(int(xs.read_or("/tool/counter", "0", txn)) + 1), txn)

        for _ in range(count):
            retry_transaction(xs, body, attempts=1000)


def test_concurrent_transactions_lose_no_update(host_path, hv):
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_increment, args=(host_path, 10)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
        assert p.exitcode == 0
    assert hv.xenstore().read("/tool/counter") == "40"
