"""The daemon's API runs every call that changes the host in a child of its command forker (`xentool
daemon call`), never in its own threads, whose forks could inherit a lock no thread will release.
Here the forker is a stand-in that runs the request in this process; the sim daemon's tests
(test_daemon.py, test_remote.py) drive the real one, which is now the only way such a call runs."""

from __future__ import annotations

import json
import os
import socket
import threading
from typing import Any

import pytest

from xentool.daemon_client import DaemonUnavailable
from xentool.wire import PROTOCOL_VERSION, encode
from xentool.xentoold import api_server
from xentool.xentoold.api_server import ApiServer
from xentool.xentoold.eventlog import EventLog


class Toolstack:
    """What a read-only call is answered with, in the daemon's thread."""

    def list_domains(self) -> list[dict[str, Any]]:
        return [{"name": "Domain-0", "in": "the daemon's thread"}]

    def close(self) -> None:
        pass


def serve(run_command, *requests: dict[str, Any], note=lambda line: None) -> list[dict[str, Any]]:
    """The replies of an ApiServer to ``requests`` on one full (read-write) connection."""
    server = ApiServer(Toolstack, run_command, EventLog(), note, threading.Event())
    client, ours = socket.socketpair()
    assert server._slots.acquire(blocking=False)  # as its accepting thread takes a slot
    worker = threading.Thread(target=server._serve, args=(ours, False, True))
    worker.start()
    replies = []
    with client, client.makefile("rb") as lines:
        for number, request in enumerate(requests):
            client.sendall(encode({"xentool": PROTOCOL_VERSION, "id": number, **request}))
            replies.append(json.loads(lines.readline()))
    worker.join(10)
    return replies


@pytest.fixture(autouse=True)
def log_here(tmp_path, monkeypatch):
    monkeypatch.setattr(api_server, "LOG_PATH", tmp_path / "xentoold.log")


def test_a_call_that_changes_the_host_runs_as_daemon_call_in_the_forker_and_its_reply_comes_back():
    asked: list[tuple[list[str], dict[str, str] | None, str | None]] = []

    def forker(argv, fds, env=None, cwd=None):
        asked.append((argv, env, cwd))
        request = json.loads(argv[2])
        os.write(fds[1], json.dumps({"result": {"ran": request["call"], "args": request["args"]}}).encode() + b"\n")
        return 0

    os.environ["XENTOOL_NO_DAEMON"] = "1"  # as in a test's daemon: not handed on, or the forker would hand it back
    try:
        replies = serve(forker, {"call": "pause", "args": {"domain": "web"}}, {"call": "list"})
    finally:
        del os.environ["XENTOOL_NO_DAEMON"]
    assert replies[0] == {"id": 0, "result": {"ran": "pause", "args": {"domain": "web"}}}
    assert replies[1] == {"id": 1, "result": [{"name": "Domain-0", "in": "the daemon's thread"}]}
    assert [argv[:2] for argv, _, _ in asked] == [["daemon", "call"]]  # the list stayed in the thread
    _, env, cwd = asked[0]
    assert cwd == "/" and env is not None and "XENTOOL_NO_DAEMON" not in env


def test_a_forker_child_that_dies_without_answering_is_one_error_naming_the_call_and_the_log():
    def dying(argv, fds, env=None, cwd=None):
        os.write(fds[2], b"Traceback (most recent call last):\nMemoryError\n")
        return 70

    noted: list[str] = []
    replies = serve(dying, {"call": "destroy", "args": {"domain": "web"}}, note=noted.append)
    error = replies[0]["error"]
    assert "'destroy' ended (status 70) without an answer" in error["message"]
    assert "xentoold.log" in error["message"]
    assert noted == ["API call destroy: Traceback (most recent call last):; MemoryError"]  # what it said, logged


def test_with_no_forker_to_take_it_a_call_says_the_daemon_is_starting_again(monkeypatch):
    monkeypatch.setattr(api_server, "FORKER_SECONDS", 0.3)
    replies = serve(lambda argv, fds, env=None, cwd=None: None, {"call": "create", "args": {"config": {}}})
    assert replies[0]["error"]["type"] == DaemonUnavailable.__name__
    assert "starting again" in replies[0]["error"]["message"]
