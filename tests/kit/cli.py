"""Running the command line in the test's process, as a user runs it: arguments in; exit status,
output and errors out."""

from __future__ import annotations

from typing import Any

from xentool.cli.main import main


def run(capsys: Any, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err
