"""``python -m hypercalls.xen.build [-v]``: compile the Xen bindings into the package.

Run it on the host (``make venv`` does): the lab's dom0 sees the host's filesystem read-only and
uses the module compiled here.
"""

from __future__ import annotations

import sys

from hypercalls.xen._ffi_build import compile_bindings, missing_build_prerequisites


def main(argv: list[str]) -> int:
    missing = missing_build_prerequisites()
    if missing:
        print("cannot compile the Xen bindings; missing:", file=sys.stderr)
        for m in missing:
            print(f"  {m}", file=sys.stderr)
        packages = " ".join(sorted({m.package for m in missing}))
        print(f"install them with: apt-get install {packages}", file=sys.stderr)
        return 1
    path = compile_bindings(verbose="-v" in argv)
    print(f"compiled {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
