"""Loading the compiled bindings, compiling them first where that is possible.

Order of attempts: the module next to this file (compiled on the host by ``make venv`` or
``python -m hypercalls.xen.build``); then, if the compiler and headers are here, compile it (into
the package if that is writable, otherwise into a per-user cache).  When none of that works the
answer is a :class:`BackendUnavailable` naming what is missing and the Debian package that brings
it: nothing here is needed to install xentool or to use the simulator.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import re
import threading
from pathlib import Path
from types import ModuleType

from hypercalls.errors import BackendUnavailable

# The same as _ffi_build.MODULE and .PACKAGE_DIR (a test checks): loading the compiled module must
# not import the build script (cffi's cdef text and the build's imports), only a compile does.
MODULE = "hypercalls.xen._xenlibs"
PACKAGE_DIR = Path(__file__).resolve().parent

_lock = threading.Lock()
_module: ModuleType | None = None


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xentool" / "cffi"


def _find_compiled(directory: Path) -> Path | None:
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        candidate = directory / f"_xenlibs{suffix}"
        if candidate.exists():
            return candidate
    return None


def _load_from(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(MODULE, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _runtime_library_error(error: ImportError, path: Path) -> BackendUnavailable:
    """An import that fails on a shared library: name the library and the package that has it."""
    from hypercalls.xen import _ffi_build

    text = str(error)
    match = re.search(r"lib(xen[a-z]+)\.so[.0-9]*", text)
    if match:
        library = match.group(1)
        package = _ffi_build.DEBIAN_PACKAGE_OF_LIBRARY.get(library, "libxen-dev's runtime libraries")
        return BackendUnavailable(
            f"the Xen bindings ({path.name}) need {match.group(0)}, which is not installed",
            f"install the Debian package {package} (apt-get install {package})",
        )
    return BackendUnavailable(
        f"the Xen bindings ({path}) could not be loaded: {text}",
        "rebuild them with `python -m hypercalls.xen.build` (needs gcc and libxen-dev)",
    )


def _compile_somewhere() -> Path:
    from hypercalls.xen import _ffi_build

    missing = _ffi_build.missing_build_prerequisites()
    if missing:
        packages = sorted({m.package for m in missing})
        raise BackendUnavailable(
            "the Xen bindings are not compiled and cannot be compiled here: missing "
            + ", ".join(str(m) for m in missing),
            f"install {' '.join(packages)} and run `python -m hypercalls.xen.build`, "
            "or compile them on a machine that shares this checkout",
        )
    errors: list[str] = []
    for target in (PACKAGE_DIR, cache_dir()):
        try:
            return _ffi_build.compile_bindings(target)
        except Exception as e:  # noqa: BLE001 - an unwritable package dir, a compiler failure: try the next place
            errors.append(f"{target}: {e}")
    raise BackendUnavailable(
        "compiling the Xen bindings failed: " + "; ".join(errors),
        "run `python -m hypercalls.xen.build -v` to see the compiler's output",
    )


def load() -> ModuleType:
    """The compiled module (with ``ffi`` and ``lib``); raises BackendUnavailable."""
    global _module
    with _lock:
        if _module is not None:
            return _module
        path = _find_compiled(PACKAGE_DIR) or _find_compiled(cache_dir())
        if path is None:
            path = _compile_somewhere()
        try:
            _module = _load_from(path)
        except ImportError as e:
            raise _runtime_library_error(e, path) from e
        return _module
