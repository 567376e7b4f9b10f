"""The daemon's TLS listeners: off unless asked for (``--listen tls://ADDR:PORT`` or ``listen:`` in
/etc/xentool/xentoold.yaml), and then mutual: a client shows a certificate signed by the CA in
/etc/xentool/tls/ca.pem, and, when /etc/xentool/tls/allowed-clients exists, one whose subject's
common name is listed there (one per line; libvirt's tls_allowed_dn_list).  A client that passes
gets the full API, as root on the local socket does.
"""

from __future__ import annotations

import ipaddress
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from xentool.errors import UsageError
from xentool.wire import DAEMON_CONFIG, SERVER_TLS_DIR, TLS_ALLOWED_CLIENTS, TLS_CA, TLS_SERVER_CERT, TLS_SERVER_KEY


@dataclass(frozen=True)
class TlsListener:
    host: str
    port: int
    context: ssl.SSLContext
    allowed: frozenset[str] | None  # client names taken; None: any the CA signed

    @property
    def url(self) -> str:
        return f"tls://{self.host}:{self.port}"

    def admits(self, peer: ssl.SSLSocket) -> str | None:
        """None if the peer may in, else why not."""
        if self.allowed is None:
            return None
        subject: Any = (peer.getpeercert() or {}).get("subject", ())  # ((("commonName", "x"),), ...)
        names = {str(value) for rdn in subject for key, value in rdn if key == "commonName"}
        if names & self.allowed:
            return None
        return f"its certificate's name ({', '.join(sorted(names)) or 'none'}) is not in {SERVER_TLS_DIR / TLS_ALLOWED_CLIENTS}"


def listeners(extra: list[str], config: Path = DAEMON_CONFIG, tls_dir: Path = SERVER_TLS_DIR) -> list[TlsListener]:
    """The listeners the config file and ``extra`` ask for; UsageError naming what is wrong."""
    urls = _configured(config) + extra
    return [_listener(url, tls_dir) for url in dict.fromkeys(urls)]


def _configured(config: Path) -> list[str]:
    try:
        data = yaml.safe_load(config.read_text())
    except FileNotFoundError:
        return []
    except (OSError, yaml.YAMLError) as e:
        raise UsageError(f"{config}: cannot be read as YAML: {e}") from None
    if data is None:
        return []
    if not isinstance(data, dict) or set(data) - {"listen"}:
        raise UsageError(f"{config}: the daemon's settings are a mapping with `listen:` (a list of tls://ADDR:PORT)")
    listen = data.get("listen") or []
    if not isinstance(listen, list) or not all(isinstance(url, str) for url in listen):
        raise UsageError(f"{config}: listen: a list of tls://ADDR:PORT")
    return list(listen)


def _listener(url: str, tls_dir: Path) -> TlsListener:
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme != "tls" or not parts.hostname or not port or parts.path or parts.query:
        raise UsageError(f"listen {url!r}: use tls://ADDR:PORT (an address of this host, and a port)")
    try:
        ipaddress.ip_address(parts.hostname)
    except ValueError:
        raise UsageError(f"listen {url!r}: give an IP address to listen on (0.0.0.0 for every one)") from None
    files = {name: tls_dir / name for name in (TLS_CA, TLS_SERVER_CERT, TLS_SERVER_KEY)}
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise UsageError(f"listen {url}: TLS needs {', '.join(missing)} (the CA that signs clients, this host's certificate and key)")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(files[TLS_SERVER_CERT]), str(files[TLS_SERVER_KEY]))
        context.load_verify_locations(str(files[TLS_CA]))
    except (ssl.SSLError, OSError) as e:
        raise UsageError(f"listen {url}: the certificates in {tls_dir} cannot be used: {e}") from None
    context.verify_mode = ssl.CERT_REQUIRED
    allowed_file = tls_dir / TLS_ALLOWED_CLIENTS
    allowed = None
    if allowed_file.exists():
        allowed = frozenset(line.strip() for line in allowed_file.read_text().splitlines()
                            if line.strip() and not line.startswith("#"))
    return TlsListener(parts.hostname, port, context, allowed)


__all__ = ["TlsListener", "listeners"]
