"""Turning the C libraries' failures into :mod:`hypercalls.errors` exceptions.

libxenctrl and friends report failure as ``-1`` (or NULL, or ``false``) with ``errno`` set; the
domain builder (libxenguest's ``xc_dom_*``) sometimes returns -1 with errno left at whatever an
earlier call put there and says what went wrong only through its logger.  These helpers take the
errno cffi saved right after the call and the last message our logger kept, and make one
:class:`XenError` out of them.
"""

from __future__ import annotations

import errno as errno_module

from hypercalls.errors import XenError, XenstoreError

#: What a failure of these builder steps means when errno does not say (libxenguest reports the
#: cause only in its log): the image is not one the builder can load, or memory could not be had.
BUILDER_DEFAULT_ERRNO = {
    "xc_dom_parse_image": errno_module.EINVAL,
    "xc_dom_kernel_file": errno_module.EINVAL,
    "xc_dom_module_file": errno_module.EINVAL,
    "xc_dom_mem_init": errno_module.ENOMEM,
    "xc_dom_boot_mem_init": errno_module.ENOMEM,
    "xc_dom_allocate": errno_module.ENOMEM,
}


def errno_for(op: str, saved_errno: int) -> int:
    """The errno to report: the saved one, or what ``op`` failing means when there is none."""
    if saved_errno:
        return saved_errno
    return BUILDER_DEFAULT_ERRNO.get(op, errno_module.EIO)


def xen_error(op: str, saved_errno: int, domid: int | None = None, detail: str = "") -> XenError:
    return XenError(op, errno_for(op, saved_errno), domid, detail.strip())


def xenstore_error(op: str, saved_errno: int, path: str, domid: int | None = None, detail: str = "") -> XenstoreError:
    return XenstoreError(op, saved_errno or errno_module.EIO, path, domid, detail.strip())
