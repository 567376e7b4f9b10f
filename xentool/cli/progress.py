"""Progress of a long copy (save, migrate) as the user sees it: a rich bar on a terminal (what Xen
is doing, pages done of pages in all, time so far), a plain line per phase otherwise (each of
libxenguest's rounds: "Frames iteration 2 of 5"), nothing with --json."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console

Report = Callable[[str, int, int], None]  # (what is being done, pages done, pages in all)


@contextmanager
def copy_progress(console: Console, label: str, quiet: bool = False) -> Iterator[Report | None]:
    if quiet:
        yield None
        return
    if not console.is_terminal:
        said: list[str] = []

        def line(what: str, done: int, total: int) -> None:
            if what and (not said or said[-1] != what):
                said.append(what)
                console.print(f"{label}: {what}" + (f" ({total} pages)" if total else ""), highlight=False)

        yield line
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("pages"),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        task = bar.add_task(label, total=None)

        def update(what: str, done: int, total: int) -> None:
            bar.update(task, description=f"{label}: {what}" if what else label, completed=done, total=total or None)

        yield update
