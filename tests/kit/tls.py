"""Certificates for TLS tests, made with the openssl program: a CA, and certificates it signs."""

from __future__ import annotations

import subprocess
from pathlib import Path


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str = "xentool test CA") -> tuple[Path, Path]:
    """A CA's certificate and key in ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / "ca.pem", directory / "ca-key.pem"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}",
             "-keyout", str(key), "-out", str(cert))
    return cert, key


def make_cert(ca: tuple[Path, Path], cert: Path, key: Path, name: str, server: bool = False,
              names: tuple[str, ...] = ("DNS:localhost", "IP:127.0.0.1")) -> None:
    """A certificate for ``name`` signed by ``ca``; a server's holds ``names`` too."""
    request = cert.with_suffix(".csr")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(request))
    extensions = cert.with_suffix(".ext")
    extensions.write_text(f"subjectAltName={','.join(names)}\nextendedKeyUsage=serverAuth\n" if server
                          else "extendedKeyUsage=clientAuth\n")
    _openssl("x509", "-req", "-in", str(request), "-CA", str(ca[0]), "-CAkey", str(ca[1]), "-CAcreateserial", "-days", "2",
             "-extfile", str(extensions), "-out", str(cert))
    key.chmod(0o600)


def server_and_client_dirs(root: Path, names: tuple[str, ...] = ("DNS:localhost", "IP:127.0.0.1")) -> tuple[Path, Path]:
    """A daemon's TLS directory (its certificate for ``names``) and a client's, one CA signing both."""
    ca = make_ca(root / "ca")
    server, client = root / "server", root / "client"
    for directory in (server, client):
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "ca.pem").write_bytes(ca[0].read_bytes())
    make_cert(ca, server / "server-cert.pem", server / "server-key.pem", "xentool-host", server=True, names=names)
    make_cert(ca, client / "client-cert.pem", client / "client-key.pem", "admin")
    return server, client
