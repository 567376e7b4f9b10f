"""The `xentool` program in Python: hands the command to a running command server, or runs it here.

Kept to what Python imports at start-up anyway (os, sys, the C socket module, struct), so that
while the host's daemon runs (xentoold, started by the first create) a command costs the interpreter's start-up and a
socket round trip rather than importing the toolstack.  The server says which commands it runs
(xentool.cli.protocol.forwardable); the launcher asks first only to spare itself a round trip for
the others.  The native launcher (launcher.c, built by xentool.cli.native_launcher) does the same
without the interpreter.
"""

from __future__ import annotations

import os
import sys

from xentool.cli.protocol import forwardable, run_on_server


def main() -> None:
    argv = sys.argv[1:]
    if forwardable(argv, dict(os.environ)):
        code = run_on_server(argv)
        if code is not None:
            sys.exit(code)
    from xentool.cli.main import main as run_here

    run_here(argv)
