"""The private link between a lab's hosts: each dom0's address, name and NIC on it, and the ssh
keys made for the lab (one host key per dom0, one client key that both dom0s' root uses).

The link is a QEMU datagram network over two Unix sockets in the labs' state directories: nothing
on this machine has an interface on it and it leads nowhere else.  Every lab has its end of the
link and its sshd from boot on, so a second host can join a running lab (`lab up --hosts 2`).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from xentool.lab.errors import LabError
from xentool.lab.packages import OpenSsh

MAX_HOSTS = 2  # a datagram link has two ends
NETWORK = "192.168.127"
# QEMU's MACs for dom0's NICs: dom0's init finds each NIC by its MAC, not by its probe order.
API_MAC = "52:54:00:58:41:50"
_LINK_MAC = "52:54:00:58:4c:{:02x}"


def check_host(host: int) -> int:
    if not 1 <= host <= MAX_HOSTS:
        raise LabError(f"lab host {host}: a lab has hosts 1 to {MAX_HOSTS}")
    return host


def address(host: int) -> str:
    return f"{NETWORK}.{check_host(host)}"


def host_name(host: int) -> str:
    """dom0's name on the link (its hostname, and in every dom0's /etc/hosts)."""
    return f"xen{check_host(host)}"


def link_mac(host: int) -> str:
    return _LINK_MAC.format(check_host(host))


def ensure_keys(ssh_dir: Path, openssh: OpenSsh) -> Path:
    """The lab's ssh material in ``ssh_dir`` (made once per lab, kept while its state directory is):
    hostN/ssh_host_ed25519_key, client/id_ed25519, known_hosts naming every host by name and
    address, authorized_keys with the client key, ssh_config for dom0's ssh, and sshd.env, which
    tells dom0's init where the unpacked sshd is."""
    if (ssh_dir / "sshd.env").is_file():
        return ssh_dir
    ssh_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".ssh-", dir=ssh_dir.parent))
    try:
        _keygen(work / "client" / "id_ed25519", "xentool-lab client")
        known = []
        for host in range(1, MAX_HOSTS + 1):
            key = work / f"host{host}" / "ssh_host_ed25519_key"
            _keygen(key, f"xentool-lab {host_name(host)}")
            known.append(f"{host_name(host)},{address(host)} {_public(key)}\n")
        (work / "known_hosts").write_text("".join(known))
        (work / "authorized_keys").write_text(_public(work / "client" / "id_ed25519") + "\n")
        (work / "sshd.env").write_text(f"SSHD={openssh.sshd}\nSFTP={openssh.sftp_server}\nLIBS={openssh.library_path}\n")
        try:
            work.rename(ssh_dir)
        except OSError:
            if not (ssh_dir / "sshd.env").is_file():  # not another `lab up` that was quicker
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return ssh_dir


def _keygen(path: Path, comment: str) -> None:
    path.parent.mkdir(mode=0o700)
    result = subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", os.fspath(path)],
                            capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if result.returncode != 0:
        raise LabError(f"ssh-keygen for the lab's {comment} key failed: {result.stderr.strip()}")


def _public(key: Path) -> str:
    kind, blob, *_ = key.with_suffix(".pub").read_text().split()
    return f"{kind} {blob}"


__all__ = ["API_MAC", "MAX_HOSTS", "address", "check_host", "ensure_keys", "host_name", "link_mac"]
