"""Migration's refusals and failures on the simulator, between two simulated hosts joined by a
stand-in `ssh` that runs the receiver against the target's simulator (as sshd would run it
there).  The simulator has no migration stream, so a guest never moves here: what is shown is that
a refusal or a failure at each phase leaves the guest running where it was and nothing on the
target.  The lab shows the migrations themselves (tests/lab/test_two_hosts.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from kit.daemon import free_port, sim_guest, wait_for_socket
from kit.tls import make_ca, make_cert, server_and_client_dirs

# ssh [options] -- TARGET COMMAND: run COMMAND with sh against TARGET's simulator ($SIM_HOSTS/TARGET).
FAKE_SSH = r"""#!/bin/sh
while [ "$1" != "--" ]; do shift; done
shift; target="$1"; shift
if [ ! -f "$SIM_HOSTS/$target" ]; then echo "ssh: Could not resolve hostname $target: Name or service not known" >&2; exit 255; fi
XENTOOL_CONNECT=$(cat "$SIM_HOSTS/$target") exec sh -c "$*"
"""
RECEIVER = f"{sys.executable} -m xentool"


@pytest.fixture
def hosts(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    (tmp_path / "hosts").mkdir()
    (tmp_path / "hosts" / "far").write_text(f"sim://{tmp_path / 'far'}")
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SIM_HOSTS": str(tmp_path / "hosts"), "XENTOOL_NO_DAEMON": "1",
           "XENTOOL_RUN_DIR": str(tmp_path / "run"), "XENTOOL_LOG_DIR": str(tmp_path / "log"), "HOME": str(tmp_path)}
    return env, f"sim://{tmp_path / 'near'}", f"sim://{tmp_path / 'far'}", tmp_path


def xentool(env: dict[str, str], url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "xentool", "--connect", url, *args], env=env,
                          capture_output=True, text=True, timeout=120)


def domains(env: dict[str, str], url: str) -> dict[str, str]:
    listed = json.loads(xentool(env, url, "list", "--json").stdout)
    return {d["name"]: d["state"] for d in listed if d["name"] != "Domain-0"}


def migrate(env: dict[str, str], url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return xentool(env, url, "migrate", *args, "--remote-xentool", RECEIVER)


def test_a_target_that_refuses_leaves_the_guest_running_here_and_nothing_there(hosts):
    env, near, far, tmp = hosts
    assert xentool(env, near, "create", str(sim_guest(tmp / "near-configs", "web"))).returncode == 0
    assert xentool(env, far, "create", str(sim_guest(tmp / "far-configs", "web"))).returncode == 0
    far_before = domains(env, far)
    ran = migrate(env, near, "web", "far")
    assert ran.returncode == 5, ran.stderr
    line = ran.stderr.strip().splitlines()[-1]
    assert "migration of web failed while checking the guest on the target" in line
    assert "a domain named 'web' already exists" in line and "it runs on here, as before" in line
    assert domains(env, near) == {"web": "running"} and domains(env, far) == far_before


def test_an_unreachable_target_is_said_in_one_line(hosts):
    env, near, _, tmp = hosts
    assert xentool(env, near, "create", str(sim_guest(tmp / "near-configs", "web"))).returncode == 0
    ran = migrate(env, near, "web", "nowhere")
    assert ran.returncode == 5
    assert ran.stderr.strip().splitlines()[-1] == (
        "xentool: error: migration of web failed while connecting to the target: ssh: Could not resolve hostname "
        "nowhere: Name or service not known; it runs on here, as before; nothing was left on the target")
    assert domains(env, near) == {"web": "running"}


def test_a_failure_while_sending_leaves_the_guest_here_and_the_target_clean(hosts):
    """The simulator cannot write a migration stream: the copy fails once it has begun, after the
    target accepted the guest and began to build it."""
    env, near, far, tmp = hosts
    assert xentool(env, near, "create", str(sim_guest(tmp / "near-configs", "web"))).returncode == 0
    ran = migrate(env, near, "web", "far")
    assert ran.returncode == 5
    assert "while sending the guest" in ran.stderr and "it runs on here, as before" in ran.stderr
    assert domains(env, near) == {"web": "running"}
    assert domains(env, far) == {}
    assert not list((Path(far[len("sim://"):]) / "xentool").glob("*.json"))  # no record left there


def test_only_xentools_guests_and_real_targets_are_taken(hosts):
    env, near, _, tmp = hosts
    assert xentool(env, near, "create", str(sim_guest(tmp / "near-configs", "web"))).returncode == 0
    ran = xentool(env, near, "migrate", "--remote-xentool", RECEIVER, "--", "web", "-oProxyCommand=evil")
    assert ran.returncode == 2 and "give the target as HOST or USER@HOST" in ran.stderr
    receiver = subprocess.run([sys.executable, "-m", "xentool", "--connect", near, "migrate-receive"], env=env,
                              input="GET / HTTP/1.0\n", capture_output=True, text=True, timeout=120)
    assert receiver.returncode == 2
    hello, refusal = (json.loads(line) for line in receiver.stdout.splitlines())
    assert hello["phase"] == "hello" and hello["protocol"] == 1
    assert "does not speak xentool's migration protocol" in refusal["error"]["message"]


def test_over_the_targets_daemon_api_a_refusal_and_a_failed_copy_leave_the_guest_here(hosts):
    """`migrate NAME tls://HOST:PORT`: the target's daemon takes the connection (mutual TLS) and runs
    the receiver on it; its refusal comes back in one line, a failed copy leaves nothing there,
    and a client whose certificate the daemon's CA did not sign gets nowhere."""
    env, near, far, tmp = hosts
    server_dir, client_dir = server_and_client_dirs(tmp / "tls")
    port = free_port()
    far_env = {**env, "XENTOOL_CONNECT": far, "XENTOOL_SERVER_TLS_DIR": str(server_dir),
               "XENTOOL_RUN_DIR": str(tmp / "far-run"), "XENTOOL_LOG_DIR": str(tmp / "far-log")}
    daemon = subprocess.Popen([sys.executable, "-m", "xentool", "daemon", "run", "--listen", f"tls://127.0.0.1:{port}"],
                              env=far_env, stderr=subprocess.PIPE)
    try:
        wait_for_socket(tmp / "far-run" / "xentoold.sock", daemon)
        url = f"tls://127.0.0.1:{port}?tls_dir={client_dir}"
        assert xentool(env, near, "create", str(sim_guest(tmp / "near-configs", "web"))).returncode == 0
        assert xentool(env, far, "create", str(sim_guest(tmp / "far-configs", "web"))).returncode == 0
        refused = xentool(env, near, "migrate", "web", url)
        assert refused.returncode == 5, refused.stderr
        assert "failed while checking the guest on the target" in refused.stderr
        assert "a domain named 'web' already exists" in refused.stderr
        assert xentool(env, far, "destroy", "web").returncode == 0
        failed = xentool(env, near, "migrate", "web", url)  # the simulator writes no stream: the copy fails
        assert failed.returncode == 5 and "while sending the guest" in failed.stderr, failed.stderr
        assert domains(env, near) == {"web": "running"} and domains(env, far) == {}
        other = tmp / "other"
        make_cert(make_ca(other / "ca", "another CA"), other / "client-cert.pem", other / "client-key.pem", "admin")
        other.joinpath("ca.pem").write_bytes((client_dir / "ca.pem").read_bytes())
        stranger = xentool(env, near, "migrate", "web", f"tls://127.0.0.1:{port}?tls_dir={other}")
        assert stranger.returncode == 5 and "while connecting to the target" in stranger.stderr, stranger.stderr
        assert domains(env, near) == {"web": "running"}
    finally:
        daemon.terminate()
        assert daemon.wait(30) == 0
    log = (tmp / "far-log" / "xentoold.log").read_text()
    assert "a migration to this host over the API failed" in log


def test_a_sender_gone_silent_is_given_up_on_and_what_it_sent_passes_through_until_then():
    from xentool.migration.silence import SilenceGuard

    read_end, write_end = os.pipe()
    guard = SilenceGuard(read_end, seconds=0.5)
    os.write(write_end, b"part of a stream")
    assert os.read(guard.fd, 100) == b"part of a stream"
    started = time.monotonic()
    assert os.read(guard.fd, 100) == b""  # the sender said nothing more, and is still connected
    assert guard.silent and 0.4 < time.monotonic() - started < 5
    guard.close()
    os.close(write_end)
    os.close(read_end)


def test_a_receiver_whose_sender_goes_silent_says_so_and_leaves_nothing(xt):
    from xentool.errors import XentoolError
    from xentool.migration.receive import receive

    data_read, data_write = os.pipe()
    answers_read, answers_write = os.pipe()
    before = [d.name for d in xt.list_domains()]
    with pytest.raises(XentoolError, match=r"the sender said nothing for 0.5 s \(the link or the source host is gone\)"):
        receive(xt.hv, xt.records, xt.definitions, data_read, answers_write, silence_seconds=0.5)
    assert json.loads(os.read(answers_read, 65536).splitlines()[0])["phase"] == "hello"
    assert [d.name for d in xt.list_domains()] == before
    for fd in (data_read, data_write, answers_read, answers_write):
        os.close(fd)


def test_a_compressed_stream_arrives_whole_and_each_write_arrives_without_waiting_for_more():
    """The sender's compressing pipe and the receiver's guard, back to back: what goes in comes out,
    a small write (the "go" after the stream) gets through at once, and zero pages shrink."""
    from xentool.migration.compression import ZSTD, CompressingPipe
    from xentool.migration.silence import SilenceGuard

    link_read, link_write = os.pipe()
    guard = SilenceGuard(link_read, seconds=30)
    guard.decompress_from_now(ZSTD)
    sender = CompressingPipe(link_write)
    pages = bytes(4096) * 256 + os.urandom(4096) * 4  # zero pages and a few that do not shrink
    received = bytearray()

    def take(size: int) -> None:
        while len(received) < size:
            received.extend(os.read(guard.fd, 1 << 20))

    reader = threading.Thread(target=take, args=(len(pages),))
    reader.start()
    os.write(sender.fd, pages[: 1 << 16])
    os.write(sender.fd, pages[1 << 16:])
    reader.join(30)
    assert bytes(received) == pages
    os.write(sender.fd, b"go\n")
    assert os.read(guard.fd, 100) == b"go\n"  # flushed, though the frame goes on
    sender.close()  # the frame ends; the connection's end is the caller's to close
    os.close(link_write)
    assert os.read(guard.fd, 100) == b"" and not guard.damaged
    guard.close()
    os.close(link_read)


def test_a_damaged_compressed_stream_is_cut_and_said():
    from xentool.migration.silence import SilenceGuard

    read_end, write_end = os.pipe()
    guard = SilenceGuard(read_end, seconds=30)
    guard.decompress_from_now("zstd")
    os.write(write_end, b"not a zstd frame at all" * 10)
    assert os.read(guard.fd, 100) == b""
    assert guard.damaged
    guard.close()
    os.close(write_end)
    os.close(read_end)
