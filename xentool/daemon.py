"""Becoming a daemon: what the console service and the supervisor do, in a forked child, before
they serve.

The double fork and setsid put the service in a session of its own, owned by no terminal and
reaped by init, so the command that started it can return at once.  Its stdio goes to /dev/null
(the caller's terminal or pipes, which the lab's agent waits on, are let go), and every other
inherited descriptor is closed, the caller's xenstore connection above all: kept open, it would
keep the caller's watches alive in xenstored for as long as the service runs.
"""

from __future__ import annotations

import fcntl
import os
import signal


def become_daemon(ready_fd: int) -> int:  # pragma: no cover - runs in a forked child
    """Detach this (forked) process; the first child exits here and the grandchild returns.
    ``ready_fd`` is the one descriptor kept, for telling the waiting parent how it went; returns
    its number, which may have changed."""
    os.setsid()
    if ready_fd < 3:  # a caller started without stdio got the pipe as fd 0-2, which we replace
        ready_fd = fcntl.fcntl(ready_fd, fcntl.F_DUPFD, 3)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    if os.fork() > 0:
        os._exit(0)
    os.closerange(3, ready_fd)
    os.closerange(ready_fd + 1, os.sysconf("SC_OPEN_MAX"))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return ready_fd


__all__ = ["become_daemon"]
