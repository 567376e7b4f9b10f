"""What the daemon (xentoold) and its clients say to each other: JSON messages, one per line.

docs/api.md is the protocol's reference; this module is its one implementation, used by the
daemon's API server and by every client (the CLI, the Python API, remote clients through ssh).

- A request: ``{"xentool": 1, "id": 7, "call": "list", "args": {}}``.  ``xentool`` is the protocol
  version the client speaks; ``id`` any JSON value, echoed in the reply.
- A reply: ``{"id": 7, "result": ...}`` or ``{"id": 7, "error": {"type": "DomainNotFound",
  "message": "...", "exit_code": 3, "fields": {...}}}``.  The error's type names a class of
  :mod:`xentool.errors`; the client raises that class again (:func:`error_from_wire`), so a script
  catches the same exception whether the call ran in its own process or in the daemon.
- An event stream (the ``events`` call) is a reply, then ``{"event": {...}}`` messages until the
  client hangs up.
- A message is at most MAX_MESSAGE bytes; a longer or malformed one gets a ``ProtocolError`` reply
  and the connection is closed, and the daemon goes on serving the others.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from xentool import errors
from xentool.errors import XentoolError

PROTOCOL_VERSION = 1
MAX_MESSAGE = 1 << 20  # a request is a few hundred bytes; a config inlined in one, a few KiB

# Where the daemon keeps its sockets and lock, and its log: elsewhere only for tests, which run a
# daemon of their own on the simulator beside (never instead of) a host's.
RUN_DIR = Path(os.environ.get("XENTOOL_RUN_DIR") or "/run/xentool")
# Everything the daemon's API serves: root (and the `xentool` group, if there is one) only.
API_SOCKET = RUN_DIR / "xentoold.sock"
# list, info, host info and events, for any local user (libvirt's libvirt-sock-ro is the model).
API_RO_SOCKET = RUN_DIR / "xentoold-ro.sock"
# Commands in other processes tell the daemon what they did here (datagrams, root only).
PUBLISH_SOCKET = RUN_DIR / "xentoold-events.sock"
LOCK_PATH = RUN_DIR / "xentoold.pid"  # holds the running daemon's pid, locked while it runs
LOG_PATH = Path(os.environ.get("XENTOOL_LOG_DIR") or "/var/log/xentool") / "xentoold.log"
# The daemon's own settings (what a service manager's unit cannot say on its command line): listen.
DAEMON_CONFIG = Path(os.environ.get("XENTOOL_DAEMON_CONFIG") or "/etc/xentool/xentoold.yaml")

# The call that turns an API connection into a migration's (`xentool migrate NAME tls://HOST`).
MIGRATE_RECEIVE_CALL = "migrate_receive"

# TLS (docs/api.md): a directory of PEM files.  The daemon's holds the CA that signs its clients,
# its own certificate and key, and optionally the names of the clients it takes; a client's holds
# the CA that signed the daemon's certificate and its own certificate and key.
SERVER_TLS_DIR = Path(os.environ.get("XENTOOL_SERVER_TLS_DIR") or "/etc/xentool/tls")
TLS_CA, TLS_SERVER_CERT, TLS_SERVER_KEY = "ca.pem", "server-cert.pem", "server-key.pem"
TLS_CLIENT_CERT, TLS_CLIENT_KEY, TLS_ALLOWED_CLIENTS = "client-cert.pem", "client-key.pem", "allowed-clients"


def client_tls_dir() -> Path:
    """$XENTOOL_TLS_DIR, else /etc/xentool/tls for root, else ~/.config/xentool/tls."""
    if os.environ.get("XENTOOL_TLS_DIR"):
        return Path(os.environ["XENTOOL_TLS_DIR"])
    return SERVER_TLS_DIR if os.geteuid() == 0 else Path.home() / ".config" / "xentool" / "tls"


class ProtocolError(XentoolError):
    """A message that is not what the protocol says (too long, not JSON, wrong fields or version)."""

    exit_code = 2


def encode(message: dict[str, Any]) -> bytes:
    data = json.dumps(message, separators=(",", ":")).encode() + b"\n"
    if len(data) > MAX_MESSAGE:
        raise ProtocolError(f"a message of {len(data)} bytes is over the protocol's {MAX_MESSAGE}")
    return data


def decode(line: bytes) -> dict[str, Any]:
    if len(line) > MAX_MESSAGE:
        raise ProtocolError(f"a message of over {MAX_MESSAGE} bytes")
    try:
        message = json.loads(line)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProtocolError(f"a message is one JSON object per line: {e}") from None
    if not isinstance(message, dict):
        raise ProtocolError("a message is a JSON object")
    return message


def request(call: str, args: dict[str, Any] | None = None, ident: Any = 1) -> dict[str, Any]:
    return {"xentool": PROTOCOL_VERSION, "id": ident, "call": call, "args": args or {}}


def check_request(message: dict[str, Any]) -> tuple[Any, str, dict[str, Any]]:
    """The request's id, call and arguments; ProtocolError if it is not a request this version serves."""
    version = message.get("xentool")
    if version != PROTOCOL_VERSION:
        raise ProtocolError(f"this daemon speaks protocol version {PROTOCOL_VERSION}, the request says {version!r}")
    call, args = message.get("call"), message.get("args", {})
    if not isinstance(call, str) or not isinstance(args, dict):
        raise ProtocolError('a request is {"xentool": 1, "id": ..., "call": NAME, "args": {...}}')
    return message.get("id"), call, args


# Attributes an error keeps beside its message (the rest of its __dict__ is not data: causes, ...).
_ERROR_FIELDS = ("ref", "obituary", "name", "domid", "step", "leftovers", "op", "domain", "device", "what", "seconds",
                 "needed_mib", "free_mib", "pid")


def error_to_wire(error: BaseException) -> dict[str, Any]:
    if isinstance(error, XentoolError):
        fields = {key: value for key, value in vars(error).items()
                  if key in _ERROR_FIELDS and isinstance(value, str | int | float | list | type(None))}
        return {"type": type(error).__name__, "message": str(error), "exit_code": error.exit_code, "fields": fields}
    return {"type": "XentoolError", "message": f"{type(error).__name__}: {error}", "exit_code": XentoolError.exit_code,
            "fields": {}}


def error_from_wire(data: Any) -> XentoolError:
    """The exception a reply's error stands for: the class of xentool.errors it names (with its
    exit code and fields), else a XentoolError with the message and exit code given."""
    if not isinstance(data, dict):
        return ProtocolError(f"an error reply is an object, not {data!r}")
    message = str(data.get("message", "the daemon gave no reason"))
    cls = getattr(errors, str(data.get("type")), None) if data.get("type") != "ProtocolError" else ProtocolError
    if not (isinstance(cls, type) and issubclass(cls, XentoolError)):
        cls = XentoolError
    error = cls.__new__(cls)
    Exception.__init__(error, message)  # the subclasses' own __init__ build the message we already have
    fields = data.get("fields")
    if isinstance(fields, dict):
        for key, value in fields.items():
            if key in _ERROR_FIELDS:
                setattr(error, key, value)
    code = data.get("exit_code")
    if isinstance(code, int) and code != cls.exit_code:
        error.exit_code = code
    return error


__all__ = [
    "API_RO_SOCKET", "API_SOCKET", "DAEMON_CONFIG", "LOCK_PATH", "LOG_PATH", "MAX_MESSAGE", "PROTOCOL_VERSION",
    "PUBLISH_SOCKET", "RUN_DIR", "SERVER_TLS_DIR", "TLS_ALLOWED_CLIENTS", "TLS_CA", "TLS_CLIENT_CERT", "TLS_CLIENT_KEY",
    "TLS_SERVER_CERT", "TLS_SERVER_KEY", "ProtocolError", "check_request", "client_tls_dir", "decode", "encode",
    "error_from_wire", "error_to_wire", "request",
]
