"""CPU placement and the credit2 scheduler's weight and cap on real Xen, read back by xl and set by xl
for xentool to read (the lab's Xen has 2 CPUs and runs credit2)."""

from __future__ import annotations

import json
import time

import pytest

from kit.lab import wait_for_console, write_config, xentool

pytestmark = pytest.mark.lab


def xl_vcpus(lab, name: str) -> dict[int, tuple[str, str]]:
    """xl vcpu-list: vcpu -> (hard, soft) affinity."""
    listed = lab.exec(["xl", "vcpu-list", name], capture=True)
    assert listed.returncode == 0, listed.err
    rows = {}
    for line in listed.out.splitlines()[1:]:
        fields = line.split()
        rows[int(fields[2])] = (fields[-3], fields[-1])  # ... Time(s) HARD / SOFT
    return rows


def xl_credit2(lab, name: str) -> tuple[int, int]:
    shown = lab.exec(["xl", "sched-credit2", "-d", name], capture=True)
    assert shown.returncode == 0, shown.err
    fields = shown.out.splitlines()[-1].split()
    return int(fields[2]), int(fields[3])


def test_placement_and_weights_set_by_one_toolstack_are_read_by_the_other(lab, guests):
    config = write_config(lab, guests, "placed", vcpus=2, cpus='"1"', cpus_soft='"1"', sched="{weight: 512, cap: 50}")
    created = xentool(lab, "create", str(config))
    assert created.returncode == 0, created.err
    try:
        assert xl_vcpus(lab, "placed") == {0: ("1", "1"), 1: ("1", "1")}
        assert xl_credit2(lab, "placed") == (512, 50)
        info = json.loads(xentool(lab, "info", "--json", "placed").out)
        assert (info["scheduler"], info["weight"], info["cap"]) == ("credit2", 512, 50)

        assert lab.exec(["xl", "vcpu-pin", "placed", "0", "0", "all"], capture=True).returncode == 0
        assert lab.exec(["xl", "sched-credit2", "-d", "placed", "-w", "300", "-c", "0"], capture=True).returncode == 0
        rows = {r["vcpu"]: r for r in json.loads(xentool(lab, "vcpu-list", "--json", "placed").out)}
        assert (rows[0]["hard_affinity"], rows[0]["soft_affinity"]) == ("0", "all")
        assert (rows[1]["hard_affinity"], rows[1]["soft_affinity"]) == ("1", "1")
        shown = json.loads(xentool(lab, "sched-credit2", "-d", "placed", "--json").out)
        assert [(s["weight"], s["cap"]) for s in shown] == [(300, 0)]

        pinned = xentool(lab, "vcpu-pin", "placed", "all", "all", "0")
        assert pinned.returncode == 0, pinned.err
        assert xl_vcpus(lab, "placed") == {0: ("all", "0"), 1: ("all", "0")}

        wrong = xentool(lab, "sched-credit", "-d", "placed", "-w", "5")
        assert wrong.returncode != 0
        assert "placed runs under the credit2 scheduler (its cpupool's), not credit; use xentool sched-credit2" in wrong.err
        outside = xentool(lab, "vcpu-pin", "placed", "0", "2")
        assert outside.returncode != 0 and "cpu 2 is not on this host; its cpus are 0-1" in outside.err
    finally:
        xentool(lab, "destroy", "placed")


def xl_pool_params(lab, scheduler: str, pool: str) -> str:
    shown = lab.exec(["xl", f"sched-{scheduler}", "-s", "-p", pool], capture=True)
    assert shown.returncode == 0, shown.err
    return shown.out.strip()


def test_a_second_pool_with_the_other_scheduler_runs_a_guest_and_xl_sees_it(lab, guests):
    """One of the lab's two CPUs moves into a pool running credit (Pool-0 runs credit2); a guest made in
    it and one moved there run under credit; xl names the pool as xentool does; each pool's own
    scheduler parameters set by one toolstack are read by the other; all is put back."""
    pool0_before = xentool(lab, "sched-credit2", "-s").out.strip()
    assert pool0_before == xl_pool_params(lab, "credit2", "Pool-0"), pool0_before
    spec = lab.share_dir / "lab-credit.yaml"
    spec.write_text("name: lab-credit\nsched: credit\ncpus: [1]\n")
    busy = xentool(lab, "cpupool-create", str(spec))
    assert busy.returncode != 0 and "cpu 1 is in Pool-0; take it out first" in busy.err
    try:
        assert xentool(lab, "cpupool-cpu-remove", "Pool-0", "1").returncode == 0
        made = xentool(lab, "cpupool-create", str(spec))
        assert made.returncode == 0, made.err
        config = write_config(lab, guests, "pooled", pool="lab-credit")
        created = xentool(lab, "create", str(config))
        assert created.returncode == 0, created.err
        pools = {p["name"]: p for p in json.loads(xentool(lab, "cpupool-list", "--json").out)}
        assert (pools["lab-credit"]["scheduler"], pools["lab-credit"]["cpus"], pools["lab-credit"]["domains"]) == ("credit", [1], 1)
        assert pools["Pool-0"]["cpus"] == [0]
        xl_pools = lab.exec(["xl", "cpupool-list"], capture=True).out
        assert any(line.split()[:4] == ["lab-credit", "1", "credit", "y"] for line in xl_pools.splitlines()), xl_pools
        assert xentool(lab, "sched-credit", "-d", "pooled", "-w", "128").returncode == 0
        shown = lab.exec(["xl", "sched-credit", "-d", "pooled"], capture=True).out.splitlines()[-1].split()
        assert shown[2] == "128", shown
        assert json.loads(xentool(lab, "info", "--json", "pooled").out)["pool"] == "lab-credit"
        moved = xentool(lab, "cpupool-migrate", "pooled", "Pool-0")
        assert moved.returncode == 0, moved.err
        assert json.loads(xentool(lab, "info", "--json", "pooled").out)["scheduler"] == "credit2"

        assert xentool(lab, "sched-credit", "-s", "-p", "lab-credit", "-t", "10", "-r", "5000", "-m", "300").returncode == 0
        assert xl_pool_params(lab, "credit", "lab-credit") == "Cpupool lab-credit: tslice=10ms ratelimit=5000us migration-delay=300us"
        assert lab.exec(["xl", "sched-credit", "-s", "-p", "lab-credit", "-t", "20"], capture=True).returncode == 0
        shown = xentool(lab, "sched-credit", "-s", "-p", "lab-credit")
        assert shown.out.strip() == "Cpupool lab-credit: tslice=20ms ratelimit=5000us migration-delay=300us", shown.err
        too_long = xentool(lab, "sched-credit", "-s", "-p", "lab-credit", "-r", "30000")
        assert too_long.returncode == 2 and "ratelimit 30000 us is longer than the time slice (20 ms)" in too_long.err
        assert xentool(lab, "sched-credit2", "-s", "-r", "2500").returncode == 0
        assert xl_pool_params(lab, "credit2", "Pool-0") == "Cpupool Pool-0: ratelimit=2500us"

        gone = xentool(lab, "cpupool-destroy", "lab-credit")
        assert gone.returncode == 0, gone.err
    finally:
        before = pool0_before.rsplit("ratelimit=", 1)[-1].removesuffix("us")
        lab.exec(["xl", "sched-credit2", "-s", "-r", before], capture=True)
        xentool(lab, "destroy", "pooled")
        if "lab-credit" in lab.exec(["xl", "cpupool-list"], capture=True).out:
            lab.exec(["xl", "cpupool-destroy", "lab-credit"], capture=True)
        lab.exec(["xl", "cpupool-cpu-add", "Pool-0", "1"], capture=True)
    assert [(p["name"], p["cpus"]) for p in json.loads(xentool(lab, "cpupool-list", "--json").out)] == [("Pool-0", [0, 1])]


def test_a_guest_balloons_up_within_maxmem_and_mem_max_moves_the_ceiling(lab, guests):
    config = write_config(lab, guests, "ballooned", maxmem=256)
    created = xentool(lab, "create", str(config))
    assert created.returncode == 0, created.err
    try:
        wait_for_console(lab, "ballooned", "xentool-guest: marker=ballooned")
        assert xl_memory(lab, "ballooned") == 128
        assert xentool(lab, "mem-set", "ballooned", "200").returncode == 0
        deadline = time.monotonic() + 120
        while xl_memory(lab, "ballooned") < 199 and time.monotonic() < deadline:  # the guest's balloon driver
            time.sleep(2)
        assert 199 <= xl_memory(lab, "ballooned") <= 200
        above = xentool(lab, "mem-set", "ballooned", "300")
        assert above.returncode == 2 and "300 MiB is above its maxmem of 256 MiB" in above.err
        below = xentool(lab, "mem-max", "ballooned", "150")
        assert below.returncode == 2 and "150 MiB is below its memory target of 200 MiB" in below.err
        assert xentool(lab, "mem-max", "ballooned", "384").returncode == 0
        info = json.loads(xentool(lab, "info", "--json", "ballooned").out)
        assert (info["max_memory_mib"], info["target_memory_mib"]) == (385, 200)  # xl's 1 MiB of slack on top
    finally:
        xentool(lab, "destroy", "ballooned")


def xl_memory(lab, name: str) -> int:
    listed = lab.exec(["xl", "list", name], capture=True)
    assert listed.returncode == 0, listed.err
    return int(listed.out.splitlines()[1].split()[2])


def xentop_cpu_percent(lab, name: str, delay: int) -> float:
    """The guest's CPU(%) in xentop's second batch sample (the first has no interval to measure)."""
    for program in ("xentop", "/usr/lib/xen-4.17/bin/xentop"):
        shown = lab.exec([program, "-b", "-i", "2", "-d", str(delay)], capture=True)
        if shown.returncode != 127:
            break
    assert shown.returncode == 0, shown.err
    rows = [line.split() for line in shown.out.splitlines() if line.split()[:1] == [name]]
    assert len(rows) == 2, shown.out
    return float(rows[-1][3])  # NAME STATE CPU(sec) CPU(%) ...


def test_top_and_xentop_see_a_busy_guests_cpu_alike(lab, guests):
    """A guest that keeps its vcpu busy: `top --once --json` and xentop (what `xl top` runs) both
    measure it, from the same CPU time Xen keeps, within a tolerance (they sample at different
    moments of a lab whose two CPUs dom0 shares)."""
    created = xentool(lab, "create", str(write_config(lab, guests, "burner", then="burn")))
    assert created.returncode == 0, created.err
    try:
        wait_for_console(lab, "burner", "xentool-guest: marker=burner then=burn")
        listed = xentool(lab, "top", "--json", "--delay", "3")
        assert listed.returncode == 0, listed.err
        ours = {row["name"]: row for row in json.loads(listed.out)}["burner"]["cpu_percent"]
        theirs = xentop_cpu_percent(lab, "burner", 3)
        assert theirs > 40 and abs(ours - theirs) < 25, (ours, theirs)
    finally:
        xentool(lab, "destroy", "burner")
