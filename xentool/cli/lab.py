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
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer

if TYPE_CHECKING:
    from rich.console import Console

    from xentool.lab import Lab, LabOptions, LabStatus

lab_app = typer.Typer(help="The Xen lab: real Xen 4.17 in QEMU, dom0 running this host's root.",
                      no_args_is_help=True)


@cache
def err() -> Console:
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)

NAME_OPTION = typer.Option("default", "--name", "-n", envvar="XENTOOL_LAB", help="Which lab.")


def _up_with_progress(lab: Lab, options: LabOptions, timeout: float) -> LabStatus:
    """lab.up() behind a spinner on stderr that names the boot step and the time spent."""
    started = time.monotonic()
    if not err().is_terminal:
        return lab.up(options, timeout=timeout, progress=lambda phase: err().print(
            f"lab {lab.name}: {phase} ({time.monotonic() - started:.1f} s)", markup=False))
    with err().status(f"lab {lab.name}: starting") as spinner:
        return lab.up(options, timeout=timeout, progress=lambda phase: spinner.update(
            f"lab {lab.name}: {phase} [dim]({time.monotonic() - started:.1f} s)[/dim]"))


def _describe(status: LabStatus) -> str:
    if not status.running:
        return f"lab {status.name}: not running"
    parts = [f"lab {status.name}: running (pid {status.pid})",
             f"Xen {status.xen_version or '?'}",
             "dom0 ready" if status.dom0_ready else "dom0 NOT ready"]
    if status.free_memory_mib is not None:
        parts.append(f"{status.free_memory_mib} of {status.total_memory_mib} MiB free")
    if status.uptime_s is not None:
        parts.append(f"up {status.uptime_s:.0f} s")
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
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Start the lab (fetching what is missing) and wait until dom0 is ready."""
    from xentool.lab import Lab, LabOptions

    lab = Lab(name)
    options = LabOptions(memory, vcpus, dom0_memory, accel, xenconsoled,
                         tuple(str(p.resolve()) for p in share))
    status = _up_with_progress(lab, options, timeout)
    if as_json:
        print(json.dumps(status.to_json(), indent=2))
        return
    line = _describe(status)
    if status.already_running:
        line += " (already running)"
    elif status.boot_seconds is not None:
        line += f"; booted in {status.boot_seconds:.1f} s"
    print(line)
    if not status.already_running:
        print(f"shared read-write with dom0: {', '.join(status.shares)}")


@lab_app.command()
def status(name: str = NAME_OPTION, as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """Is the lab running; Xen version, dom0 readiness, free memory, uptime."""
    from xentool.lab import Lab

    st = Lab(name).status()
    if as_json:
        print(json.dumps(st.to_json(), indent=2))
    else:
        print(_describe(st))
    if not st.running:
        raise SystemExit(0 if as_json else 1)  # so `lab status || lab up` reads naturally


@lab_app.command("exec", context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
def exec_cmd(
    command: list[str] = typer.Argument(..., help="The command and its arguments (after --)."),
    name: str = NAME_OPTION,
    timeout: Optional[float] = typer.Option(None, "--timeout", help="Kill the command after this many seconds."),
) -> None:
    """Run a command as root in dom0, in this working directory; exit with its status."""
    from xentool.lab import Lab

    result = Lab(name).exec(command, inherit_env=True, timeout=timeout)
    raise SystemExit(result.returncode)  # typer.Exit is swallowed under standalone_mode=False


@lab_app.command()
def console(
    name: str = NAME_OPTION,
    follow: bool = typer.Option(False, "-f", "--follow", help="Keep printing what comes (Ctrl-C stops)."),
) -> None:
    """Print the lab's serial log (Xen and dom0 console)."""
    from xentool.lab import Lab

    path = Lab(name).serial_log_path
    if not path.exists():
        from xentool.lab.errors import LabNotRunning

        raise LabNotRunning(name)
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
    """Power the lab off (cleanly if dom0 answers, else by signal)."""
    from xentool.lab import Lab

    lab = Lab(name)
    if lab.down(timeout=timeout):
        print(f"lab {name}: powered off")
    else:
        print(f"lab {name}: was not running")


def _xentool_argv() -> list[str]:
    """This installation's xentool: the venv's script beside this interpreter, else `python -m xentool`."""
    script = Path(sys.prefix) / "bin" / "xentool"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "xentool"]


def run_in_lab(argv: list[str]) -> int:
    """Run `xentool *argv` in the lab's dom0 (starting the lab if needed), in this working directory,
    with this environment minus XENTOOL_CONNECT=lab (in dom0, xentool finds the real Xen itself)."""
    from xentool.lab import Lab, LabOptions

    lab = Lab(os.environ.get("XENTOOL_LAB", "default"))
    if not lab.is_running():
        _up_with_progress(lab, LabOptions(), 300.0)
    env = {k: v for k, v in os.environ.items() if k != "XENTOOL_CONNECT"}
    return lab.exec(_xentool_argv() + list(argv), env=env, inherit_env=False).returncode
