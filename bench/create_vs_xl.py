"""`xentool create` against `xl create` of the same guest, in one lab run.  Not a test.

    .venv/bin/python bench/create_vs_xl.py [--runs 5] [--name bench-create] [--hvm]

The guest is a 128 MiB PV guest, or with --hvm a 256 MiB HVM guest that boots a CD-ROM image through
SeaBIOS, with VNC on 127.0.0.1 and its serial port on a pty (xl) or xentool's console: both
commands return once QEMU reports running and the guest is unpaused.

Alternates the two tools, destroying each guest before the next create, and times each command
from its start until it returns with the domain unpaused (both return then; xl leaves its monitor
behind).  The clock runs inside dom0, so the agent's round trip is not counted.  The xentool figure
includes the Python interpreter's start-up in dom0, which the `python3 -c pass` line reports apart:
in the lab it is most of xentool's time.  The lab is fresh, so xentool's first create unpacks the
kernel (and fills its kernel cache) and the later ones do not: both figures are printed.

Two xentool figures: the plain command a user types, which the daemon dom0's init started (as its
systemd unit would) runs warm, without Python's start-up and imports
(xentool/cli/command_server.py; `bin/xentool` is the native launcher, xentool/cli/launcher.c, when
`make setup` could build it); and the same command in its own process (XENTOOL_NO_DAEMON=1).  The
last plain create is run again with --timings, whose lines say where its time went.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from xentool.lab import Lab, guest_images
from xentool.lab.guest_images import install_guest_images

XENTOOL = str(Path(sys.prefix) / "bin" / "xentool")
PYTHON = str(Path(sys.prefix) / "bin" / "python3")


def timed(lab: Lab, argv: list[str]) -> float:
    """Seconds ``argv`` took in dom0 (it must succeed)."""
    script = 'start=$(date +%s.%N); "$@" >/dev/null || exit 1; end=$(date +%s.%N); echo "$start $end"'
    result = lab.exec(["sh", "-c", script, "timed", *argv], capture=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {result.err.strip()}")
    start, end = map(float, result.out.split())
    return end - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--name", default="bench-create")
    parser.add_argument("--hvm", action="store_true", help="an HVM guest with QEMU instead of a PV guest")
    args = parser.parse_args()
    lab = Lab(args.name)
    lab.up(timeout=900)
    try:
        guests = install_guest_images(lab.artifacts.kernel, lab.artifacts.busybox, lab.share_dir / "guests",
                                      modules_dir=lab.artifacts.modules_dir)
        yaml, cfg = lab.share_dir / "bench.yaml", lab.share_dir / "bench.cfg"
        if args.hvm:
            iso = guest_images.guests_dir() / guest_images.HELLO_ISO_NAME  # the image share, which lab.up fills
            yaml.write_text(f"name: bench\ntype: hvm\nmemory: 256\nserial: pty\nvnc: {{listen: 127.0.0.1}}\n"
                            f"disks: [{{target: {iso}, vdev: hdc, devtype: cdrom}}]\nhvm: {{boot: [cdrom]}}\n")
            cfg.write_text(f'name = "bench"\ntype = "hvm"\nmemory = 256\nserial = "pty"\nvnc = 1\n'
                           f'vnclisten = "127.0.0.1"\ndisk = ["{iso},raw,hdc,cdrom"]\nboot = "d"\n')
        else:
            common = {"kernel": str(guests.kernel), "ramdisk": str(guests.initrd), "memory": 128, "vcpus": 1}
            yaml.write_text("name: bench\ntype: pv\ncmdline: \"console=hvc0 xentool.then=wait\"\n"
                            + "".join(f"{k}: {v}\n" for k, v in common.items()))
            cfg.write_text('name = "bench"\ntype = "pv"\nextra = "console=hvc0 xentool.then=wait"\n'
                           + "".join(f'{k} = {v!r}\n'.replace("'", '"') for k, v in common.items()))
        # xl waits for xenconsoled to take the console; the lab starts it only when asked.
        lab.exec(["sh", "-c", "pgrep -x xenconsoled || /usr/lib/xen-4.17/bin/xenconsoled "
                  "--pid-file=/run/xenconsoled.pid"], capture=True)
        python_start = timed(lab, [PYTHON, "-c", "pass"])
        xentool_times, served_times, xl_times = [], [], []
        in_process = ["env", "XENTOOL_NO_DAEMON=1", XENTOOL]
        for run in range(1, args.runs + 1):
            xentool_times.append(timed(lab, [*in_process, "create", str(yaml)]))
            timed(lab, [XENTOOL, "destroy", "bench"])
            xl_times.append(timed(lab, ["xl", "create", str(cfg)]))
            timed(lab, ["xl", "destroy", "bench"])
            print(f"run {run}: xentool create in its own process {xentool_times[-1]:.2f} s, xl create {xl_times[-1]:.2f} s",
                  flush=True)
        timed(lab, [XENTOOL, "daemon", "start"])  # the daemon init started, once it serves
        for run in range(1, args.runs + 1):
            served_times.append(timed(lab, [XENTOOL, "create", str(yaml)]))
            timed(lab, [XENTOOL, "destroy", "bench"])
            print(f"run {run}: xentool create (the plain command: the daemon runs it) {served_times[-1]:.2f} s", flush=True)
        where = lab.exec([XENTOOL, "create", "--timings", str(yaml)], capture=True, timeout=600)
        timed(lab, [XENTOOL, "destroy", "bench"])
        print(f"one more plain create, with --timings:\n{where.err.rstrip()}")
        ours, theirs = statistics.median(xentool_times), statistics.median(xl_times)
        served = statistics.median(served_times)
        print(f"python3 -c pass in dom0: {python_start:.2f} s")
        native = Path(XENTOOL).read_bytes()[:4] == b"\x7fELF"
        print(f"launcher: {'native (xentool/cli/launcher.c)' if native else 'Python (xentool/cli/launch.py)'}")
        # Run 1 unpacks the kernel as xl does every time; later runs load the unpacked image
        # from xentool's kernel cache (hypercalls/xen/kernel_cache.py).
        print(f"first xentool create (kernel not yet cached): {xentool_times[0]:.2f} s, "
              f"ratio to xl's median {xentool_times[0] / theirs:.2f}")
        print(f"median of {args.runs}, in its own process (XENTOOL_NO_DAEMON=1): xentool create {ours:.2f} s, "
              f"xl create {theirs:.2f} s, ratio xentool/xl {ours / theirs:.2f}")
        print(f"median of {args.runs}, the plain command (the daemon runs it): xentool create {served:.2f} s, "
              f"ratio xentool/xl {served / theirs:.2f}")
    finally:
        lab.down()


if __name__ == "__main__":
    main()
