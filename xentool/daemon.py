"""Becoming a daemon: what the console service does, in a forked child, before it serves; and
ending with the parent, for the processes the host daemon forks.

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


_PR_SET_PDEATHSIG = 1  # <sys/prctl.h>


def end_with_parent(parent: int | None) -> None:  # pragma: no cover - runs in a forked child
    """Have this (forked) process get SIGTERM when ``parent`` ends, even by SIGKILL; None undoes it.
    If ``parent`` is gone already, this process ends here."""
    import ctypes  # only the daemon's forked children need it

    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM if parent else 0)
    if parent is not None and os.getppid() != parent:
        os._exit(0)


__all__ = ["become_daemon", "end_with_parent"]
