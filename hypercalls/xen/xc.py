"""The libxenctrl handle and the one way every call into it is checked.

:class:`XcHandle` owns ``xc_interface_open``'s handle and a logger (written in C in
``_ffi_build.SOURCE``) that keeps the library's last error message instead of printing it.
:meth:`XcHandle.call` runs a function, decides from its return value whether it failed, and raises
a :class:`XenError` carrying the operation, the errno cffi saved right after the call, the domain,
and the library's own message.  No return code goes unchecked.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from types import ModuleType
from typing import Any

from hypercalls.errors import BackendUnavailable, XenError
from hypercalls.xen.errors import xen_error

PRIVCMD = "/dev/xen/privcmd"


def failed_negative(rc: Any) -> bool:
    return rc < 0


def failed_nonzero(rc: Any) -> bool:
    return rc != 0


class XcHandle:
    def __init__(self, module: ModuleType) -> None:
        self.module = module
        self.ffi = module.ffi
        self.lib = module.lib
        self._lock = threading.RLock()
        self.logger = self.lib.xentool_logger_new()
        if self.logger == self.ffi.NULL:
            raise XenError("xentool_logger_new", errno.ENOMEM)
        xch = self.lib.xc_interface_open(self.logger, self.logger, 0)
        if xch == self.ffi.NULL:
            saved = self.ffi.errno
            message = self.last_message()
            self.lib.xtl_logger_destroy(self.logger)
            self.logger = None
            raise _open_failure(saved, message)
        self.xch = xch

    def last_message(self) -> str:
        if self.logger is None:
            return ""
        return self.ffi.string(self.lib.xentool_logger_last(self.logger)).decode(errors="replace")

    def call(
        self,
        op: str,
        fn: Callable[..., Any],
        *args: Any,
        domid: int | None = None,
        failed: Callable[[Any], bool] = failed_negative,
        detail: str = "",
    ) -> Any:
        """``fn(*args)``; raise XenError(op, errno, domid) if ``failed(result)``."""
        with self._lock:
            self.lib.xentool_logger_clear(self.logger)
            self.ffi.errno = 0
            rc = fn(*args)
            if failed(rc):
                saved = self.ffi.errno
                message = self.last_message()
                text = "; ".join(t for t in (detail, message) if t)
                raise xen_error(op, saved, domid, text)
            return rc

    def close(self) -> None:
        with self._lock:
            if getattr(self, "xch", None) is not None:
                self.lib.xc_interface_close(self.xch)
                self.xch = None
            if self.logger is not None:
                self.lib.xtl_logger_destroy(self.logger)
                self.logger = None


def _open_failure(saved_errno: int, message: str) -> Exception:
    """Why ``xc_interface_open`` failed, as something a user can act on."""
    if not os.path.exists(PRIVCMD):
        return BackendUnavailable(
            f"cannot open the Xen control interface: {PRIVCMD} does not exist (this is not a Xen dom0, "
            "or the xen-privcmd module is not loaded)",
            "run it in dom0 (e.g. `xentool lab exec -- ...`), or use the simulator with `--connect sim:///PATH`",
        )
    if saved_errno in (errno.EACCES, errno.EPERM):
        return BackendUnavailable(
            f"cannot open the Xen control interface {PRIVCMD}: permission denied",
            "run as root in dom0",
        )
    return xen_error("xc_interface_open", saved_errno, None, message)
