"""Build the native `xentool` launcher (launcher.c) in place of pip's Python one.

    python -m xentool.cli.native_launcher [TARGET]

TARGET defaults to this environment's ``bin/xentool``, the console script pip wrote.  The native
launcher does what the Python one does (xentool.cli.launch): the commands the daemon runs cost no
interpreter start-up, everything else runs `python -m xentool.cli.main` with this interpreter
(baked in).  `make setup` runs this; without a C compiler the Python launcher stays, and works.
A later `pip install` writes the Python launcher back: run this again.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = Path(__file__).with_name("launcher.c")


class LauncherBuildFailed(Exception):
    pass


def default_target() -> Path:
    return Path(sys.prefix) / "bin" / "xentool"


def build(target: Path, python: str = sys.executable) -> Path:
    """Compile the launcher for ``python`` into ``target`` (replaced whole, never half-written)."""
    if not Path(python).is_absolute() or any(c in python for c in '"\\\n'):
        # It becomes a C string literal: an absolute path without quotes or backslashes.
        raise LauncherBuildFailed(f"cannot bake {python!r} into the launcher: not a plain absolute path")
    compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise LauncherBuildFailed("no C compiler (cc or gcc); install gcc, or keep the Python launcher")
    partial = target.with_name(f".{target.name}.building")
    command = [compiler, "-O2", "-Wall", "-Wextra", "-Werror", f'-DXENTOOL_PYTHON="{python}"',
               "-o", str(partial), str(SOURCE)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise LauncherBuildFailed(f"{compiler} failed: {result.stderr.strip() or result.returncode}")
    os.replace(partial, target)
    return target


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else default_target()
    try:
        built = build(target)
    except (LauncherBuildFailed, OSError) as e:
        raise SystemExit(f"xentool: native launcher not built: {e}") from None
    print(f"native launcher: {built} (runs {sys.executable} -m xentool.cli.main when no daemon runs)")


if __name__ == "__main__":
    main()
