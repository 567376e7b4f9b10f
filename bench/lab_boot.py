"""Boot the Xen lab three times and report the time to dom0-ready (median of 3).  Not a test.

    .venv/bin/python bench/lab_boot.py [--runs 3] [--name bench]

Uses its own lab name so a running "default" lab is left alone; the first run may include fetching
the Debian packages and building the initramfs if the cache is cold (its time is reported apart).
"""

from __future__ import annotations

import argparse
import statistics
import time

from xentool.lab import Lab


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--name", default="bench")
    args = parser.parse_args()
    lab = Lab(args.name)
    lab.down()
    _ = lab.artifacts  # fetch outside the timed runs
    boots, totals, downs = [], [], []
    for run in range(1, args.runs + 1):
        started = time.monotonic()
        status = lab.up(timeout=600)
        total = time.monotonic() - started
        t0 = time.monotonic()
        lab.down()
        downs.append(time.monotonic() - t0)
        boots.append(status.boot_seconds or total)
        totals.append(total)
        print(f"run {run}: QEMU start to dom0 ready {boots[-1]:.1f} s (whole `up` {total:.1f} s), "
              f"down {downs[-1]:.1f} s", flush=True)
    print(f"median of {args.runs}: boot to dom0-ready {statistics.median(boots):.1f} s, whole `up` "
          f"{statistics.median(totals):.1f} s, down {statistics.median(downs):.1f} s")


if __name__ == "__main__":
    main()
