"""The xenbus protocol: device states and where a split device's two halves live in xenstore.

A split device has a frontend directory in the guest's part of xenstore and a backend directory in
the backend domain's part; each side moves its ``state`` node through :class:`XenbusState`
(xen/include/public/io/xenbus.h) and watches the other's.
"""

from __future__ import annotations

import enum


class XenbusState(enum.IntEnum):
    UNKNOWN = 0
    INITIALISING = 1
    INIT_WAIT = 2
    INITIALISED = 3
    CONNECTED = 4
    CLOSING = 5
    CLOSED = 6
    RECONFIGURING = 7
    RECONFIGURED = 8


def dom_path(domid: int | str) -> str:
    return f"/local/domain/{domid}"


def frontend_path(domid: int | str, kind: str, devid: int | str) -> str:
    return f"{dom_path(domid)}/device/{kind}/{devid}"


def backend_path(backend_domid: int | str, kind: str, domid: int | str, devid: int | str) -> str:
    return f"{dom_path(backend_domid)}/backend/{kind}/{domid}/{devid}"
