"""vcpu-pin, vcpu-list and the credit schedulers' weight and cap, on the simulated hypervisor (4 CPUs,
credit2, as Xen 4.17 defaults to)."""

from __future__ import annotations

import pytest

from xentool.errors import ConfigError, UnsupportedByHost, UsageError
from xentool.placement import cpu_set, cpu_text

from .conftest import host_snapshot


def test_cpu_sets_are_written_as_xl_writes_them():
    assert cpu_set("all", 4, "x") == frozenset(range(4))
    assert cpu_set("0-1,3", 4, "x") == frozenset({0, 1, 3})
    assert cpu_set("-", 4, "x") is None
    assert cpu_text(frozenset({0, 1, 3}), 4) == "0-1,3"
    assert cpu_text(frozenset(range(4)), 4) == "all"
    with pytest.raises(UsageError) as e:
        cpu_set("2-5", 4, "hard affinity")
    assert str(e.value) == "hard affinity: cpu 4 is not on this host; its cpus are 0-3"


def test_config_cpus_and_weight_apply_at_creation_and_read_back(xt, make_config):
    xt.create(make_config(vcpus=2, cpus="1-2", cpus_soft="2", sched={"weight": 512, "cap": 50}))
    rows = xt.vcpu_list("web")
    assert [(r.vcpu, r.hard_affinity, r.soft_affinity) for r in rows] == [(0, "1-2", "2"), (1, "1-2", "2")]
    details = xt.info("web")
    assert (details.scheduler, details.weight, details.cap) == ("credit2", 512, 50)


def test_vcpu_pin_one_vcpu_or_all_and_leave_the_other_affinity(xt, make_config):
    xt.create(make_config(vcpus=2))
    xt.vcpu_pin("web", 1, "3")
    xt.vcpu_pin("web", "all", "-", "0-1")
    rows = {r.vcpu: r for r in xt.vcpu_list("web")}
    assert (rows[0].hard_affinity, rows[0].soft_affinity) == ("all", "0-1")
    assert (rows[1].hard_affinity, rows[1].soft_affinity) == ("3", "0-1")
    with pytest.raises(UsageError, match="the domain has vcpus 0..1"):
        xt.vcpu_pin("web", 2, "0")
    with pytest.raises(UsageError, match="cpu 7 is not on this host"):
        xt.vcpu_pin("web", 0, "7")
    assert any(r.name == "Domain-0" for r in xt.vcpu_list())


def test_weight_and_cap_are_checked_and_changed_one_at_a_time(xt, make_config):
    xt.create(make_config(vcpus=2))
    xt.sched_set("web", weight=100, scheduler="credit2")
    xt.sched_set("web", cap=150)
    params = xt.sched_get("web")
    assert (params.weight, params.cap) == (100, 150)
    with pytest.raises(UsageError, match=r"give 0 \(no cap\) up to 200"):
        xt.sched_set("web", cap=201)
    with pytest.raises(UsageError, match="give 1..65535"):
        xt.sched_set("web", weight=0)
    with pytest.raises(UsageError, match="runs under the credit2 scheduler .* use xentool sched-credit2"):
        xt.sched_set("web", weight=10, scheduler="credit")


def test_cpus_the_host_lacks_are_refused_before_anything_is_made(xt, make_config):
    before = host_snapshot(xt)
    with pytest.raises(UnsupportedByHost) as e:
        xt.create(make_config(cpus_soft="2-9"))
    assert str(e.value) == "domain web: cpus_soft: cpu 4 is not on this host; its cpus are 0-3"
    assert host_snapshot(xt) == before
    with pytest.raises(ConfigError, match="more than 1 vcpus can use"):
        make_config(sched={"cap": 150})


def test_maxmem_gives_headroom_that_mem_set_may_use_and_mem_max_moves(xt, make_config):
    xt.create(make_config(memory=128, maxmem=256))
    assert xt.info("web").max_memory_mib == 257  # maxmem and libxl's 1 MiB of slack, as xl list shows it
    xt.mem_set("web", 200)
    assert xt.info("web").target_memory_mib == 200
    with pytest.raises(UsageError, match="above its maxmem of 256 MiB"):
        xt.mem_set("web", 300)
    with pytest.raises(UsageError, match="below its memory target of 200 MiB"):
        xt.mem_max("web", 150)
    xt.mem_max("web", 512)
    xt.mem_set("web", 300)
    assert xt.info("web").max_memory_mib == 513
    assert xt.hv.xenstore().read(f"/local/domain/{xt.info('web').domid}/memory/static-max") == str(512 * 1024)


def test_traffic_is_counted_from_dom0s_backends_the_guests_way_round(xt, tmp_path):
    from xentool.stats import Traffic, traffic

    xs = xt.hv.xenstore()
    xs.write("/local/domain/0/backend/vif/5/0/state", "4")
    xs.write("/local/domain/0/backend/vif/5/1/vifname", "web-eth1")
    for name, rx, tx in (("vif5.0", 100, 1000), ("web-eth1", 20, 300)):
        counters = tmp_path / "net" / name / "statistics"
        counters.mkdir(parents=True)
        (counters / "rx_bytes").write_text(f"{rx}\n")
        (counters / "tx_bytes").write_text(f"{tx}\n")
    disk = tmp_path / "backend" / "vbd-5-51712" / "statistics"
    disk.mkdir(parents=True)
    (disk / "rd_sect").write_text("8\n")
    (disk / "wr_sect").write_text("2\n")
    (tmp_path / "backend" / "vbd-15-51712").mkdir()  # another domain's
    assert traffic(xt.hv, 5, tmp_path / "net", tmp_path / "backend") == Traffic(
        net_rx=1300, net_tx=120, block_read=4096, block_written=1024
    )
    # And what the domain's QEMU served itself (its emulated disks, its qdisks), added to blkback's.
    assert traffic(xt.hv, 5, tmp_path / "net", tmp_path / "backend", served_by_qemu=(10_000, 20)) == Traffic(
        net_rx=1300, net_tx=120, block_read=14_096, block_written=1044
    )


def test_disks_qemu_serves_are_counted_from_its_blockstats_for_the_domains_that_have_one(tmp_path, monkeypatch):
    """query-blockstats' top-level devices are summed (a backing file's figures are part of its
    disk's); only domains with a QMP socket are asked, all at once; one that does not answer is
    left out."""
    from xentool import stats
    from xentool.devicemodel import paths, qmp

    monkeypatch.setattr(paths, "qmp_socket_path", lambda domid: str(tmp_path / f"qmp-{domid}"))
    for domid in (3, 4):
        (tmp_path / f"qmp-{domid}").touch()
    asked: list[list[int]] = []

    def ask_each(domids, command, timeout):
        asked.append(list(domids))
        assert command == "query-blockstats"
        return {3: [{"device": "ide0-hd0", "stats": {"rd_bytes": 4096, "wr_bytes": 512},
                     "backing": {"stats": {"rd_bytes": 999, "wr_bytes": 999}}},
                    {"device": "ide1-cd0", "stats": {"rd_bytes": 1 << 20, "wr_bytes": 0}}]}  # 4 did not answer

    monkeypatch.setattr(qmp, "qmp_ask_each", ask_each)
    assert stats.device_model_block_traffic({3, 4, 5}) == {3: (4096 + (1 << 20), 512)}
    assert asked == [[3, 4]]


def test_a_pool_of_its_own_cpus_and_scheduler_runs_a_guest_moved_or_made_in_it(xt, make_config, tmp_path):
    from xentool.cpupools import PoolSpec
    from xentool.errors import CpuPoolError

    before = host_snapshot(xt)
    with pytest.raises(CpuPoolError, match="cpu 3 is in Pool-0; take it out first"):
        xt.cpupool_create("fast", "credit", [3])
    assert host_snapshot(xt) == before
    xt.cpupool_cpu_remove("Pool-0", 3)
    pool = xt.cpupool_create("fast", "credit", [3])
    assert (pool.name, pool.scheduler, pool.cpus, pool.domains) == ("fast", "credit", [3], 0)
    assert [(p.name, p.cpus) for p in xt.cpupools()] == [("Pool-0", [0, 1, 2]), ("fast", [3])]

    xt.create(make_config())
    xt.cpupool_migrate("web", "fast")
    details = xt.info("web")
    assert (details.pool, details.scheduler) == ("fast", "credit")
    xt.sched_set("web", weight=64, scheduler="credit")
    with pytest.raises(CpuPoolError, match="1 domain\\(s\\) still run in it"):
        xt.cpupool_destroy("fast")
    with pytest.raises(CpuPoolError, match="cpu 3 is its last and 1 domain"):
        xt.cpupool_cpu_remove("fast", 3)
    xt.create(make_config(name="made-there", pool="fast"))
    assert xt.info("made-there").pool == "fast"
    with pytest.raises(UnsupportedByHost, match="pool: no cpupool named 'slow'; this host has Pool-0, fast"):
        xt.create(make_config(name="nowhere", pool="slow"))

    xt.destroy("web")
    xt.destroy("made-there")
    xt.cpupool_destroy("fast")
    xt.cpupool_cpu_add("Pool-0", 3)
    assert [(p.name, p.cpus) for p in xt.cpupools()] == [("Pool-0", [0, 1, 2, 3])]
    assert xt.hv.xenstore().read_or("/local/pool/1/name") is None

    spec = tmp_path / "pool.yaml"
    spec.write_text("name: p\nsched: fifo\n")
    with pytest.raises(UsageError, match="sched: 'fifo' is not a scheduler"):
        PoolSpec.from_file(spec)
    spec.write_text("name: p\ncpus: 1-2\n")
    assert PoolSpec.from_file(spec) == PoolSpec("p", "credit2", frozenset({1, 2}))


def test_a_pools_own_scheduler_parameters_are_read_and_set_as_xl_checks_them(xt):
    from xentool.errors import CpuPoolError

    pool0 = xt.pool_sched_get()
    assert (pool0.pool, pool0.scheduler, pool0.ratelimit_us, pool0.tslice_ms) == ("Pool-0", "credit2", 1000, None)
    assert pool0.describe() == "Cpupool Pool-0: ratelimit=1000us"
    assert xt.pool_sched_set("Pool-0", "credit2", ratelimit_us=2000).ratelimit_us == 2000
    assert xt.pool_sched_get("0").ratelimit_us == 2000  # by id too, as xl takes it
    assert xt.pool_sched_set(ratelimit_us=0).ratelimit_us == 0  # no rate limit
    with pytest.raises(UsageError, match=r"^ratelimit 50 us: give 0 \(no rate limit\) or 100..500000$"):
        xt.pool_sched_set(ratelimit_us=50)
    with pytest.raises(UsageError, match="credit2 has a rate limit only"):
        xt.pool_sched_set(tslice_ms=10)
    with pytest.raises(CpuPoolError, match=r"cpupool Pool-0: it runs the credit2 scheduler, not credit; use xentool sched-credit2 -s"):
        xt.pool_sched_get("Pool-0", "credit")

    xt.cpupool_cpu_remove("Pool-0", 3)
    xt.cpupool_create("batch", "credit", [3])
    batch = xt.pool_sched_set("batch", "credit", tslice_ms=10, ratelimit_us=5000, migration_delay_us=300)
    assert batch.describe() == "Cpupool batch: tslice=10ms ratelimit=5000us migration-delay=300us"
    assert xt.pool_sched_get("batch", "credit") == batch
    with pytest.raises(UsageError, match=r"ratelimit 20000 us is longer than the time slice \(10 ms\)"):
        xt.pool_sched_set("batch", "credit", ratelimit_us=20000)
    with pytest.raises(UsageError, match=r"tslice 0 ms: give 1..1000"):
        xt.pool_sched_set("batch", "credit", tslice_ms=0)
    with pytest.raises(UsageError, match=r"migration delay 200000 us: give 0..100000"):
        xt.pool_sched_set("batch", "credit", migration_delay_us=200000)
    assert xt.pool_sched_get("batch", "credit") == batch  # nothing refused was set
    assert xt.pool_sched_get().ratelimit_us == 0  # another pool's are its own


def test_sched_credit2_s_shows_and_sets_a_pools_rate_limit_as_xl_does(capsys, sim_url):
    from kit.cli import run

    assert run(capsys, "--connect", sim_url, "sched-credit2", "-s") == (0, "Cpupool Pool-0: ratelimit=1000us\n", "")
    assert run(capsys, "--connect", sim_url, "sched-credit2", "-s", "-p", "Pool-0", "-r", "1500") == (0, "", "")
    code, out, _ = run(capsys, "--connect", sim_url, "sched-credit2", "-s", "--json")
    assert code == 0 and '"ratelimit_us": 1500' in out
    code, _, err = run(capsys, "--connect", sim_url, "sched-credit2", "-r", "1500")
    assert code == 2 and "add -s" in err
    code, _, err = run(capsys, "--connect", sim_url, "sched-credit2", "-s", "-d", "0")
    assert code == 2 and "one or the other" in err
    code, _, err = run(capsys, "--connect", sim_url, "sched-credit", "-s")
    assert code == 5 and "runs the credit2 scheduler, not credit; use xentool sched-credit2 -s" in err
