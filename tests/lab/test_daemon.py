"""The daemon on real Xen: events for xentool's guests and xl's alike, as they happen, a client of
the read-only socket that is not root, and a client on this machine over TLS."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from kit.lab import PYTHON, XENTOOL, domains_json, ensure_xenconsoled, restart_daemon, wait_for_console, write_config, xentool
from kit.tls import make_ca, make_cert, server_and_client_dirs
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



def test_this_machine_drives_dom0s_daemon_over_tls_and_a_stranger_is_refused(lab, guests):
    """The daemon listens only when told to; through the lab's forward (127.0.0.1 here, nothing else)
    a client with a certificate the daemon's CA signed creates and destroys a guest; one whose
    certificate another CA signed is refused."""
    port = lab.api_port
    assert port, "this lab has no API forward"
    root = lab.share_dir / "tls-test"
    server, client_dir = server_and_client_dirs(root)
    setup = (f"mkdir -p /etc/xentool/tls && cp {server}/ca.pem {server}/server-cert.pem {server}/server-key.pem "
             "/etc/xentool/tls/ && chmod 600 /etc/xentool/tls/server-key.pem && "
             "echo 'listen: [tls://0.0.0.0:16514]' > /etc/xentool/xentoold.yaml")
    assert lab.exec(["sh", "-c", setup], capture=True).returncode == 0

    def here(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("XENTOOL_")}
        return subprocess.run([sys.executable, "-m", "xentool", *args], env={**env, "XENTOOL_NO_DAEMON": "1"},
                              capture_output=True, text=True, timeout=300)

    try:
        restart_daemon(lab)
        url = f"tls://127.0.0.1:{port}?tls_dir={client_dir}"
        listed = here("--connect", url, "list", "--json")
        assert listed.returncode == 0 and json.loads(listed.stdout)[0]["name"] == "Domain-0", listed.stderr
        config = write_config(lab, guests, "over-tls")  # read here; its kernel path is dom0's too (the share)
        created = here("--connect", url, "create", str(config))
        assert created.returncode == 0, created.stderr
        assert "over-tls" in domains_json(lab)
        assert here("--connect", url, "destroy", "over-tls").returncode == 0
        assert "over-tls" not in domains_json(lab)
        stranger = root / "stranger"
        make_cert(make_ca(stranger / "ca", "a stranger's CA"), stranger / "client-cert.pem", stranger / "client-key.pem",
                  "admin")
        (stranger / "ca.pem").write_bytes((client_dir / "ca.pem").read_bytes())
        refused = here("--connect", f"tls://127.0.0.1:{port}?tls_dir={stranger}", "list")
        assert refused.returncode == 7 and "ended the connection" in refused.stderr, refused.stderr
        log = lab.exec(["cat", "/var/log/xentool/xentoold.log"], capture=True).out
        assert "API on tls://0.0.0.0:16514 (mutual TLS)" in log and "refused a client" in log
    finally:
        lab.exec(["sh", "-c", "rm -rf /etc/xentool/xentoold.yaml /etc/xentool/tls"], capture=True)
        xentool(lab, "destroy", "over-tls")
        restart_daemon(lab)


def test_guests_marked_autostart_run_again_after_the_host_reboots(lab, guests):
    """Defined guests outlive a reboot of dom0 (their definitions are in /etc/xentool, which the lab
    keeps as a real dom0 keeps /etc); the daemon that init starts then starts those marked
    autostart, and leaves the others shut off."""
    comes_back, stays_off = write_config(lab, guests, "comes-back"), write_config(lab, guests, "stays-off")
    for config in (comes_back, stays_off):
        assert xentool(lab, "define", str(config)).returncode == 0
    assert xentool(lab, "autostart", "comes-back", "on").returncode == 0
    listed = json.loads(xentool(lab, "list", "--all", "--json").out)
    uuid = next(d["uuid"] for d in listed if d["name"] == "comes-back")
    try:
        lab.down()
        lab.up(timeout=600)
        assert xentool(lab, "daemon", "start").returncode == 0
        deadline = time.monotonic() + 300
        while "comes-back" not in domains_json(lab):
            assert time.monotonic() < deadline, lab.exec(["tail", "-5", "/var/log/xentool/xentoold.log"], capture=True).out
            time.sleep(3)
        assert domains_json(lab)["comes-back"]["uuid"] == uuid
        wait_for_console(lab, "comes-back", "xentool-guest: marker=comes-back")
        off = {d["name"]: d for d in json.loads(xentool(lab, "list", "--all", "--json").out)}["stays-off"]
        assert off["state"] == "shut off"
        assert "autostart: started comes-back" in lab.exec(["cat", "/var/log/xentool/xentoold.log"], capture=True).out
    finally:
        xentool(lab, "destroy", "comes-back")
        for name in ("comes-back", "stays-off"):
            xentool(lab, "undefine", name)
