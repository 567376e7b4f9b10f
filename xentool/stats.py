"""What each domain uses, as xentop shows it: CPU (from Xen's per-domain CPU time, sampled twice),
memory and vcpus (xc_domain_getinfo), and network and disk traffic as dom0's backends count it.

The traffic comes from the kernel backends in dom0: netback's interfaces (vifD.N, or the vifname
the backend node records; the counters are dom0's side, so what the interface receives is what
the guest sends) and blkback's devices (/sys/bus/xen-backend/devices/vbd-D-N/statistics, in
512-byte sectors); and the disks a domain's QEMU serves itself (an HVM guest's emulated disks and
CD-ROMs, a PV guest's qdisk images) from QEMU's own figures (QMP query-blockstats), asked of
every such QEMU at once.  Each request goes one way only (an HVM guest's disk through QEMU until
its PV drivers unplug it, then through blkback), so the sum counts nothing twice.  A host
without kernel backends (the simulator) reports no traffic (None), not zero.
"""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hypercalls.interface import DomainInfo, Hypervisor
from xentool.devicemodel import paths, qmp

SYS_NET = Path("/sys/class/net")
SYS_XEN_BACKEND = Path("/sys/bus/xen-backend/devices")
SECTOR_BYTES = 512
QMP_STATS_TIMEOUT = 5.0  # a QEMU that does not answer in this long is left out of the sample
SORT_KEYS = ("cpu", "memory", "name", "net", "block")


@dataclass(frozen=True)
class Traffic:
    """Bytes so far: the guest's view (net_tx: what the guest sent)."""

    net_rx: int = 0
    net_tx: int = 0
    block_read: int = 0
    block_written: int = 0


@dataclass(frozen=True)
class GuestStats:
    """One row of `xentool top` and `xentool stats`: rates over the interval, totals so far."""

    name: str
    domid: int
    state: str
    cpu_percent: float  # of one CPU, over the interval (a 2-vcpu guest can reach 200)
    cpu_time_s: float
    memory_mib: int
    max_memory_mib: int
    vcpus: int
    # Bytes per second over the interval and bytes so far; None where this host cannot count them.
    net_rx_rate: float | None
    net_tx_rate: float | None
    block_read_rate: float | None
    block_write_rate: float | None
    net_rx_bytes: int | None
    net_tx_bytes: int | None
    block_read_bytes: int | None
    block_written_bytes: int | None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _counter(path: Path) -> int:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return 0  # the device went away between the listing and the read


def device_model_block_traffic(domids: set[int]) -> dict[int, tuple[int, int]]:
    """Bytes read and written so far through the disks each domain's QEMU serves, for the domains
    of ``domids`` that have one (its QMP socket): top-level block devices only, as their backing
    files' figures are a part of them."""
    served = sorted(domid for domid in domids if os.path.exists(paths.qmp_socket_path(domid)))
    figures = {}
    for domid, devices in qmp.qmp_ask_each(served, "query-blockstats", timeout=QMP_STATS_TIMEOUT).items():
        stats = [device.get("stats", {}) for device in devices if isinstance(device, dict)]
        figures[domid] = (sum(int(s.get("rd_bytes", 0)) for s in stats), sum(int(s.get("wr_bytes", 0)) for s in stats))
    return figures


def traffic(hv: Hypervisor, domid: int, sys_net: Path = SYS_NET, sys_backend: Path = SYS_XEN_BACKEND,
            served_by_qemu: tuple[int, int] = (0, 0)) -> Traffic:
    """The domain's traffic so far, from dom0's backend interfaces and devices, and ``served_by_qemu``
    (its QEMU's disks: bytes read, bytes written)."""
    xs = hv.xenstore()
    net_rx = net_tx = 0
    vifs = f"/local/domain/0/backend/vif/{domid}"
    for devid in xs.list_or_empty(vifs):
        name = xs.read_or(f"{vifs}/{devid}/vifname") or f"vif{domid}.{devid}"
        counters = sys_net / name / "statistics"
        net_tx += _counter(counters / "rx_bytes")  # dom0 receives what the guest sends
        net_rx += _counter(counters / "tx_bytes")
    read, written = served_by_qemu
    for device in sys_backend.glob(f"vbd-{domid}-*"):
        read += _counter(device / "statistics" / "rd_sect") * SECTOR_BYTES
        written += _counter(device / "statistics" / "wr_sect") * SECTOR_BYTES
    return Traffic(net_rx, net_tx, read, written)


@dataclass(frozen=True)
class _Sample:
    at: float
    info: DomainInfo
    traffic: Traffic | None


def _sample(hv: Hypervisor, domids: set[int] | None) -> dict[int, _Sample]:
    at = time.monotonic()
    infos = [info for info in hv.domain_list() if domids is None or info.domid in domids]
    if not hv.has_kernel_backends:
        return {info.domid: _Sample(at, info, None) for info in infos}
    by_qemu = device_model_block_traffic({info.domid for info in infos if info.domid != 0}) if hv.runs_device_models else {}
    return {info.domid: _Sample(at, info, traffic(hv, info.domid, served_by_qemu=by_qemu.get(info.domid, (0, 0))))
            for info in infos}


def measure(hv: Hypervisor, names: dict[int, tuple[str, str]], interval: float) -> list[GuestStats]:
    """Two samples ``interval`` seconds apart of the domains in ``names`` (domid -> (name, state));
    a domain gone by the second sample is left out."""
    first = _sample(hv, set(names))
    time.sleep(interval)
    second = _sample(hv, set(names))
    rows = []
    for domid, now in second.items():
        before = first.get(domid)
        if before is None or domid not in names:
            continue
        seconds = max(now.at - before.at, 1e-6)

        def rate(field: str, now: _Sample = now, before: _Sample = before, seconds: float = seconds) -> float | None:
            if now.traffic is None or before.traffic is None:
                return None
            return max(0, getattr(now.traffic, field) - getattr(before.traffic, field)) / seconds

        def total(field: str, now: _Sample = now) -> int | None:
            return None if now.traffic is None else int(getattr(now.traffic, field))

        name, state = names[domid]
        rows.append(GuestStats(
            name=name, domid=domid, state=state,
            cpu_percent=round(max(0, now.info.cpu_time_ns - before.info.cpu_time_ns) / 1e9 / seconds * 100, 1),
            cpu_time_s=round(now.info.cpu_time_ns / 1e9, 1), memory_mib=now.info.memory_kib // 1024,
            max_memory_mib=now.info.max_memory_kib // 1024, vcpus=now.info.online_vcpus,
            net_rx_rate=rate("net_rx"), net_tx_rate=rate("net_tx"),
            block_read_rate=rate("block_read"), block_write_rate=rate("block_written"),
            net_rx_bytes=total("net_rx"), net_tx_bytes=total("net_tx"),
            block_read_bytes=total("block_read"), block_written_bytes=total("block_written"),
        ))
    return rows


def sort_rows(rows: list[GuestStats], key: str) -> list[GuestStats]:
    """Busiest first (name: alphabetical)."""
    if key == "name":
        return sorted(rows, key=lambda r: r.name)
    measures = {
        "cpu": lambda r: r.cpu_percent,
        "memory": lambda r: r.memory_mib,
        "net": lambda r: (r.net_rx_rate or 0) + (r.net_tx_rate or 0),
        "block": lambda r: (r.block_read_rate or 0) + (r.block_write_rate or 0),
    }
    return sorted(rows, key=measures[key], reverse=True)
