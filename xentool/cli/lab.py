"""`xentool lab ...`: start, inspect, use and stop the Xen lab; and `run_in_lab` behind `--lab`.

Thin: every command calls :class:`xentool.lab.Lab` and formats what it returns.  ``xentool.lab`` and
rich are imported inside the commands: every xentool command loads this module (typer needs the
sub-app to parse), and only `lab` commands and ``--lab`` need them.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import TaskID

    from xentool.lab import Lab, LabOptions, LabStatus

lab_app = typer.Typer(help="The Xen lab: real Xen 4.17 in QEMU, dom0 running this host's root.",
                      no_args_is_help=True)


@cache
def err() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)

NAME_OPTION = typer.Option("default", "--name", "-n", envvar="XENTOOL_LAB", help="Which lab.")
HOST_OPTION = typer.Option(1, "--host", envvar="XENTOOL_LAB_HOST", help="Which of the lab's hosts (1, the default, or 2).")


def _up_with_progress(lab: Lab, options: LabOptions, timeout: float) -> LabStatus:
    """lab.up() with its steps on stderr: a bar (step k of all, time so far) on a terminal, a line
    per step otherwise."""
    return _up_hosts_with_progress(lab.name, 1, options, timeout, lab)[0]


def _up_hosts_with_progress(name: str, hosts: int, options: LabOptions, timeout: float,
                            one: Lab | None = None) -> list[LabStatus]:
    """up_hosts() (or ``one`` lab's up()) with each host's steps on stderr: a bar per host on a
    terminal (they boot side by side), a line per step and host otherwise."""
    from xentool.lab import up_hosts
    from xentool.lab.lab import UP_STEPS

    def run(progress: Callable[[Lab, str], None]) -> list[LabStatus]:
        if one is not None:
            return [one.up(options, timeout=timeout, progress=lambda phase: progress(one, phase))]
        return up_hosts(name, hosts, options, timeout, progress=progress)

    started = time.monotonic()
    console = err()
    if not console.is_terminal:
        return run(lambda lab, phase: console.print(f"{lab.label}: {phase} ({time.monotonic() - started:.1f} s)", markup=False))
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        tasks: dict[str, TaskID] = {}

        def step(lab: Lab, phase: str) -> None:
            if lab.label not in tasks:
                tasks[lab.label] = bar.add_task(lab.label, total=len(UP_STEPS))
            done = UP_STEPS.index(phase) if phase in UP_STEPS else None
            bar.update(tasks[lab.label], description=f"{lab.label}: {phase}", completed=done)

        return run(step)


def _describe(status: LabStatus) -> str:
    which = f"lab {status.name}" + (f" host {status.host}" if status.host > 1 else "")
    if not status.running:
        return f"{which}: not running"
    parts = [f"{which}: running (pid {status.pid})",
             f"Xen {status.xen_version or '?'}",
             "dom0 ready" if status.dom0_ready else "dom0 NOT ready"]
    if status.free_memory_mib is not None:
        parts.append(f"{status.free_memory_mib} of {status.total_memory_mib} MiB free")
    if status.uptime_s is not None:
        parts.append(f"up {status.uptime_s:.0f} s")
    if status.link_name is not None:
        parts.append(f"{status.link_name} ({status.link_address}) on the link")
    return ", ".join(parts)


@lab_app.command()
def up(
    name: str = NAME_OPTION,
    memory: int = typer.Option(3072, "--memory", help="Machine memory, MiB."),
    vcpus: int = typer.Option(2, "--vcpus", help="Machine CPUs."),
    dom0_memory: int = typer.Option(1024, "--dom0-memory", help="dom0's memory, MiB."),
    accel: str = typer.Option("tcg", "--accel", help="tcg (works everywhere) or kvm (where nested KVM runs Xen)."),
    xenconsoled: bool = typer.Option(False, "--xenconsoled", help="Also start xenconsoled (for xl console)."),
    share: list[Path] = typer.Option([], "--share", help="Also export this host directory read-write in dom0 "
                                     "(same path); STATE/share always is."),
    timeout: float = typer.Option(300.0, "--timeout", help="Seconds to wait for dom0."),
    hosts: int = typer.Option(1, "--hosts", help="How many hosts (1 or 2): the second is a Xen host of its own, on a "
                              "private link with the first, both with sshd and the same shared directory."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Start the lab (fetching what is missing) and wait until dom0 is ready."""
    from xentool.lab import Lab, LabOptions

    options = LabOptions(memory, vcpus, dom0_memory, accel, xenconsoled,
                         tuple(str(p.resolve()) for p in share))
    if hosts == 1:
        statuses = [_up_with_progress(Lab(name), options, timeout)]
    else:
        statuses = _up_hosts_with_progress(name, hosts, options, timeout)
    if as_json:
        print(_statuses_json(statuses))
        return
    for status in statuses:
        line = _describe(status)
        if status.already_running:
            line += " (already running)"
        elif status.boot_seconds is not None:
            line += f"; booted in {status.boot_seconds:.1f} s"
        print(line)
    if not all(status.already_running for status in statuses):
        print(f"shared read-write with dom0: {', '.join(statuses[0].shares)}")


def _statuses_json(statuses: list[LabStatus]) -> str:
    """Host 1's status, with every host's (host 1 too) under "hosts": one shape whether or not the lab
    has had a second host, so a script reading `status["running"]` never breaks on a two-host lab."""
    first = statuses[0].to_json()
    first["hosts"] = [one.to_json() for one in statuses]
    return json.dumps(first, indent=2)


@lab_app.command()
def status(name: str = NAME_OPTION, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Is the lab running; Xen version, dom0 readiness, free memory, uptime (each of its hosts)."""
    from xentool.lab import hosts_of

    statuses = [lab.status() for lab in hosts_of(name)]
    st = statuses[0]
    if as_json:
        print(_statuses_json(statuses))
    else:
        for one in statuses:
            if one.host == 1 or one.running:
                print(_describe(one))
    if not st.running:
        raise SystemExit(0 if as_json else 1)  # so `lab status || lab up` reads naturally


@lab_app.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
def exec_cmd(
    command: list[str] = typer.Argument(..., help="The command and its arguments (after --)."),
    name: str = NAME_OPTION,
    host: int = HOST_OPTION,
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Kill the command after this many seconds."),
) -> None:
    """Run a command as root in dom0, in this working directory; exit with its status."""
    from xentool.lab import Lab

    result = Lab(name, host).exec(command, inherit_env=True, timeout=timeout)
    raise SystemExit(result.returncode)  # typer.Exit is swallowed under standalone_mode=False


@lab_app.command()
def console(
    name: str = NAME_OPTION,
    host: int = HOST_OPTION,
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing what comes (Ctrl-C stops)."),
) -> None:
    """Print the lab's serial log (Xen and dom0 console)."""
    from xentool.lab import Lab

    path = Lab(name, host).serial_log_path
    if not path.exists():
        from xentool.lab.errors import LabNotRunning

        raise LabNotRunning(name, host)
    with open(path, "rb") as f:
        while True:
            chunk = f.read(65536)
            if chunk:
                sys.stdout.buffer.write(chunk)
                sys.stdout.buffer.flush()
                continue
            if not follow:
                return
            try:
                time.sleep(0.2)
            except KeyboardInterrupt:
                return


@lab_app.command()
def down(name: str = NAME_OPTION, timeout: float = typer.Option(60.0, "--timeout",
                                                               help="Seconds to wait for a clean power-off.")) -> None:
    """Power the lab off, every host of it (cleanly if dom0 answers, else by signal)."""
    from xentool.lab import hosts_of

    for lab in reversed(hosts_of(name)):
        if lab.down(timeout=timeout):
            print(f"{lab.label}: powered off")
        elif lab.host == 1:
            print(f"{lab.label}: was not running")


@lab_app.command("debian-image")
def debian_image(
    mirror: Optional[str] = typer.Option(None, "--mirror", help="Debian mirror for debootstrap "
                                         "(default $XENTOOL_DEBIAN_MIRROR, else http://deb.debian.org/debian)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Build (once; cached) the Debian 12 guest disk that boots through PVGRUB2, pygrub or SeaBIOS."""
    from xentool.lab.debian_image import DEBIAN_DISK_NAME, install_debian_disk
    from xentool.lab.guest_images import guests_dir

    disk = install_debian_disk(guests_dir() / DEBIAN_DISK_NAME, mirror, log=lambda line: err().print(line))
    if as_json:
        print(json.dumps(disk.facts()))
        return
    print(f"{disk.path}: Debian 12, kernel {disk.kernel_version}, {disk.size_bytes >> 20} MiB "
          f"({disk.used_bytes >> 20} MiB of files), built in {disk.build_seconds:.0f} s")


def _xentool_argv() -> list[str]:
    """This installation's xentool: the venv's script beside this interpreter, else `python -m xentool`."""
    script = Path(sys.prefix) / "bin" / "xentool"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "xentool"]


def run_in_lab(argv: list[str], host: int = 1) -> int:
    """Run `xentool *argv` in the dom0 of the lab's ``host`` (starting the lab if needed), in this
    working directory, with this environment minus XENTOOL_CONNECT=lab (in dom0, xentool finds the
    real Xen itself)."""
    from xentool.lab import Lab, LabOptions

    name = os.environ.get("XENTOOL_LAB", "default")
    lab = Lab(name, host)
    if not lab.is_running():
        if host == 1:
            _up_with_progress(lab, LabOptions(), 300.0)
        else:
            _up_hosts_with_progress(name, host, LabOptions(), 300.0)
    env = {k: v for k, v in os.environ.items() if k != "XENTOOL_CONNECT"}
    return lab.exec(_xentool_argv() + list(argv), env=env, inherit_env=False).returncode
