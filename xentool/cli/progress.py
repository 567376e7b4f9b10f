"""Progress of a long copy (save, migrate, restore) as the user sees it: a rich bar on a terminal
(what is being done, pages or MiB done of all, time so far), a plain line per phase otherwise (each
of libxenguest's rounds: "Frames iteration 2 of 5"; a restore's "checking the file"), nothing with
--json."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

Report = Callable[[str, int, int], None]  # (what is being done, units done, units in all)


@contextmanager
def copy_progress(console: Console, label: str, quiet: bool = False, unit: str = "pages") -> Iterator[Report | None]:
    if quiet:
        yield None
        return
    if not console.is_terminal:
        said: list[str] = []

        def line(what: str, done: int, total: int) -> None:
            if what and (not said or said[-1] != what):
                said.append(what)
                console.print(f"{label}: {what}" + (f" ({total} {unit})" if total else ""), highlight=False)

        yield line
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(what: str, done: int, total: int) -> None:
            bar.update(task, description=f"{label}: {what}" if what else label, completed=done, total=total or None)

        yield update
