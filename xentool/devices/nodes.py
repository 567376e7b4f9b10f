"""Xenstore nodes as data, and the layout of a split device (libxl__device_generic_add).

Paths and values may hold placeholders (``{domid}``, ``{console_port}``, ...) for what exists only
once creation is under way; :class:`xentool.create.plan.Bindings` fills them.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypercalls.interface import XsPerm, XsPermission, perms
from pvdrivers.xenbus import backend_path, frontend_path

#: Stands for the new domain's id in permission lists, which are built before the domid exists.
GUEST = -1


def perm_text(p: XsPermission) -> str:
    return f"{p.perm.value}{{domid}}" if p.domid == GUEST else f"{p.perm.value}{p.domid}"


def _format_perms(permissions: tuple[XsPermission, ...] | None) -> str:
    if permissions is None:
        return ""
    return " [" + ",".join(perm_text(p) for p in permissions) + "]"


@dataclass(frozen=True)
class XsNode:
    path: str
    value: str | None = None  # None: a directory node (mkdir), "" is an empty value
    permissions: tuple[XsPermission, ...] | None = None

    def describe(self) -> str:
        value = "(dir)" if self.value is None else repr(self.value)
        return f"{self.path} = {value}{_format_perms(self.permissions)}"


def frontend_perms(backend_domid: int) -> tuple[XsPermission, ...]:
    """The guest owns its frontend nodes; the backend may read them."""
    return perms(GUEST, (backend_domid, XsPerm.READ))


def backend_perms(backend_domid: int) -> tuple[XsPermission, ...]:
    """The backend domain owns its nodes; the guest may read them.  Also used for frontend nodes
    the guest must not change (console 0's port and ring-ref, which the backend trusts)."""
    return perms(backend_domid, (GUEST, XsPerm.READ))


def backend_domid(backend: str) -> int:
    # Driver domains by name come later; the config model accepts only ids we can use today.
    return int(backend)


def device_nodes(
    kind: str,
    devid: int,
    backend_domid: int,
    front: dict[str, str],
    back: dict[str, str],
    ro_front: dict[str, str] | None = None,
    frontend: str | None = None,
    backend_kind: str | None = None,
) -> tuple[XsNode, ...]:
    """A split device's xenstore nodes, as libxl__device_generic_add writes them.

    ``front`` entries are the guest's, ``ro_front`` ones it may only read, ``back`` the backend's;
    a copy of the backend entries goes under /libxl/N/device so the toolstack need not trust what a
    backend later writes in its own directory.  ``backend_kind`` names the backend's directory when
    it is not ``kind``'s: a disk is a vbd to the guest whichever backend serves it (qdisk: QEMU).
    """
    frontend = frontend or frontend_path("{domid}", kind, devid)
    backend = backend_path(backend_domid, backend_kind or kind, "{domid}", devid)
    libxl = f"/libxl/{{domid}}/device/{kind}/{devid}"
    # Console 0 keeps other information in its frontend directory that the guest must not fiddle
    # with, so libxl gives the directory itself the read-only permissions.
    is_console0 = kind == "console" and devid == 0
    front_dir_perms = backend_perms(backend_domid) if is_console0 else frontend_perms(backend_domid)
    nodes = [
        XsNode(f"{libxl}/frontend", frontend),
        XsNode(f"{libxl}/backend", backend),
        XsNode(frontend, None, front_dir_perms),
        XsNode(f"{frontend}/backend", backend),
    ]
    nodes += [XsNode(f"{frontend}/{k}", v, frontend_perms(backend_domid)) for k, v in front.items()]
    nodes += [XsNode(f"{frontend}/{k}", v, backend_perms(backend_domid)) for k, v in (ro_front or {}).items()]
    nodes += [XsNode(backend, None, backend_perms(backend_domid)), XsNode(f"{backend}/frontend", frontend)]
    nodes += [XsNode(f"{backend}/{k}", v) for k, v in back.items()]
    nodes += [XsNode(f"{libxl}/{k}", v) for k, v in back.items()]
    return tuple(nodes)
