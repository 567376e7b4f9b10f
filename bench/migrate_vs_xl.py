"""Live migration between the two hosts of one lab: `xentool migrate` against `xl migrate`, the
same guest, alternating, several runs.  Not a test.

    .venv/bin/python bench/migrate_vs_xl.py [--runs 4] [--memory 256] [--name bench-migrate] [--privileged-dm] [--no-compress] [--shadow]

The guest: HVM (this Xen has no shadow paging, so neither tool copies a PV guest live), the lab's
kernel and busybox initramfs loaded by QEMU, printing ``tick=N`` every 10 ms on its emulated serial
port, which QEMU writes to a file (``serial: file:/run/bench-serial/...``, the same for both tools).
In each dom0 that directory is a link to the host's own folder of the lab's shared directory, so
the source's QEMU and the target's write two files: one file for both would be truncated by the
target's QEMU when it starts (xentool starts it while the memory is still being copied) and then
written from its start, inside what the source had written, where a follower of the file's end
does not see it.  This machine reads both files every millisecond and notes when each new tick
arrives, by its own clock, outside both hosts: the **downtime** of a
migration is the largest gap between new ticks while it ran (what a user of the guest waits; the
gap between ticks when nothing moves is printed as the floor).  The **total** is the migrate
command's time, measured in the sending dom0.  One guest per tool, both created before the runs
(xl's with xl, xentool's with xentool); between its runs a guest is paused, so the one moving has
the lab's CPU.  Each run moves a guest to the other host: xl, xentool, xl, xentool, ...  Each tool
as a user gets it: xentool compresses the stream (zstd) by default, which `--no-compress` turns off.
"""

from __future__ import annotations

import argparse
import math
import re
import statistics
import threading
import time
from pathlib import Path

from create_vs_xl import XENTOOL, timed  # this directory is on the path of a script run from it

from xentool.lab import Lab, up_hosts
from xentool.lab.guest_images import GuestImages, install_guest_images
from xentool.lab.qemu import LabOptions

TICK = re.compile(rb"tick=(\d+)")
BOOT_SECONDS = 420.0
MAKE_ATTEMPTS = 3
SETTLE_SECONDS = 3.0  # ticks watched before each run: the floor, and the guest is surely running
HOSTS = ("xen1", "xen2")
SERIAL_LINK = "/run/bench-serial"  # in each dom0: a link to that host's folder of the shared directory


class Ticks:
    """Arrival times (this machine's clock) of each new highest tick in the guest's serial files (one
    per host), read every millisecond; a file truncated by a new QEMU is read again from its start."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths
        self.arrivals: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        read = {path: (0, b"") for path in self.paths}  # offset, partial line
        highest = -1
        while not self._stop.is_set():
            for path in self.paths:
                offset, partial = read[path]
                try:
                    with open(path, "rb") as f:
                        f.seek(0, 2)
                        if f.tell() < offset:  # truncated: a new QEMU opened it
                            offset, partial = 0, b""
                        f.seek(offset)
                        data = f.read()
                except FileNotFoundError:
                    data = b""
                now = time.monotonic()
                if data:
                    offset += len(data)
                    lines = (partial + data).split(b"\n")
                    partial = lines.pop()
                    for line in lines:
                        found = TICK.search(line)
                        if found and int(found.group(1)) > highest:
                            highest = int(found.group(1))
                            self.arrivals.append((now, highest))
                read[path] = (offset, partial)
            time.sleep(0.001)

    def wait_for_ticks(self, timeout: float) -> bool:
        """Whether the guest ticks (a new tick in the last second) within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.arrivals or time.monotonic() - self.arrivals[-1][0] > 1.0:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)
        return True

    def largest_gap(self, start: float, end: float) -> float:
        """The largest gap between new ticks from ``start`` on, among gaps that began by ``end`` (the
        first tick after a migration may come after its command has ended)."""
        times = [t for t, _ in self.arrivals if t >= start]
        gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False) if earlier <= end]
        return max(gaps, default=float("nan"))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def configs(share: Path, guests: GuestImages, memory: int, privileged_dm: bool = False,
            shadow: bool = False) -> dict[str, tuple[Path, list[Path]]]:
    """Each tool's guest: its config file and its serial files (xen1's, xen2's); ``shadow``: shadow
    paging (hap=0)."""
    made = {}
    for tool in ("xl", "xentool"):
        name, serial = f"mig-{tool}", f"{SERIAL_LINK}/mig-{tool}.serial"
        cmdline = f"console=ttyS0 quiet xentool.marker={name} xentool.then=tick"
        if tool == "xl":
            path = share / f"{name}.cfg"
            path.write_text(f'name = "{name}"\ntype = "hvm"\nmemory = {memory}\nkernel = "{guests.kernel}"\n'
                            f'ramdisk = "{guests.initrd}"\nextra = "{cmdline}"\nvnc = 0\nserial = "file:{serial}"\n'
                            + ("hap = 0\n" if shadow else ""))
        else:
            path = share / f"{name}.yaml"
            path.write_text(f"name: {name}\ntype: hvm\nmemory: {memory}\nkernel: {guests.kernel}\nramdisk: {guests.initrd}\n"
                            f'cmdline: "{cmdline}"\nvnc: false\nserial: "file:{serial}"\n'
                            + ("device_model: {privileged: true}\n" if privileged_dm else "")
                            + ("hap: false\n" if shadow else ""))
        made[tool] = (path, [share / host / f"mig-{tool}.serial" for host in HOSTS])
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="migrations per tool (each moves the guest to the other host)")
    parser.add_argument("--memory", type=int, default=256, help="the guest's memory, MiB")
    parser.add_argument("--name", default="bench-migrate")
    parser.add_argument("--privileged-dm", action="store_true",
                        help="xentool's QEMU unrestricted, as xl runs it by default (dm_restrict off)")
    parser.add_argument("--shadow", action="store_true",
                        help="both guests on shadow paging (hap=0), on a Xen that has it (the lab's has not)")
    parser.add_argument("--no-compress", action="store_true",
                        help="xentool sends the stream uncompressed, as xl does (xentool compresses it with zstd by default)")
    args = parser.parse_args()
    up_hosts(args.name, 2, LabOptions(memory_mib=1024 + 2 * (args.memory + 64) + 512), timeout=900)
    hosts = {"xen1": Lab(args.name), "xen2": Lab(args.name, host=2)}
    lab = hosts["xen1"]
    guests = install_guest_images(lab.artifacts.kernel, lab.artifacts.busybox, lab.share_dir / "guests",
                                  modules_dir=lab.artifacts.modules_dir)
    files = configs(lab.share_dir, guests, args.memory, args.privileged_dm, args.shadow)
    where = {"xl": "xen1", "xentool": "xen1"}
    domids: dict[str, int] = {}
    ticks: dict[str, Ticks] = {}
    try:
        for link_name, host in hosts.items():
            (lab.share_dir / link_name).mkdir(exist_ok=True)
            host.exec(["ln", "-sfn", str(lab.share_dir / link_name), SERIAL_LINK], capture=True)
            timed(host, [XENTOOL, "daemon", "start"])
            host.exec(["sh", "-c", "pgrep -x xenconsoled || /usr/lib/xen-4.17/bin/xenconsoled --pid-file=/run/xenconsoled.pid"],
                      capture=True)  # xl's guests' consoles
        for tool in files:
            ticks[tool], domids[tool] = start_guest(lab, tool, *files[tool])
            pause(lab, tool, paused=True)
        figures: dict[str, list[tuple[float, float, float]]] = {"xl": [], "xentool": []}
        for run in range(args.runs):
            for tool in ("xl", "xentool"):
                source, target = where[tool], "xen2" if where[tool] == "xen1" else "xen1"
                pause(hosts[source], tool, paused=False)
                time.sleep(SETTLE_SECONDS)
                floor = ticks[tool].largest_gap(time.monotonic() - SETTLE_SECONDS + 0.5, time.monotonic())
                unsound = why_unsound(hosts[source], tool, domids[tool], floor)
                if unsound:
                    print(f"{unsound}: made again on {source} (not counted)", flush=True)
                    ticks[tool].stop()
                    for host in hosts.values():
                        destroy(host, tool)
                    ticks[tool], domids[tool] = start_guest(hosts[source], tool, *files[tool])
                    time.sleep(SETTLE_SECONDS)
                    floor = ticks[tool].largest_gap(time.monotonic() - SETTLE_SECONDS + 0.5, time.monotonic())
                name = f"mig-{tool}"
                migrate = (["xl", "migrate", name, target] if tool == "xl"
                           else [XENTOOL, "migrate", name, target, "--remote-xentool", XENTOOL,
                                 *(["--no-compress"] if args.no_compress else [])])
                started = time.monotonic()
                total = timed(hosts[source], migrate)
                ended = time.monotonic()
                ticks[tool].wait_for_ticks(60)
                downtime = ticks[tool].largest_gap(started, ended)
                where[tool] = target
                domids[tool] = domid(hosts[target], tool)
                figures[tool].append((total, downtime, floor))
                print(f"run {run + 1} {tool:8} {source} -> {target}: total {total:.2f} s, downtime {downtime * 1000:.0f} ms "
                      f"(gap between ticks before it: {floor * 1000:.0f} ms)", flush=True)
                pause(hosts[target], tool, paused=True)
        medians = {tool: (statistics.median(t for t, _, _ in runs), statistics.median(d for _, d, _ in runs))
                   for tool, runs in figures.items()}
        for tool, (total, downtime) in medians.items():
            print(f"{tool}: median total {total:.2f} s, median downtime {downtime * 1000:.0f} ms")
        (xl_total, xl_down), (xt_total, xt_down) = medians["xl"], medians["xentool"]
        print(f"xentool / xl: total x{xt_total / xl_total:.2f}, downtime x{xt_down / xl_down:.2f}")
    finally:
        for tool in files:
            if tool in ticks:
                ticks[tool].stop()
            for host in hosts.values():  # both: a run that failed midway may have left it on either
                destroy(host, tool)
        for path, serials in files.values():
            path.unlink(missing_ok=True)
            for serial in serials:
                serial.unlink(missing_ok=True)


def domid(host: Lab, tool: str) -> int:
    found = host.exec(["xl", "domid", f"mig-{tool}"], capture=True)
    return int(found.out) if found.returncode == 0 else -1


def start_guest(host: Lab, tool: str, path: Path, serials: list[Path]) -> tuple[Ticks, int]:
    """The tool's guest, created on ``host`` and ticking, and its domid.  The lab's HVM guests now and
    then hang or triple-fault in their boot (xl's as well as xentool's: ../shared/lab-notes.md): one
    that does not tick is made again, a few times."""
    for _ in range(MAKE_ATTEMPTS):
        for serial in serials:
            serial.unlink(missing_ok=True)
        ticks = Ticks(serials)
        create = ["xl", "create", str(path)] if tool == "xl" else [XENTOOL, "create", str(path)]
        print(f"{tool} create on {host.link_name}: {timed(host, create):.2f} s", flush=True)
        if ticks.wait_for_ticks(BOOT_SECONDS):
            return ticks, domid(host, tool)
        ticks.stop()
        destroy(host, tool)
        print(f"{tool}'s guest printed no ticks within {BOOT_SECONDS:.0f} s: made again", flush=True)
    raise SystemExit(f"{tool}'s guest did not tick in {MAKE_ATTEMPTS} boots")


def why_unsound(host: Lab, tool: str, expected: int, floor: float) -> str | None:
    """Before a run: None if the guest is the one created (or moved) and it ticks.  An HVM guest that
    triple-faulted was restarted (Xen reports it as a reboot) and would be timed in its firmware."""
    now = domid(host, tool)
    if now != expected:
        return f"{tool}'s guest mig-{tool} is domain {now}, not {expected}: it was restarted (a triple fault)"
    if math.isnan(floor):  # no two ticks in the settling time
        return f"{tool}'s guest mig-{tool} printed no ticks in {SETTLE_SECONDS:g} s"
    return None


def destroy(host: Lab, tool: str) -> None:
    host.exec(["xl", "destroy", f"mig-{tool}"] if tool == "xl" else [XENTOOL, "destroy", f"mig-{tool}"], capture=True)


def pause(host: Lab, tool: str, paused: bool) -> None:
    word = "pause" if paused else "unpause"
    timed(host, ["xl", word, f"mig-{tool}"] if tool == "xl" else [XENTOOL, word, f"mig-{tool}"])


if __name__ == "__main__":
    main()
