"""`xentool`: the command line.  A thin layer: parse, call :mod:`xentool.api`, format.

Exit codes: 0 success; 1 unexpected error; 2 bad usage or bad config; 3 no such domain; 4 name in
use; 5 a hypervisor operation failed; 6 timed out; 7 no hypervisor reachable; 8 lab failure.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Optional

# Before pydantic is first imported (typer and the config model use it): without this, building the
# first model makes pydantic scan every installed distribution's entry points for plugins, which
# costs seconds where dom0's Python runs under QEMU TCG.  A user's own setting wins.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

import typer

from hypercalls.errors import HypervisorError, XenError
from xentool.errors import ConfigError, UsageError, XentoolError

if TYPE_CHECKING:
    from rich.console import Console

    from xentool.api import Toolstack
    from xentool.create.executor import OpTiming
    from xentool.live_devices import DeviceStatus
    from xentool.stats import GuestStats

# Only what a command runs is imported: rich where rich output is printed, the lab in `lab`
# commands, the toolstack in commands that reach a hypervisor.  Python in the lab's dom0 runs
# under QEMU TCG, where every module imported costs (tests/toolstack/test_cli_imports.py).

app = typer.Typer(
    name="xentool",
    help="A Xen toolstack: create and manage PV, PVH and HVM domains.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
host_app = typer.Typer(help="The Xen host.", no_args_is_help=True)
config_app = typer.Typer(help="Guest config files: check them, import xl.cfg files.", no_args_is_help=True)
app.add_typer(host_app, name="host")
app.add_typer(config_app, name="config")


@cache
def out() -> Console:
    """Rich output on stdout (tables, markup, JSON on a terminal)."""
    from rich.console import Console

    return Console(highlight=False, soft_wrap=True)


def _table_out() -> Console:
    """stdout for a wide table: off a terminal (a pipe, a log) rich would squeeze it into 80 columns."""
    console = out()
    if not console.is_terminal:
        console.width = max(console.width, 160)
    return console


def _stderr_console() -> Console:
    """Rich output on stderr: progress, which must not mix with what a script reads on stdout."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, soft_wrap=True)


def _say(line: str, *, stderr: bool = False) -> None:
    """A plain line (what rich printed for it with markup off), without importing rich."""
    print(line, file=sys.stderr if stderr else sys.stdout, flush=True)


class Options:
    connect: Optional[str] = None
    debug: bool = False


options = Options()


def _toolstack() -> Toolstack:
    if options.connect and options.connect.split("://", 1)[0] in ("ssh", "tls"):
        from xentool.remote import connect as connect_remote  # ssl and ssh only for remote hosts

        return connect_remote(options.connect)
    from xentool.api import connect

    return connect(options.connect)


def _print_timings(timings: list[OpTiming], config_seconds: float | None, total: float) -> None:
    """`--timings`: each step's operations with their seconds, on stderr (stdout stays the result)."""
    lines = [] if config_seconds is None else [f"{config_seconds:8.3f} s  config: read and check the file"]
    lines += [f"{t.seconds:8.3f} s  {t.step}: {t.op}" for t in timings]
    lines.append(f"{total:8.3f} s  in all (from the command's start here, the interpreter's start-up not counted)")
    _say("\n".join(lines), stderr=True)


def json_option() -> Any:
    return typer.Option(False, "--json", help="Machine-readable output (docs/json.md).")


def _print_json(data: Any) -> None:
    out().print_json(json.dumps(data), indent=2) if sys.stdout.isatty() else print(json.dumps(data, indent=2))


@app.callback()
def main_options(
    connect: Optional[str] = typer.Option(
        None, "--connect", envvar="XENTOOL_CONNECT",
        help="xen, sim:///PATH (the simulator), lab, or another host's daemon: ssh://[user@]HOST[:PORT], tls://HOST[:PORT]."
    ),
    lab: bool = typer.Option(False, "--lab", help="Run this command in the Xen lab's dom0 (starts the lab if needed)."),
    host: Optional[int] = typer.Option(None, "--host", help="With --lab: which of the lab's hosts runs it (1 or 2)."),
    debug: bool = typer.Option(False, "--debug", help="Show a traceback on errors."),
) -> None:
    # --lab and --connect lab are handled in main() before parsing; reaching here with them means
    # they were combined in a way main() did not see (e.g. via the environment in a subcommand).
    if host is not None:
        raise UsageError("--host chooses one of the lab's hosts: use it with --lab")
    options.connect = connect
    options.debug = debug


# -- domains ----------------------------------------------------------------------------------------


@app.command()
def create(
    config_file: Path = typer.Argument(..., help="The guest config (YAML)."),
    overrides: list[str] = typer.Argument(None, help="KEY=VALUE settings that override the file (xl style)."),
    paused: bool = typer.Option(False, "-p", "--paused", help="Leave the domain paused."),
    console: bool = typer.Option(False, "-c", "--console", help="Attach to the console after creating."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the build plan (for the --connect hypervisor; real "
                                 "Xen's without one); create nothing."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    timings: bool = typer.Option(False, "--timings", help="Say on stderr how long each step took."),
) -> None:
    """Create a domain from a config file."""
    from xentool.config import load_config

    started = time.monotonic()
    config = load_config(config_file, overrides or [])
    loaded = time.monotonic()
    if dry_run:
        if options.connect:  # the plan of that hypervisor: the simulator's leaves out what it lacks
            with _toolstack() as xt:
                plan = xt.plan(config, paused)
        else:  # touching no hypervisor (this may be no dom0): what real Xen would run
            from xentool.create import plan_creation

            plan = plan_creation(config, str(config.uuid) if config.uuid else "{uuid}", paused)
        if as_json:
            _print_json(plan.to_json())
        else:
            print(plan.describe())
        return
    with _toolstack() as xt:
        times: list[OpTiming] | None = [] if timings else None
        domain = xt.create(config, paused=paused, timings=times)
        if times is not None:
            _print_timings(times, loaded - started, time.monotonic() - started)
        if as_json:
            _print_json(domain.to_json())
        else:
            _say(f"created domain {domain.name} (id {domain.domid}, uuid {domain.uuid}), {domain.state}")
        if console:
            _attach_console(xt, str(domain.domid), replay_bytes=None)
            # The console ends when the guest shuts down; then its on_* action is ours to apply.
            outcome = xt.handle_shutdown(str(domain.domid))
            if outcome is not None:
                _say(f"domain {domain.name} shut down; after its configured action it is {outcome}", stderr=True)


@app.command("list")
def list_domains(
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    all_guests: bool = typer.Option(False, "--all", "-a", help="Defined guests that are not running too (state shut off)."),
) -> None:
    """List the domains, dom0 included."""
    with _toolstack() as xt:
        domains = xt.list_domains()
        running = {d.name for d in domains} | {d.uuid for d in domains}
        off = [d for d in xt.defined() if d.name not in running and d.uuid not in running] if all_guests else []
    if as_json:
        _print_json([d.to_json() for d in domains] + [_shut_off_json(d) for d in off])
        return
    rows = [(d.name, str(d.domid), str(d.memory_mib), str(d.vcpus),
             d.state + (f" ({d.shutdown_reason})" if d.shutdown_reason else ""), f"{d.cpu_time_s:.1f}", d.type)
            for d in domains]
    for o in off:
        row = _shut_off_json(o)
        rows.append((o.name, "-", str(row["memory_mib"]), str(row["vcpus"]), "shut off", "-", str(row["type"])))
    _say(_columns(("Name", "ID", "Mem", "VCPUs", "State", "Time(s)", "Type"), rows, right={1, 2, 3, 5}))


def _columns(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], right: set[int]) -> str:
    """A plain table, as xl prints one: `list` is the command run most, and rich's tables cost a
    third of a second of it in the lab's dom0 (bench/fleet_vs_xl.py)."""
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    return "\n".join("  ".join(cell.rjust(width) if i in right else cell.ljust(width)
                               for i, (cell, width) in enumerate(zip(line, widths, strict=True))).rstrip()
                     for line in (header, *rows))


def _shut_off_json(definition: Any) -> dict[str, Any]:
    """A defined guest that is not running, as a row of `list --json`."""
    config = definition.resolved
    return {"domid": None, "name": definition.name, "uuid": definition.uuid, "type": config.get("type"),
            "state": "shut off", "memory_mib": config.get("memory"), "max_memory_mib": config.get("maxmem", config.get("memory")),
            "vcpus": config.get("vcpus", 1), "cpu_time_s": None, "shutdown_reason": None, "autostart": definition.autostart}


# -- defined guests ---------------------------------------------------------------------------------

CHANGES_PENDING = 10  # `apply --dry-run`: terraform plan -detailed-exitcode's "2", which here means bad usage


@app.command()
def define(
    config_file: Path = typer.Argument(..., help="The guest config (YAML)."),
    overrides: Optional[list[str]] = typer.Argument(None, help="KEY=VALUE settings that override the file's."),
    as_json: bool = json_option(),
) -> None:
    """Keep a guest's config, checked, to start it by name (`start`) and when the host boots (`autostart`)."""
    with _toolstack() as xt:
        definition = xt.define(config_file, overrides or [])
    if as_json:
        _print_json(definition.to_json())
        return
    _say(f"defined guest {definition.name} (uuid {definition.uuid}) from {definition.source}")


@app.command()
def apply(
    paths: list[Path] = typer.Argument(..., help="Guest configs, or folders of them (*.yaml, *.yml)."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Print the plan and change nothing; exit status "
                                 f"{CHANGES_PENDING} if changes are pending, 0 if none."),
    prune: bool = typer.Option(False, "--prune", help="Destroy and undefine defined guests that no file names."),
    restart: bool = typer.Option(False, "--restart", help="Restart guests whose changes cannot be made live."),
    as_json: bool = json_option(),
) -> None:
    """Make the defined and running guests what the files say: define, start, change live; say what needs a restart."""
    from xentool import desired

    configs = desired.read_files(paths)  # every file's errors at once, before anything changes
    say = (lambda text, stderr=False: None) if as_json else _say
    with _toolstack() as xt, desired.one_at_a_time(lambda: say("waiting for another apply to finish", stderr=True)):
        plans = desired.plan(xt, configs, prune=prune, restart=restart)
        report: dict[str, dict[str, Any]] = {
            guest.name: {"changes": [step.says for step in guest.steps], "needs_restart": list(guest.needs_restart),
                         "problem": guest.problem, "outcome": None, "done": None} for guest in plans}
        pending = False
        for guest in plans:
            for step in guest.steps:
                say(f"{guest.name}: {step.says}")
            if guest.needs_restart:
                say(f"{guest.name}: needs restart ({', '.join(guest.needs_restart)} changed): apply --restart does it")
            if guest.problem:
                say(f"{guest.name}: {guest.problem}", stderr=True)
            pending = pending or bool(guest.steps or guest.needs_restart)
        failed = False
        if pending and not dry_run:
            for guest in plans:
                if guest.steps:
                    outcome = desired.execute(guest)
                    say(f"{guest.name}: {outcome.says}", stderr=not outcome.done)
                    report[guest.name].update(outcome=outcome.says, done=outcome.done)
                    failed = failed or not outcome.done
    if as_json:
        _print_json({"changes_pending": pending, "dry_run": dry_run, "guests": report})
    elif not pending:
        _say("no changes")
    if failed:
        raise typer.Exit(5)
    if pending and dry_run:
        raise typer.Exit(CHANGES_PENDING)


@app.command()
def undefine(name: str = typer.Argument(..., help="A defined guest's name."), as_json: bool = json_option()) -> None:
    """Forget a defined guest's config (if it runs, it goes on running)."""
    with _toolstack() as xt:
        xt.undefine(name)
    if as_json:
        _print_json({"name": name, "defined": False})
        return
    _say(f"undefined guest {name}")


@app.command()
def start(
    name: str = typer.Argument(..., help="A defined guest's name."),
    paused: bool = typer.Option(False, "-p", "--paused", help="Leave the domain paused."),
    as_json: bool = json_option(),
) -> None:
    """Create a defined guest from its kept config (same uuid, same MACs)."""
    with _toolstack() as xt:
        domain = xt.start(name, paused)
    if as_json:
        _print_json(domain.to_json())
        return
    _say(f"started guest {domain.name} (id {domain.domid}, uuid {domain.uuid}), {domain.state}")


@app.command()
def autostart(
    name: str = typer.Argument(..., help="A defined guest's name."),
    setting: str = typer.Argument(..., help="on or off."),
    order: Optional[int] = typer.Option(None, "--order", help="Lower starts first when the host boots."),
    delay: Optional[float] = typer.Option(None, "--delay", help="Seconds to wait after starting it before the next."),
    as_json: bool = json_option(),
) -> None:
    """Whether the daemon starts a defined guest when the host boots."""
    if setting not in ("on", "off"):
        raise UsageError(f"autostart {name} {setting!r}: say on or off")
    if delay is not None and not 0 <= delay <= 3600:
        raise UsageError(f"--delay {delay:g}: between 0 and 3600 seconds")
    with _toolstack() as xt:
        definition = xt.set_autostart(name, setting == "on", order, delay)
    if as_json:
        _print_json(definition.to_json())
        return
    _say(f"autostart of {name}: {'on' if definition.autostart else 'off'} "
         f"(order {definition.autostart_order}, delay {definition.autostart_delay:g} s)")


@app.command()
def info(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show one domain: state, memory, vcpus, cpu time, shutdown reason, config."""
    with _toolstack() as xt:
        details = xt.info(domain)
    data = details.to_json()
    if as_json:
        _print_json(data)
        return
    from rich.table import Table

    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        if key == "config":
            continue
        table.add_row(key, "-" if value is None else str(value))
    out().print(table)
    if details.config:
        import yaml

        out().print("[bold]config[/bold]")
        out().print(yaml.safe_dump(details.config, sort_keys=False).rstrip())


@app.command()
def destroy(domain: str = typer.Argument(..., help="Domain name, id or uuid.")) -> None:
    """Destroy a domain at once (no shutdown request)."""
    with _toolstack() as xt:
        xt.destroy(domain)


@app.command()
def shutdown(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    wait: bool = typer.Option(False, "-w", "--wait", help="Wait until the guest has shut down."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait with -w."),
    acpi: bool = typer.Option(False, "--acpi", help="Press the HVM guest's ACPI power button, even if its PV "
                              "drivers could be asked."),
    as_json: bool = json_option(),
) -> None:
    """Ask the guest to power off (xenstore control/shutdown; an HVM guest without PV drivers, or
    with --acpi: its ACPI power button)."""
    with _toolstack() as xt:
        final = xt.shutdown(domain, wait=wait, timeout=timeout, acpi=acpi)
    if as_json:
        _print_json({"domain": domain, "state": final, "waited": wait})
    elif wait:
        out().print(f"domain {domain}: {final}")


@app.command()
def reboot(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    timeout: float = typer.Option(60.0, "--timeout", help="Seconds to wait for the guest to go down."),
    as_json: bool = json_option(),
) -> None:
    """Ask the guest to reboot, then apply its on_reboot action."""
    with _toolstack() as xt:
        final = xt.reboot(domain, wait=True, timeout=timeout)
    if as_json:
        _print_json({"domain": domain, "state": final, "waited": True})
        return
    out().print(f"domain {domain}: {final}")


@app.command()
def pause(domain: str = typer.Argument(..., help="Domain name, id or uuid.")) -> None:
    """Pause a domain."""
    with _toolstack() as xt:
        xt.pause(domain)


@app.command()
def unpause(domain: str = typer.Argument(..., help="Domain name, id or uuid.")) -> None:
    """Unpause a domain."""
    with _toolstack() as xt:
        xt.unpause(domain)


@app.command()
def rename(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    new_name: str = typer.Argument(..., help="The new name."),
) -> None:
    """Rename a domain."""
    with _toolstack() as xt:
        xt.rename(domain, new_name)


@app.command("mem-set")
def mem_set(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    memory: str = typer.Argument(..., help="New balloon target: MiB, or a size like 512M or 2G."),
) -> None:
    """Set a domain's memory (balloon) target."""
    mib = _memory_argument(memory)
    with _toolstack() as xt:
        xt.mem_set(domain, mib)


@app.command("mem-max")
def mem_max(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    memory: str = typer.Argument(..., help="The most it may balloon up to: MiB, or a size like 1G."),
) -> None:
    """Set the most memory a domain may balloon up to (its maxmem), as xl mem-max."""
    mib = _memory_argument(memory)
    with _toolstack() as xt:
        xt.mem_max(domain, mib)


def _memory_argument(memory: str) -> int:
    """MEMORY as MiB: a number of MiB, or a size like 512M or 2G."""
    from xentool.config.sizes import parse_size_mib

    try:
        return parse_size_mib(memory)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="MEMORY") from e


@app.command("vcpu-set")
def vcpu_set(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    vcpus: int = typer.Argument(..., help="How many vcpus to have online."),
) -> None:
    """Set how many of a domain's vcpus are online."""
    with _toolstack() as xt:
        xt.vcpu_set(domain, vcpus)


def _rate(value: float | None) -> str:
    """Bytes per second, shortened as xentop does (K, M: 1024s); "-" where not counted."""
    if value is None:
        return "-"
    for unit in ("", "K", "M", "G"):
        if value < 1024 or unit == "G":
            return f"{value:.0f}{unit}" if unit == "" else f"{value:.1f}{unit}"
        value /= 1024
    return f"{value:.1f}G"


def _stats_table(rows: list[GuestStats], title: str | None = None) -> Any:
    from rich.table import Table

    table = Table(box=None, pad_edge=False, title=title, title_justify="left")
    for column in ("Name", "ID", "State", "CPU%", "CPU(s)", "Mem(MiB)", "Max(MiB)", "VCPUs",
                   "NetRX/s", "NetTX/s", "BlkRd/s", "BlkWr/s"):
        table.add_column(column, justify="left" if column in ("Name", "State") else "right")
    for r in rows:
        table.add_row(r.name, str(r.domid), r.state, f"{r.cpu_percent:.1f}", f"{r.cpu_time_s:.1f}", str(r.memory_mib),
                      str(r.max_memory_mib), str(r.vcpus), _rate(r.net_rx_rate), _rate(r.net_tx_rate),
                      _rate(r.block_read_rate), _rate(r.block_write_rate))
    return table


@app.command()
def stats(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    interval: float = typer.Option(1.0, "--interval", "-i", help="Seconds over which rates are measured."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """What one domain uses: CPU %, memory, vcpus, network and disk rates (and totals with --json)."""
    with _toolstack() as xt:
        rows = xt.stats(domain, interval)
    if as_json:
        _print_json(rows[0].to_json())
        return
    _table_out().print(_stats_table(rows))


@app.command()
def top(
    delay: float = typer.Option(2.0, "--delay", "-d", help="Seconds between refreshes."),
    sort: str = typer.Option("cpu", "--sort", "-s", help="cpu, memory, name, net or block."),
    once: bool = typer.Option(False, "--once", help="One measurement over --delay seconds, then exit."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output (implies --once)."),
) -> None:
    """A live table of every domain's CPU, memory, vcpus and network and disk rates, as xentop."""
    from xentool.stats import SORT_KEYS, sort_rows

    if sort not in SORT_KEYS:
        raise typer.BadParameter(f"{sort!r}: sort by one of {', '.join(SORT_KEYS)}", param_hint="--sort")
    if delay <= 0:
        raise typer.BadParameter(f"{delay}: give a number of seconds above 0", param_hint="--delay")
    with _toolstack() as xt:
        if once or as_json or not out().is_terminal:
            rows = sort_rows(xt.stats(None, delay), sort)
            if as_json:
                _print_json([r.to_json() for r in rows])
            else:
                _table_out().print(_stats_table(rows))
            return
        from rich.live import Live

        title = f"xentool top: every {delay:g} s, sorted by {sort}; Ctrl-C ends"
        with Live(_stats_table([], title), console=out(), auto_refresh=False) as live:
            try:
                while True:
                    live.update(_stats_table(sort_rows(xt.stats(None, delay), sort), title), refresh=True)
            except KeyboardInterrupt:
                pass


@app.command("cpupool-list")
def cpupool_list(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """List CPU pools: their CPUs, scheduler and how many domains run in each, as xl cpupool-list -c."""
    with _toolstack() as xt:
        pools = xt.cpupools()
    if as_json:
        _print_json([p.to_json() for p in pools])
        return
    from rich.table import Table

    from xentool.placement import cpu_ranges

    table = Table(box=None, pad_edge=False)
    for column in ("Name", "ID", "CPUs", "Sched", "Domains"):
        table.add_column(column, justify="right" if column in ("ID", "Domains") else "left")
    for p in pools:
        table.add_row(p.name, str(p.poolid), cpu_ranges(frozenset(p.cpus)), p.scheduler, str(p.domains))
    out().print(table)


@app.command("cpupool-create")
def cpupool_create(
    file: Path = typer.Argument(..., help="YAML with name, sched (credit2 unless said) and cpus (free ones)."),
    as_json: bool = json_option(),
) -> None:
    """Make a CPU pool from a small YAML file, as xl cpupool-create."""
    from xentool.cpupools import PoolSpec

    spec = PoolSpec.from_file(file)
    with _toolstack() as xt:
        pool = xt.cpupool_create(spec.name, spec.scheduler, sorted(spec.cpus))
    if as_json:
        _print_json(pool.to_json())
        return
    _say(f"created cpupool {pool.name} (id {pool.poolid}, {pool.scheduler}, cpus {', '.join(map(str, pool.cpus)) or 'none'})")


@app.command("cpupool-destroy")
def cpupool_destroy(name: str = typer.Argument(..., help="The pool's name.")) -> None:
    """Destroy an empty CPU pool; its CPUs become free."""
    with _toolstack() as xt:
        xt.cpupool_destroy(name)


@app.command("cpupool-cpu-add")
def cpupool_cpu_add(name: str = typer.Argument(..., help="The pool's name."),
                    cpu: int = typer.Argument(..., help="A free CPU.")) -> None:
    """Give a CPU pool a free CPU."""
    with _toolstack() as xt:
        xt.cpupool_cpu_add(name, cpu)


@app.command("cpupool-cpu-remove")
def cpupool_cpu_remove(name: str = typer.Argument(..., help="The pool's name."),
                       cpu: int = typer.Argument(..., help="One of its CPUs.")) -> None:
    """Take a CPU out of a pool (it becomes free)."""
    with _toolstack() as xt:
        xt.cpupool_cpu_remove(name, cpu)


@app.command("cpupool-migrate")
def cpupool_migrate(domain: str = typer.Argument(..., help="Domain name, id or uuid."),
                    pool: str = typer.Argument(..., help="The pool to move it into.")) -> None:
    """Move a guest into another CPU pool, as xl cpupool-migrate."""
    with _toolstack() as xt:
        xt.cpupool_migrate(domain, pool)


@app.command("vcpu-pin")
def vcpu_pin(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    vcpu: str = typer.Argument(..., help="The vcpu's number, or all."),
    cpus: str = typer.Argument(..., help="Hard affinity: the CPUs it may run on (all, 0-3,5; - leaves it)."),
    soft: str = typer.Argument("-", help="Soft affinity: the CPUs the scheduler prefers (all, 0-1; - leaves it)."),
) -> None:
    """Set where a domain's vcpus may run (hard affinity) and prefer to run (soft), as xl vcpu-pin."""
    with _toolstack() as xt:
        xt.vcpu_pin(domain, vcpu, cpus, soft)


@app.command("vcpu-list")
def vcpu_list(
    domain: str = typer.Argument(None, help="Domain name, id or uuid; every domain if left out."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List vcpus: the CPU each is on, its state, CPU time and affinities, as xl vcpu-list."""
    with _toolstack() as xt:
        rows = xt.vcpu_list(domain)
    if as_json:
        _print_json([row.to_json() for row in rows])
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("Name", "ID", "VCPU", "CPU", "State", "Time(s)", "Affinity (Hard / Soft)"):
        table.add_column(column, justify="right" if column in ("ID", "VCPU", "CPU", "Time(s)") else "left")
    for row in rows:
        table.add_row(row.name, str(row.domid), str(row.vcpu), "-" if row.cpu is None else str(row.cpu), row.state,
                      f"{row.cpu_time_s:.1f}", f"{row.hard_affinity} / {row.soft_affinity}")
    out().print(table)


RATELIMIT_HELP = "With -s: the least time a vcpu runs before another takes its CPU, in µs (0: none; else 100..500000)."


def _pool_sched_command(scheduler: str, domain: str | None, pool: str | None, weight: int | None, cap: int | None,
                        pool_values: dict[str, int | None], as_json: bool) -> None:
    """`-s`: a cpupool's own parameters (Pool-0's without -p), shown as xl shows them, or set."""
    if domain is not None or weight is not None or cap is not None:
        raise typer.BadParameter("-s is about a cpupool's parameters, -d, -w and -c about a domain's: give one or the other",
                                 param_hint="--schedparam")
    given = {name.strip("-").replace("-", "_"): value for name, value in pool_values.items() if value is not None}
    with _toolstack() as xt:
        if given:
            params = xt.pool_sched_set(pool or "Pool-0", scheduler, **given)
        else:
            params = xt.pool_sched_get(pool or "Pool-0", scheduler)
    if as_json:
        _print_json(params.to_json())
    elif not given:  # setting prints nothing, as with xl
        print(params.describe())


def _sched_command(scheduler: str, domain: str | None, pool: str | None, weight: int | None, cap: int | None,
                   as_json: bool, schedparam: bool = False, pool_values: dict[str, int | None] | None = None) -> None:
    """xl sched-credit and sched-credit2: set a domain's weight and cap, or show them (every
    domain's under that scheduler, or in one pool, when no domain is named); with ``schedparam``
    (-s), a pool's own parameters."""
    pool_values = pool_values or {}
    named = next((name for name, value in pool_values.items() if value is not None), None)
    if named is not None and not schedparam:
        raise typer.BadParameter(f"{named} is a cpupool's parameter: add -s (and -p POOL; Pool-0 otherwise), as with xl",
                                 param_hint="--schedparam")
    if schedparam:
        _pool_sched_command(scheduler, domain, pool, weight, cap, pool_values, as_json)
        return
    if domain is None and (weight is not None or cap is not None):
        raise typer.BadParameter("name the domain (-d) whose weight or cap to set", param_hint="--domain")
    with _toolstack() as xt:
        if domain is not None and (weight is not None or cap is not None):
            xt.sched_set(domain, weight, cap, scheduler=scheduler)
            return
        if pool is not None and pool not in {p.name for p in xt.cpupools()}:
            raise typer.BadParameter(f"no cpupool named {pool!r} (xentool cpupool-list)", param_hint="--pool")
        shown = []
        for d in [xt.lookup(domain)] if domain is not None else xt.list_domains():
            params = xt.sched_get(d.domid)
            if domain is not None and params.scheduler != scheduler:
                from xentool.placement import check_scheduler

                check_scheduler(params, scheduler, f"domain {d.name}")
            if pool is not None and xt.info(d.domid).pool != pool:
                continue
            if params.scheduler == scheduler:
                shown.append({"name": d.name, "domid": d.domid, "weight": params.weight, "cap": params.cap})
    if as_json:
        _print_json(shown)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, title=f"scheduler {scheduler}", title_justify="left")
    for column in ("Name", "ID", "Weight", "Cap"):
        table.add_column(column, justify="left" if column == "Name" else "right")
    for row in shown:
        table.add_row(str(row["name"]), str(row["domid"]), str(row["weight"]), str(row["cap"]))
    out().print(table)


@app.command("sched-credit2")
def sched_credit2(
    domain: str = typer.Option(None, "--domain", "-d", help="Domain name, id or uuid."),
    pool: str = typer.Option(None, "--pool", "-p", help="Show only the domains in this cpupool."),
    weight: int = typer.Option(None, "--weight", "-w", help="Its share when CPUs are contended: 1..65535 (256 by default)."),
    cap: int = typer.Option(None, "--cap", "-c", help="The most CPU it may use, % of one CPU (0: no cap)."),
    schedparam: bool = typer.Option(False, "--schedparam", "-s", help="The cpupool's own parameters (-p POOL; Pool-0 otherwise)."),
    ratelimit: int = typer.Option(None, "--ratelimit-us", "--ratelimit_us", "-r", help=RATELIMIT_HELP),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show or set credit2 weights and caps, or a cpupool's rate limit (-s), as xl sched-credit2."""
    _sched_command("credit2", domain, pool, weight, cap, as_json, schedparam, {"--ratelimit-us": ratelimit})


@app.command("sched-credit")
def sched_credit(
    domain: str = typer.Option(None, "--domain", "-d", help="Domain name, id or uuid."),
    pool: str = typer.Option(None, "--pool", "-p", help="Show only the domains in this cpupool."),
    weight: int = typer.Option(None, "--weight", "-w", help="Its share when CPUs are contended: 1..65535 (256 by default)."),
    cap: int = typer.Option(None, "--cap", "-c", help="The most CPU it may use, % of one CPU (0: no cap)."),
    schedparam: bool = typer.Option(False, "--schedparam", "-s", help="The cpupool's own parameters (-p POOL; Pool-0 otherwise)."),
    tslice: int = typer.Option(None, "--tslice-ms", "--tslice_ms", "-t", help="With -s: the time slice, in ms (1..1000)."),
    ratelimit: int = typer.Option(None, "--ratelimit-us", "--ratelimit_us", "-r", help=RATELIMIT_HELP),
    migration_delay: int = typer.Option(None, "--migration-delay-us", "--migration_delay_us", "-m",
                                        help="With -s: how long a vcpu stays cache-hot on its CPU, in µs (0..100000)."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """Show or set credit weights and caps (a cpupool running the credit scheduler), or a cpupool's time slice,
    rate limit and migration delay (-s), as xl sched-credit."""
    _sched_command("credit", domain, pool, weight, cap, as_json, schedparam,
                   {"--tslice-ms": tslice, "--ratelimit-us": ratelimit, "--migration-delay-us": migration_delay})


def _print_devices(devices: list[DeviceStatus], as_json: bool, columns: tuple[str, ...]) -> None:
    if as_json:
        _print_json([d.to_json() for d in devices])
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in ("Dev", "DevId", "BE-state", "FE-state", *(c.replace("_", " ").capitalize() for c in columns)):
        table.add_column(column)
    for d in devices:
        table.add_row(d.name, str(d.devid), d.backend_state, d.frontend_state, *(d.details.get(c, "") for c in columns))
    out().print(table)


@app.command("block-attach")
def block_attach(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    disk: str = typer.Argument(..., help="The disk, xl style: TARGET,FORMAT,VDEV,ACCESS (e.g. /img/b.raw,raw,xvdb,rw)."),
    as_json: bool = json_option(),
) -> None:
    """Give a running guest another disk; returns once the guest has connected it."""
    with _toolstack() as xt:
        status = xt.block_attach(domain, disk)
    if as_json:
        _print_json(status.to_json())
        return
    d = status.details
    served = d["device"] if d["served_by"] == "blkback" else "qdisk"
    out().print(f"domain {domain}: {status.name} attached ({d['target']} as {served or 'device'})")


@app.command("block-detach")
def block_detach(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    vdev: str = typer.Argument(..., help="The disk's name in the guest, like xvdb."),
    force: bool = typer.Option(False, "--force", help="Remove it even if the guest does not let go."),
) -> None:
    """Take a disk away from a running guest (it must let go of it first, unless --force)."""
    with _toolstack() as xt:
        xt.block_detach(domain, vdev, force)


@app.command("block-list")
def block_list(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List a domain's disks and the state of both halves of each."""
    with _toolstack() as xt:
        _print_devices(xt.block_list(domain), as_json, ("target", "mode", "served_by", "device"))


@app.command("network-attach")
def network_attach(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    settings: Optional[list[str]] = typer.Argument(None, help="xl style: bridge=xenbr0 mac=00:16:3e:.. vifname=.."),
    as_json: bool = json_option(),
) -> None:
    """Give a running guest another network interface; returns once the guest has connected it."""
    with _toolstack() as xt:
        status = xt.network_attach(domain, ",".join(settings or []))
    if as_json:
        _print_json(status.to_json())
        return
    d = status.details
    wired = f"routing {d['ip']}" if d["mode"] == "route" else f"on {d['bridge']}"
    out().print(f"domain {domain}: {status.name} attached ({d['mac']} as {d['interface']} {wired})")


@app.command("network-detach")
def network_detach(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    which: str = typer.Argument(..., help="The vif's devid or MAC address."),
    force: bool = typer.Option(False, "--force", help="Remove it even if the guest does not let go."),
) -> None:
    """Take a network interface away from a running guest."""
    with _toolstack() as xt:
        xt.network_detach(domain, which, force)


@app.command("network-list")
def network_list(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
) -> None:
    """List a domain's network interfaces and the state of both halves of each."""
    with _toolstack() as xt:
        _print_devices(xt.network_list(domain), as_json, ("mac", "mode", "bridge", "ip", "interface"))


@app.command()
def save(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    file: Path = typer.Argument(..., help="The save file to write."),
    checkpoint: bool = typer.Option(False, "-c", "--checkpoint", help="Leave the guest running after saving."),
    as_json: bool = json_option(),
) -> None:
    """Suspend a guest and save it, with its config, to FILE; then destroy it (unless -c)."""
    from xentool.cli.progress import copy_progress

    with _toolstack() as xt, copy_progress(_stderr_console(), f"saving {domain}", quiet=as_json) as progress:
        result = xt.save(domain, file, checkpoint, progress=progress)
    if as_json:
        _print_json({"domain": domain, **asdict(result)})
        return
    then = "still running" if result.kept_running else "destroyed"
    out().print(f"saved domain {domain} to {result.path} ({result.size // (1024 * 1024)} MiB in {result.seconds:g} s); {then}")


@app.command()
def restore(
    file: Path = typer.Argument(..., help="A file written by `xentool save`."),
    paused: bool = typer.Option(False, "-p", "--paused", help="Leave the domain paused."),
    timings: bool = typer.Option(False, "--timings", help="Say on stderr how long each step took."),
    as_json: bool = json_option(),
) -> None:
    """Bring back a saved guest: it goes on where it stopped."""
    from xentool.cli.progress import copy_progress

    started = time.monotonic()
    with _toolstack() as xt, copy_progress(_stderr_console(), f"restoring {file.name}", quiet=as_json, unit="MiB") as progress:
        times: list[OpTiming] | None = [] if timings else None
        domain = xt.restore(file, paused, timings=times, progress=progress)
    if times is not None:
        _print_timings(times, None, time.monotonic() - started)
    if as_json:
        _print_json(domain.to_json())
        return
    _say(f"restored domain {domain.name} (id {domain.domid}, uuid {domain.uuid}), {domain.state}")


@app.command()
def migrate(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    host: str = typer.Argument(..., help="The target: HOST or USER@HOST, reached with ssh; or tls://HOST[:PORT][?tls_dir=DIR], "
                               "its daemon's API (mutual TLS, the client files of `--connect tls://`)."),
    non_live: bool = typer.Option(False, "--non-live", help="Suspend the guest for the whole copy (live: only for the last round)."),
    keep_source_definition: bool = typer.Option(False, "--keep-source-definition",
                                                help="A defined guest's definition stays here too (it moves by default)."),
    ssh_command: str = typer.Option("ssh", "-s", "--ssh-command", help="The ssh to run, with its options (split as a shell "
                                    "would, never run by one), e.g. 'ssh -p 2222'."),
    remote_xentool: str = typer.Option("xentool", "--remote-xentool", help="The xentool program on the target (a command: "
                                       "'/opt/xentool/bin/xentool', 'python3 -m xentool')."),
    no_compress: bool = typer.Option(False, "--no-compress", help="Send the stream as it is (compressed with zstd by "
                                     "default, when both hosts can: it is faster unless the link is faster than the CPUs)."),
    timings: bool = typer.Option(False, "--timings", help="Say on stderr how long each phase here and each step on the "
                                 "target took (the target's restore overlaps the copy)."),
    as_json: bool = json_option(),
) -> None:
    """Move a running guest to another host, live: it keeps its name, uuid, config and devices."""
    from xentool.cli.progress import copy_progress

    with _toolstack() as xt, copy_progress(_stderr_console(), f"migrating {domain}", quiet=as_json) as progress:
        result = xt.migrate(domain, host, live=not non_live, keep_source_definition=keep_source_definition,
                            ssh_command=ssh_command, remote_xentool=remote_xentool, compress=not no_compress,
                            progress=progress)
    if timings:
        _print_timings(list(result.timings), None, result.seconds)
    if as_json:
        _print_json({key: value for key, value in asdict(result).items() if key != "timings"})
        return
    how = "live" if result.live else "non-live"
    _say(f"migrated {result.name} to {result.target_hostname} ({how}): id {result.target_domid} there, "
         f"{result.seconds:g} s in all, {result.downtime_seconds * 1000:.0f} ms suspended"
         + (f", the stream compressed with {result.compression}" if result.compression else ""))
    if result.note:
        _say(f"note: not live: {result.note}", stderr=True)


@app.command()
def resume(domain: str = typer.Argument(..., help="Domain name, id or uuid.")) -> None:
    """Let a guest left suspended go on (after a migration that could not tell whether the target runs it)."""
    with _toolstack() as xt:
        xt.resume(domain)


@app.command("migrate-receive", hidden=True)
def migrate_receive() -> None:
    """The target's end of `xentool migrate` (run by it over ssh: its stdin and stdout are the connection)."""
    with _toolstack() as xt:
        domain = xt.migrate_receive(sys.stdin.fileno(), sys.stdout.fileno())
    _say(f"received {domain.name} (id {domain.domid}), running", stderr=True)


@app.command()
def console(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    log: bool = typer.Option(False, "--log", help="Print what the guest printed so far, and return."),
) -> None:
    """Attach to a domain's console (Ctrl-] detaches); --log prints its log."""
    with _toolstack() as xt:
        if log:
            sys.stdout.write(xt.console_log(domain))
            sys.stdout.flush()
            return
        _attach_console(xt, domain, replay_bytes=2048)


def _attach_console(xt: Toolstack, ref: str, replay_bytes: int | None) -> None:
    stdin = sys.stdin.fileno() if sys.stdin is not None and not sys.stdin.closed else None
    if xt.attach_console(ref, sys.stdout.buffer, stdin, replay_bytes) == "detached":
        _say(f"detached from the console of {ref}", stderr=True)


@app.command()
def dmesg(clear: bool = typer.Option(False, "-c", "--clear", help="Clear the ring after reading."),
          as_json: bool = json_option()) -> None:
    """Print the hypervisor's console ring."""
    with _toolstack() as xt:
        text = xt.dmesg(clear)
    if as_json:
        _print_json({"lines": text.splitlines(), "cleared": clear})
        return
    sys.stdout.write(text)


@app.command("wait")
def wait_cmd(
    domain: str = typer.Argument(..., help="Domain name, id or uuid."),
    states: list[str] = typer.Argument(..., help="States to wait for: running, paused, shutdown, crashed, gone ..."),
    timeout: float = typer.Option(60.0, "--timeout"),
    as_json: bool = json_option(),
) -> None:
    """Wait until a domain reaches one of the given states."""
    with _toolstack() as xt:
        state = xt.wait_for_state(domain, states, timeout)
    if as_json:
        _print_json({"domain": domain, "state": state})
        return
    out().print(state)


@app.command()
def events(
    domains: Optional[list[str]] = typer.Argument(None, help="Only these guests (names or uuids); all if none."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Print what happens to guests as it happens (xl's guests too), until interrupted; goes on
    across a restart of the daemon, telling what changed meanwhile."""
    with _toolstack() as xt:
        stream = xt.events(domains or (), subscribed=lambda: _say("xentool: following events; Ctrl-C ends", stderr=True))
        for event in stream:
            _say(json.dumps(event.to_json()) if as_json else event.line())


@host_app.command("info")
def host_info(as_json: bool = typer.Option(False, "--json", help="Machine-readable output.")) -> None:
    """The hypervisor and host: Xen version, cpus, memory, virtualization caps."""
    with _toolstack() as xt:
        data = xt.host_info().to_json()
    if as_json:
        _print_json(data)
        return
    for key, value in data.items():
        out().print(f"{key:18}: {' '.join(value) if isinstance(value, list) else value}")


# -- configs ----------------------------------------------------------------------------------------


@config_app.command("check")
def config_check(files: list[Path] = typer.Argument(..., help="Config files to validate."), as_json: bool = json_option()) -> None:
    """Validate config files without touching any hypervisor."""
    from xentool.config import load_config

    failed: list[ConfigError] = []
    results: list[dict[str, Any]] = []
    for path in files:
        try:
            config = load_config(path)
            results.append({"file": str(path), "ok": True, "type": config.type.value, "name": config.name, "issues": []})
            if not as_json:
                out().print(f"{path}: ok ({config.type.value} guest {config.name!r})")
        except ConfigError as e:
            failed.append(e)
            results.append({"file": str(path), "ok": False, "type": None, "name": None,
                            "issues": [{"where": i.location, "key": i.key_path, "message": i.message} for i in e.issues]})
            if not as_json:
                _say(str(e), stderr=True)
    if as_json:
        _print_json(results)
    if failed:
        raise typer.Exit(ConfigError.exit_code)


@config_app.command("show")
def config_show(
    name: str = typer.Argument(..., help="A defined guest's name."),
    resolved: bool = typer.Option(False, "--resolved", help="What it resolved to (uuid and defaults), not the YAML as written."),
    as_json: bool = json_option(),
) -> None:
    """Print a defined guest's config: the YAML as it was defined, or what it resolved to."""
    with _toolstack() as xt:
        definition = xt.defined_guest(name)
    if as_json:
        _print_json(definition.to_json())
        return
    if resolved or not definition.text:
        import yaml

        sys.stdout.write(yaml.safe_dump(definition.resolved, sort_keys=False))
    else:
        sys.stdout.write(definition.text)


@config_app.command("import")
def config_import(
    xl_cfg: Path = typer.Argument(..., help="An xl.cfg file."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Write the YAML here instead of stdout."),
    as_json: bool = json_option(),
) -> None:
    """Convert an xl.cfg file to a xentool YAML config."""
    from xentool.config import xl_cfg_to_yaml

    result = xl_cfg_to_yaml(xl_cfg)
    text, warnings = result if isinstance(result, tuple) else (result, [])
    if as_json:
        import yaml

        if output:
            output.write_text(text)
        _print_json({"config": yaml.safe_load(text), "warnings": list(warnings), "written_to": str(output) if output else None})
        return
    for warning in warnings:
        _say(f"{xl_cfg}: warning: {warning}", stderr=True)
    if output:
        output.write_text(text)
    else:
        sys.stdout.write(text)


# Typer needs the `lab` commands to parse any command line; xentool.cli.lab defines them without
# importing xentool.lab, which only a `lab` command (or --lab) loads.
from xentool.cli.lab import lab_app  # noqa: E402
from xentool.cli.protocol import first_command_index  # noqa: E402

app.add_typer(lab_app, name="lab")

from xentool.cli.command_server import Entry  # noqa: E402
from xentool.cli.daemon import daemon_app  # noqa: E402

app.add_typer(daemon_app, name="daemon")


# -- entry point ------------------------------------------------------------------------------------


def _fail(message: str, code: int, as_json: bool = False, where: str | None = None) -> NoReturn:
    """The one line a failed command ends with; with --json, that line is a JSON object
    (docs/json.md: error, code, where)."""
    if as_json:
        sys.stderr.write(json.dumps({"error": message, "code": code, "where": where}) + "\n")
        sys.stderr.flush()
    else:
        _say(f"xentool: error: {message}", stderr=True)
    raise SystemExit(code)


def _lab_argv(argv: list[str]) -> tuple[list[str], int] | None:
    """The command to run in the lab's dom0 when --lab, --connect lab or XENTOOL_CONNECT=lab says so,
    and which of the lab's hosts runs it (--host); None when the command runs here (including
    `xentool lab ...` itself)."""
    split = first_command_index(argv)
    head, tail = argv[:split], argv[split:]
    via_lab = "--lab" in head or os.environ.get("XENTOOL_CONNECT") == "lab"
    host = os.environ.get("XENTOOL_LAB_HOST", "1")
    kept: list[str] = []
    skip = False
    for i, arg in enumerate(head):
        if skip:
            skip = False
            continue
        if arg == "--lab":
            continue
        if arg == "--connect" and head[i + 1 : i + 2] == ["lab"]:
            via_lab, skip = True, True
            continue
        if arg == "--connect=lab":
            via_lab = True
            continue
        if arg == "--host" or arg.startswith("--host="):
            host, skip = (arg.partition("=")[2], False) if "=" in arg else (" ".join(head[i + 1 : i + 2]), True)
            continue
        kept.append(arg)
    if not via_lab or tail[:1] == ["lab"]:
        return None
    if not host.isdigit():
        _fail(f"--host {host!r}: give the number of one of the lab's hosts (1 or 2)", 2)
    return kept + tail, int(host)


@cache
def click_command() -> Any:
    """The click group typer makes of ``app``, made once: making it inspects every command's
    signature (a second in the lab's dom0), so the command server makes it before it forks."""
    return typer.main.get_command(app)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv[: first_command_index(argv)]
    as_json = "--json" in argv[first_command_index(argv):]
    try:
        in_lab = _lab_argv(argv)
        if in_lab is not None:
            from xentool.cli.lab import run_in_lab

            raise SystemExit(run_in_lab(*in_lab))
        # Without standalone mode, click returns (not raises) the code of a typer.Exit.
        # `daemon run` serves this very main(): handed to it here, since the CLI sits above it.
        code = click_command()(args=argv, prog_name="xentool", standalone_mode=False, obj=Entry(main, click_command))
        if isinstance(code, int) and code:
            raise SystemExit(code)
    except typer.Exit as e:
        raise SystemExit(e.exit_code) from None
    except typer.Abort:
        _fail("aborted", 1, as_json)
    except typer.TyperException as e:  # bad usage: typer prints it with the usage line
        if as_json:
            _fail(e.format_message(), e.exit_code, as_json)
        show = getattr(e, "show", None)
        if show is not None:
            show()
        else:
            _fail(e.format_message(), 2)
        raise SystemExit(e.exit_code) from None
    except XentoolError as e:
        if debug:
            raise
        _fail(str(e), e.exit_code, as_json, e.where)
    except HypervisorError as e:
        if debug:
            raise
        _fail(str(e), 5 if isinstance(e, XenError) else 7, as_json)
    except KeyboardInterrupt:
        _fail("interrupted", 130, as_json)
    except Exception as e:  # a bug: still one line, the traceback on request
        if debug:
            raise
        _fail(f"unexpected {type(e).__name__}: {e} (run with --debug for the traceback)", 1, as_json)


def xentoold() -> None:
    """The `xentoold` program: `xentool daemon run` (what contrib/systemd's unit runs)."""
    main(["daemon", "run", *sys.argv[1:]])


if __name__ == "__main__":
    main()
