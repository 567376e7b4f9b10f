"""The daemon on real Xen: events for xentool's guests and xl's alike, as they happen, and a
client of the read-only socket that is not root."""

from __future__ import annotations

import json
import time

import pytest

from kit.lab import PYTHON, XENTOOL, ensure_xenconsoled, wait_for_console, write_config, xentool
from xentool.lab import Lab

pytestmark = pytest.mark.lab

EVENTS_TIMEOUT = 240.0


def start_events(lab: Lab, out: str) -> None:
    """`xentool events --json` in dom0, in the background, into ``out`` (a file on the share)."""
    script = f'setsid {XENTOOL} events --json > {out} 2>&1 < /dev/null & echo $! > {out}.pid'
    assert lab.exec(["sh", "-c", script], capture=True).returncode == 0
    deadline = time.monotonic() + 120
    while "following events" not in _read(lab, out):
        assert time.monotonic() < deadline, f"`xentool events` did not subscribe: {_read(lab, out)}"
        time.sleep(0.5)


def _read(lab: Lab, path: str) -> str:
    return lab.exec(["sh", "-c", f"cat {path} 2>/dev/null"], capture=True).out


def wait_for_events(lab: Lab, out: str, wanted: list[tuple[str, str]], timeout: float = EVENTS_TIMEOUT) -> list[dict]:
    """The events printed so far, once (kind, name) pairs of ``wanted`` were seen in that order."""
    deadline = time.monotonic() + timeout
    while True:
        events = [json.loads(line) for line in _read(lab, out).splitlines() if line.startswith("{")]
        pending = list(wanted)
        for event in events:
            if pending and (event["kind"], event["name"]) == pending[0]:
                pending.pop(0)
        if not pending:
            return events
        if time.monotonic() > deadline:
            pytest.fail(f"still waiting for {pending}; events: {[(e['kind'], e['name']) for e in events]}")
        time.sleep(2)


def test_events_tell_of_xentools_and_xls_guests_as_it_happens(lab, guests):
    out = str(lab.share_dir / "events.jsonl")
    start_events(lab, out)
    cfg = lab.share_dir / "xl-evented.cfg"
    cfg.write_text(f'name = "xl-evented"\ntype = "pv"\nkernel = "{guests.kernel}"\nramdisk = "{guests.initrd}"\n'
                   'extra = "console=hvc0 xentool.then=wait"\nmemory = 128\nvcpus = 1\n')
    try:
        assert lab.exec(["truncate", "-s", "16M", "/var/tmp/evented.img"], capture=True).returncode == 0
        config = write_config(lab, guests, "evented", disks="[{target: /var/tmp/evented.img, vdev: xvdb}]")
        assert xentool(lab, "create", str(config)).returncode == 0
        assert xentool(lab, "pause", "evented").returncode == 0
        assert xentool(lab, "unpause", "evented").returncode == 0
        wait_for_console(lab, "evented", "xentool-guest: marker=evented")  # booted: it hears a shutdown request
        assert xentool(lab, "shutdown", "-w", "evented").returncode == 0  # woken by the same events
        ensure_xenconsoled(lab)
        assert lab.exec(["xl", "create", str(cfg)], capture=True, timeout=300).returncode == 0
        wait_for_events(lab, out, [("created", "xl-evented")])
        time.sleep(3)  # the daemon has seen it run (a pause fires no watch: its 2 s poll sees it)
        assert lab.exec(["xl", "pause", "xl-evented"], capture=True).returncode == 0
        assert lab.exec(["xl", "destroy", "xl-evented"], capture=True).returncode == 0
        events = wait_for_events(lab, out, [
            ("created", "evented"), ("device-attached", "evented"), ("paused", "evented"), ("unpaused", "evented"),
            ("shutdown", "evented"), ("destroyed", "evented"),
            ("created", "xl-evented"), ("paused", "xl-evented"), ("destroyed", "xl-evented"),
        ])
        shutdown = next(e for e in events if e["kind"] == "shutdown" and e["name"] == "evented")
        assert shutdown["detail"]["reason"] == "poweroff"
        disk = next(e for e in events if e["kind"] == "device-attached" and e["name"] == "evented")
        assert disk["detail"] == {"kind": "vbd", "devid": 51728}  # xvdb
        seqs = [e["seq"] for e in events]
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    finally:
        lab.exec(["sh", "-c", f"kill $(cat {out}.pid) 2>/dev/null; rm -f {out}.pid"], capture=True)
        lab.exec(["xl", "destroy", "xl-evented"], capture=True)
        xentool(lab, "destroy", "evented")
        lab.exec(["rm", "-f", "/var/tmp/evented.img"], capture=True)


def test_a_user_who_is_not_root_reads_from_the_read_only_socket_only(lab, guests):
    probe = ("import sys\nfrom xentool.daemon_client import DaemonConnection\n"
             "from xentool.errors import XentoolError\n"
             "with DaemonConnection('/run/xentool/xentoold-ro.sock') as c:\n"
             "    print('list', len(c.call('list')))\n"
             "    try:\n        c.call('destroy', domain='Domain-0')\n    except XentoolError as e:\n"
             "        print('refused', type(e).__name__)\n"
             "try:\n    DaemonConnection('/run/xentool/xentoold.sock')\nexcept XentoolError as e:\n"
             "    print('full socket', type(e).__name__)\n")
    ran = lab.exec(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", PYTHON, "-c", probe],
                   capture=True, timeout=120)
    assert ran.returncode == 0, ran.err
    lines = ran.out.splitlines()
    assert lines[0].startswith("list ") and int(lines[0].split()[1]) >= 1
    assert lines[1:] == ["refused UsageError", "full socket DaemonUnavailable"]

