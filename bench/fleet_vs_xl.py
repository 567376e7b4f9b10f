"""Many guests: create time as guests accumulate, and `list` with 10 and 30 guests, xentool against
xl in one lab run.  Not a test.

    .venv/bin/python bench/fleet_vs_xl.py [--guests 10] [--more 20] [--gap 2] [--samples 9] [--name bench-fleet]

`xentool` here is the plain command a user types: dom0's init runs the daemon as its systemd unit
would, and the launcher hands each command to it.  Each guest (128 MiB PV, the lab's kernel) is
left to finish booting (until its CPU time stands still) and then --gap seconds before the next
create, since a booting guest takes the lab's CPU (../shared/lab-notes.md).  Printed: each create's seconds, the last against the first
for both tools; then the medians of --samples `xentool list`, `xentool list --json` and `xl list`
(interleaved) with --guests running guests, and again once --more guests were added (created
paused: they hold memory and a name, not CPU).  xentool's kernel cache is filled by one create before the count.
"""

from __future__ import annotations

import argparse
import statistics
import time

from create_vs_xl import XENTOOL, timed  # this directory is on the path of a script run from it

from xentool.lab import Lab
from xentool.lab.guest_images import install_guest_images
from xentool.lab.qemu import LabOptions

SETTLE_SECONDS = 90.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--guests", type=int, default=10)
    parser.add_argument("--more", type=int, default=20)
    parser.add_argument("--gap", type=float, default=2.0, help="seconds after a guest has settled before the next create")
    parser.add_argument("--name", default="bench-fleet")
    parser.add_argument("--samples", type=int, default=9, help="runs of each list command")
    args = parser.parse_args()
    lab = Lab(args.name)
    total = args.guests + args.more
    lab.up(LabOptions(memory_mib=1024 + 160 * total + 1024), timeout=900)
    try:
        guests = install_guest_images(lab.artifacts.kernel, lab.artifacts.busybox, lab.share_dir / "guests",
                                      modules_dir=lab.artifacts.modules_dir)
        timed(lab, [XENTOOL, "daemon", "start"])  # the daemon init started, once it serves
        lab.exec(["sh", "-c", "pgrep -x xenconsoled || /usr/lib/xen-4.17/bin/xenconsoled --pid-file=/run/xenconsoled.pid"],
                 capture=True)
        common = {"kernel": str(guests.kernel), "ramdisk": str(guests.initrd), "memory": 128, "vcpus": 1}

        def files(n: int) -> tuple[str, str]:
            yaml, cfg = lab.share_dir / f"fleet{n}.yaml", lab.share_dir / f"fleet{n}.cfg"
            yaml.write_text(f"name: fleet{n}\ntype: pv\ncmdline: \"console=hvc0 xentool.then=wait\"\n"
                            + "".join(f"{k}: {v}\n" for k, v in common.items()))
            cfg.write_text(f'name = "fleet{n}"\ntype = "pv"\nextra = "console=hvc0 xentool.then=wait"\n'
                           + "".join(f'{k} = {v!r}\n'.replace("'", '"') for k, v in common.items()))
            return str(yaml), str(cfg)

        def settle(name: str) -> float:
            """Wait until the guest has finished booting: its CPU time grows by less than a tenth of
            a second over 2 s (at most SETTLE_SECONDS); a booting guest takes the lab's CPU, which
            each tool's next create would pay for (../shared/lab-notes.md).  Returns the wait."""
            started = time.monotonic()
            before = cpu_time(name)
            while time.monotonic() - started < SETTLE_SECONDS:
                time.sleep(2)
                now = cpu_time(name)
                if now - before < 0.1:
                    break
                before = now
            return time.monotonic() - started

        def cpu_time(name: str) -> float:
            listed = lab.exec(["xl", "list", name], capture=True)  # either tool's guest, alike
            return float(listed.out.splitlines()[-1].split()[-1]) if listed.returncode == 0 else 0.0

        growth = {}
        for tool in ("xl", "xentool"):  # xentool last: its guests stay for the list figures
            if tool == "xentool":
                # xentool unpacks a kernel once and keeps it (xl does it every time): the first
                # create, cache cold, is not what accumulating guests do to create time.
                yaml, _ = files(1)
                print(f"xentool create, kernel cache cold (not counted): {timed(lab, [XENTOOL, 'create', yaml]):.2f} s")
                timed(lab, [XENTOOL, "destroy", "fleet1"])
            times = []
            for n in range(1, args.guests + 1):
                yaml, cfg = files(n)
                times.append(timed(lab, ["xl", "create", cfg] if tool == "xl" else [XENTOOL, "create", yaml]))
                waited = settle(f"fleet{n}")
                print(f"{tool} create #{n}: {times[-1]:.2f} s (then {waited:.0f} s to settle)", flush=True)
                time.sleep(args.gap)
            growth[tool] = times
            if tool == "xl":
                for n in range(1, args.guests + 1):
                    timed(lab, ["xl", "destroy", f"fleet{n}"])
        for tool, times in growth.items():
            print(f"{tool}: create #{args.guests} {times[-1]:.2f} s against #1 {times[0]:.2f} s: x{times[-1] / times[0]:.2f}")
            if len(times) >= 6:  # one create against one is a coin toss in a lab under TCG: three against three too
                first, last = statistics.median(times[:3]), statistics.median(times[-3:])
                print(f"{tool}: the median of the last three creates {last:.2f} s against the first three's {first:.2f} s: "
                      f"x{last / first:.2f}")

        def lists(count: int) -> None:
            # Interleaved, each round in another order: the host settles while they run (guests
            # just created still start their console services), and no tool should always come
            # first, or right after another.
            commands = [("xentool list", [XENTOOL, "list"]), ("xentool list --json", [XENTOOL, "list", "--json"]),
                        ("xl list", ["xl", "list"])]
            samples: dict[str, list[float]] = {label: [] for label, _ in commands}
            for round_ in range(args.samples):
                for label, argv in commands[round_ % 3:] + commands[:round_ % 3]:
                    samples[label].append(timed(lab, argv))
            figures = {label: statistics.median(times) for label, times in samples.items()}
            xl = figures["xl list"]
            for label, seconds in figures.items():
                print(f"{count} guests, median of {args.samples}: {label} {seconds:.2f} s, ratio to xl list {seconds / xl:.2f}")

        lists(args.guests)
        for n in range(args.guests + 1, total + 1):
            timed(lab, [XENTOOL, "create", "-p", files(n)[0]])
        lists(total)
    finally:
        lab.down()


if __name__ == "__main__":
    main()
