"""Another host's daemon, here played by a daemon of the test's own on the simulator: over ssh (an
`ssh` on PATH that runs the remote command here, as sshd would run it there: the transport,
quoting and relay are xentool's, only the hop is missing) and over mutual TLS on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from kit.daemon import daemon_env, free_port, sim_guest, start_daemon, stop_daemon
from kit.tls import make_ca, make_cert, server_and_client_dirs

FAKE_SSH = r"""#!/bin/sh
# ssh [options] -- TARGET COMMAND: run COMMAND with sh, as sshd has the remote user's shell do.
while [ "$1" != "--" ]; do shift; done
shift; echo "$1" >> "$SSH_TARGETS"; shift
exec sh -c "$*"
"""


@pytest.fixture
def remote(tmp_path):
    """The remote host's daemon and a client environment that reaches it through `ssh`."""
    env = daemon_env(tmp_path)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    env["PATH"] = f"{bin_dir}:{Path(sys.prefix) / 'bin'}:/usr/bin:/bin"
    env["SSH_TARGETS"] = str(tmp_path / "ssh-targets")
    daemon = start_daemon(env)
    yield env
    assert stop_daemon(daemon) == 0


def client(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """xentool on the client: its own process, no local daemon, no local hypervisor."""
    local = {k: v for k, v in env.items() if k != "XENTOOL_CONNECT"}
    return subprocess.run([sys.executable, "-m", "xentool", *args], env={**local, "XENTOOL_NO_DAEMON": "1"},
                          capture_output=True, text=True, timeout=120)


def test_the_cli_drives_a_remote_daemon_over_ssh(remote, tmp_path):
    url = "ssh://admin@far-host:2222"
    config = sim_guest(tmp_path / "client-configs", "far-away")  # read here, built there
    created = client(remote, "--connect", url, "create", str(config))
    assert created.returncode == 0, created.stderr
    assert "far-away" in created.stdout
    listed = {d["name"]: d for d in json.loads(client(remote, "--connect", url, "list", "--json").stdout)}
    assert set(listed) == {"Domain-0", "far-away"}
    assert json.loads(client(remote, "--connect", url, "info", "--json", "far-away").stdout)["memory_mib"] == 128
    missing = client(remote, "--connect", url, "info", "nosuch")
    assert missing.returncode == 3 and "no domain 'nosuch'" in missing.stderr  # the remote error, its exit code
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nmemory: lots\n")
    refused = client(remote, "--connect", url, "create", str(bad))
    assert refused.returncode == 2 and f"{bad}:2:9: memory:" in refused.stderr  # checked here: the local file's line
    not_yet = client(remote, "--connect", url, "console", "far-away")
    assert not_yet.returncode == 2 and f"does not work over {url} yet" in not_yet.stderr
    assert len(not_yet.stderr.strip().splitlines()) == 1
    assert client(remote, "--connect", url, "destroy", "far-away").returncode == 0
    assert "far-away" not in client(remote, "--connect", url, "list").stdout
    assert set(Path(remote["SSH_TARGETS"]).read_text().split()) == {"admin@far-host"}


def test_python_scripts_get_the_same_api_and_events_over_ssh(remote, tmp_path):
    config = sim_guest(tmp_path / "client-configs", "scripted")
    script = ("import xentool\n"
              "with xentool.connect('ssh://far-host') as xt:\n"
              f"    xt.create({str(config)!r})\n"
              "    events = xt.events(['scripted'])\n"
              "    xt.pause('scripted')\n"
              "    print(next(e.kind for e in events if e.kind == 'paused'))\n"
              "    try:\n        xt.info('nosuch')\n    except xentool.DomainNotFound as e:\n        print('not found', e.exit_code)\n")
    local = {k: v for k, v in remote.items() if k != "XENTOOL_CONNECT"}
    ran = subprocess.run([sys.executable, "-c", script], env={**local, "XENTOOL_NO_DAEMON": "1"}, capture_output=True,
                         text=True, timeout=120)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.splitlines() == ["paused", "not found 3"]


def test_tls_takes_a_client_its_ca_signed_and_refuses_others(tmp_path):
    server_dir, client_dir = server_and_client_dirs(tmp_path / "tls")
    env = {**daemon_env(tmp_path), "XENTOOL_SERVER_TLS_DIR": str(server_dir)}
    port = free_port()
    daemon = subprocess.Popen([sys.executable, "-m", "xentool", "daemon", "run", "--listen", f"tls://127.0.0.1:{port}"],
                              env={**env, "XENTOOL_NO_DAEMON": "1"}, stderr=subprocess.PIPE)
    try:
        from kit.daemon import wait_for_socket

        wait_for_socket(tmp_path / "run" / "xentoold.sock", daemon)
        url = f"tls://127.0.0.1:{port}?tls_dir={client_dir}"
        listed = client(env, "--connect", url, "list", "--json")
        assert listed.returncode == 0 and json.loads(listed.stdout)[0]["name"] == "Domain-0", listed.stderr
        # A client whose certificate another CA signed is refused in the handshake.
        other = tmp_path / "other"
        other_ca = make_ca(other / "ca", "another CA")
        other.joinpath("ca.pem").write_bytes((client_dir / "ca.pem").read_bytes())
        make_cert(other_ca, other / "client-cert.pem", other / "client-key.pem", "admin")
        refused = client(env, "--connect", f"tls://127.0.0.1:{port}?tls_dir={other}", "list")
        # (TLS 1.3: the client hears of it at its first read, as the alert or as the connection's end)
        assert refused.returncode == 7 and "ended the connection" in refused.stderr, refused.stderr
        # No certificate at all: no client files, one line saying which.
        bare = client(env, "--connect", f"tls://127.0.0.1:{port}?tls_dir={tmp_path / 'none'}", "list")
        assert bare.returncode == 2 and "missing" in bare.stderr
    finally:
        daemon.terminate()
        assert daemon.wait(30) == 0
    log = (tmp_path / "log" / "xentoold.log").read_text()
    assert f"API on tls://127.0.0.1:{port} (mutual TLS)" in log and "refused a client at 127.0.0.1" in log


def test_listening_is_refused_without_certificates_or_a_proper_address(tmp_path):
    env = {**daemon_env(tmp_path), "XENTOOL_SERVER_TLS_DIR": str(tmp_path / "nothing")}
    for address, words in (("tls://127.0.0.1:16514", "TLS needs"), ("tcp://127.0.0.1:1", "use tls://ADDR:PORT"),
                           ("tls://myhost:16514", "give an IP address")):
        ran = subprocess.run([sys.executable, "-m", "xentool", "daemon", "run", "--listen", address],
                             env={**env, "XENTOOL_NO_DAEMON": "1"}, capture_output=True, text=True, timeout=60)
        assert ran.returncode == 2 and words in ran.stderr and len(ran.stderr.strip().splitlines()) == 1, ran.stderr
    assert not (tmp_path / "run" / "xentoold.pid").exists() or os.stat(tmp_path / "run" / "xentoold.pid").st_size == 0


def test_hot_plug_lists_and_save_go_to_the_remote_daemon(remote, tmp_path):
    """block-/network-list come back as the remote host lists them; save is that host's (here the
    simulator, which cannot save memory: its refusal comes back, one line, with its exit status)."""
    url = "ssh://far-host"
    disk = tmp_path / "plugged.img"
    disk.write_bytes(bytes(1 << 20))
    config = sim_guest(tmp_path / "client-configs", "plugged", disks=f"[{{target: {disk}, vdev: xvdb}}]",
                       vifs="[{bridge: xenbr0, mac: '00:16:3e:00:00:01'}]")
    created = client(remote, "--connect", url, "create", str(config))
    assert created.returncode == 0, created.stderr
    there = dict(remote)
    for command, shown in (("block-list", "xvdb"), ("network-list", "00:16:3e:00:00:01")):
        far = client(remote, "--connect", url, command, "--json", "plugged")
        near = subprocess.run([sys.executable, "-m", "xentool", command, "--json", "plugged"], env={**there, "XENTOOL_NO_DAEMON": "1"},
                              capture_output=True, text=True, timeout=120)
        assert far.returncode == near.returncode == 0, (far.stderr, near.stderr)
        assert json.loads(far.stdout) == json.loads(near.stdout) and shown in far.stdout, far.stdout
    saved = client(remote, "--connect", url, "save", "plugged", "/var/tmp/plugged.save")
    assert saved.returncode == 5 and "the sim backend has no saving a guest's memory" in saved.stderr, saved.stderr
    assert "does not work over" not in saved.stderr and len(saved.stderr.strip().splitlines()) == 1
