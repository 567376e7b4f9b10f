"""Talking to a running QEMU over QMP, with the QEMU project's own client (``qemu.qmp``).

Like libxl, one connection per operation: connect to the domain's socket (the same path xl uses,
:func:`~xentool.devicemodel.argv.qmp_socket_path`), run the commands, disconnect.  QEMU serves one
monitor client at a time, so holding the connection would lock xl (and the next xentool) out.

``qemu.qmp`` is asyncio-only (its synchronous wrapper is GPLv2-only and deprecated): each call here
runs a short event loop, which is all a toolstack command needs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from xentool.devicemodel.paths import qmp_socket_path

QMP_TIMEOUT = 10.0  # seconds for one operation: LIBXL_QMP_CMD_TIMEOUT


class QmpFailed(Exception):
    """A QMP command failed or QEMU did not answer; the message names the command."""


def qmp_execute(domid: int, commands: list[tuple[str, dict[str, Any] | None]], timeout: float = QMP_TIMEOUT,
                pass_fd: int | None = None) -> list[Any]:
    """Run ``commands`` in order on ``domid``'s QEMU; returns their results.  ``pass_fd`` goes to
    QEMU (SCM_RIGHTS) just before the first ``add-fd`` or ``getfd``, which files it in an fdset or
    names it: how a QEMU in an empty chroot is given a file (libxl's dm_restrict saves QEMU's state
    so, and a restored guest's QEMU reads its state so)."""
    # asyncio and qemu.qmp are imported here, not at the top: `list` and `destroy` import this
    # module through the lifecycle, and asyncio alone took 39 ms to import here (many times that
    # in the lab's dom0, where Python runs under TCG); only HVM operations talk QMP.
    import asyncio

    return asyncio.run(_execute(qmp_socket_path(domid), commands, timeout, pass_fd))


def qmp_execute_until(domid: int, commands: list[tuple[str, dict[str, Any] | None]], poll: str,
                      done: Callable[[Any], bool], timeout: float, interval: float = 0.05,
                      pass_fd: int | None = None) -> Any:
    """:func:`qmp_execute`'s ``commands``, then ``poll`` (a command without arguments) every
    ``interval`` seconds in the same session until ``done`` of its result; returns that result.
    One session: a connection costs a third of a second in the lab's dom0."""
    import asyncio

    until = (poll, done, interval)
    return asyncio.run(_execute(qmp_socket_path(domid), commands, timeout, pass_fd, until))[-1]


async def _execute(path: str, commands: list[tuple[str, dict[str, Any] | None]], timeout: float,
                   pass_fd: int | None = None, until: tuple[str, Callable[[Any], bool], float] | None = None) -> list[Any]:
    import asyncio  # qmp_execute imported it: a lookup

    from qemu.qmp import QMPClient
    from qemu.qmp.error import QMPError

    client = QMPClient(f"xentool:{path}")
    current = "connect"
    try:
        await asyncio.wait_for(client.connect(path), timeout)
        results = []
        for name, arguments in commands:
            current = name
            if name in ("add-fd", "getfd") and pass_fd is not None:
                client.send_fd_scm(pass_fd)
                pass_fd = None
            results.append(await asyncio.wait_for(client.execute(name, arguments), timeout))
        if until is not None:
            current, done, interval = until
            results.append(await asyncio.wait_for(_poll(client, current, done, interval), timeout))
        return results
    except TimeoutError:
        raise QmpFailed(f"QMP {current} on {path}: no answer within {timeout:.0f} s") from None
    except (QMPError, OSError) as e:
        raise QmpFailed(f"QMP {current} on {path}: {e}") from e
    finally:
        try:
            await client.disconnect()
        except Exception:  # noqa: BLE001 - a dead QEMU cannot be disconnected from cleanly
            pass


def qmp_ask_each(domids: list[int], command: str, timeout: float = QMP_TIMEOUT) -> dict[int, Any]:
    """``command`` (no arguments) on each domain's QEMU at once, in one event loop: the results of
    those that answered (a QEMU that is gone or silent is left out)."""
    import asyncio

    async def ask_all() -> list[Any]:
        return await asyncio.gather(*(_execute(qmp_socket_path(domid), [(command, None)], timeout) for domid in domids),
                                    return_exceptions=True)

    answers = asyncio.run(ask_all()) if domids else []
    return {domid: answer[0] for domid, answer in zip(domids, answers, strict=True) if not isinstance(answer, BaseException)}


async def _poll(client: Any, command: str, done: Callable[[Any], bool], interval: float) -> Any:
    import asyncio

    while True:
        result = await client.execute(command)
        if done(result):
            return result
        await asyncio.sleep(interval)


__all__ = ["QmpFailed", "qmp_ask_each", "qmp_execute", "qmp_execute_until"]
