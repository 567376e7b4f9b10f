"""Devices of a running domain: attach, detach and list its disks and vifs (xl's block-attach,
block-detach, block-list and their network- twins).

Attach checks the device and writes its nodes as create does (xentool.devices), does the same
hotplug work (xentool.hotplug), then waits for both halves to reach Connected: a guest without the
front end driver fails the attach, and the device is taken away again.  Detach is libxl__initiate_device_generic_remove: the backend is
told to close (online 0, state Closing), the guest lets go (Closed), then the nodes go and the
kernel backend releases the device (and with it the loop device or the vif interface).

The toolstack's own copy of each device (/libxl/DOMID/device/KIND/DEVID, which xl keeps too) says
where the backend is: the guest can write its frontend directory, so that is not trusted for it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypercalls.interface import GuestType, Hypervisor, XenStore, retry_transaction
from pvdrivers.blkif import vdev_to_devid
from pvdrivers.xenbus import XenbusState, frontend_path
from xentool.config.model import Access, Disk, Vif
from xentool.create.plan import Bindings, XenstoreTransaction
from xentool.devicemodel.paths import device_model_log_path
from xentool.devicemodel.qdisk import wait_until_taken_up
from xentool.devices.disk import check_disk, disk_backend_path, disk_kind, disk_nodes
from xentool.devices.nodes import XsNode, backend_domid
from xentool.devices.vif import check_vif_on_host, stable_mac, vif_backend_path, vif_nodes
from xentool.errors import DeviceError
from xentool.hotplug import network
from xentool.hotplug.backend import backend_state, sysfs_device, wait_for
from xentool.hotplug.block import VbdTarget, attach_vbd
from xentool.lifecycle import has_device_model

CONNECT_TIMEOUT = 30.0  # seconds for a running guest's front end to connect a new device
CLOSE_TIMEOUT = 10.0  # libxl's LIBXL_DESTROY_TIMEOUT: for the guest to let go of a device
RELEASE_TIMEOUT = 10.0  # for the kernel backend to let go once the nodes are gone


@dataclass(frozen=True)
class DeviceStatus:
    """One device of a domain as xenstore shows it."""

    kind: str  # "vbd" or "vif"
    devid: int
    name: str  # the vdev of a disk ("xvdb"), "vif N" of a vif
    backend: str
    backend_state: str  # XenbusState names, lower case; "missing" when the node is gone
    frontend_state: str
    details: dict[str, str]  # disk: target, mode, served_by, device; vif: mac, mode, bridge, ip, interface

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "devid": self.devid, "name": self.name, "backend": self.backend,
                "backend_state": self.backend_state, "frontend_state": self.frontend_state, **self.details}


def _state_name(xs: XenStore, path: str) -> str:
    state = backend_state(xs, path)  # the same "state" node on either side
    return state.name.lower() if state is not None else "missing"


def _libxl_dir(domid: int, kind: str, devid: int) -> str:
    return f"/libxl/{domid}/device/{kind}/{devid}"


def list_devices(xs: XenStore, domid: int, kind: str) -> list[DeviceStatus]:
    """The domain's devices of ``kind`` ("vbd" or "vif"), by devid."""
    devices = []
    for devid in sorted(int(d) for d in xs.list_or_empty(f"/libxl/{domid}/device/{kind}") if d.isdigit()):
        backend = xs.read_or(f"{_libxl_dir(domid, kind, devid)}/backend")
        if backend is None:
            continue
        read = lambda key, backend=backend: xs.read_or(f"{backend}/{key}") or ""  # noqa: E731
        if kind == "vbd":
            name = read("dev") or str(devid)
            served_by = "qdisk" if "/backend/qdisk/" in backend else "blkback"
            # A qdisk's params is FORMAT:PATH.
            target = read("params").partition(":")[2] if served_by == "qdisk" else read("params")
            details = {"target": target, "mode": read("mode"), "served_by": served_by, "device": read("node")}
        else:
            name = f"vif {devid}"
            details = {"mac": read("mac"), "mode": "bridge" if read("bridge") else "route", "bridge": read("bridge"),
                       "ip": read("ip"), "interface": read("vifname") or f"vif{domid}.{devid}"}
        devices.append(DeviceStatus(kind, devid, name, backend, _state_name(xs, backend),
                                    _state_name(xs, frontend_path(domid, kind, devid)), details))
    return devices


def attach_disk(hv: Hypervisor, domid: int, domain: str, uuid: str, disk: Disk,
                timeout: float = CONNECT_TIMEOUT) -> DeviceStatus:
    xs = hv.xenstore()
    label = f"disk {disk.vdev}"
    devid = vdev_to_devid(disk.vdev)
    if not disk.target:
        raise DeviceError(domain, label, "an empty drive cannot be attached; give the disk a target")
    guest_type = hv.domain_getinfo(domid).guest_type
    check_disk(domain, guest_type, disk)
    qdisk = disk_kind(disk) == "qdisk"
    if qdisk and not _serves_qdisk(hv, domid, guest_type):
        raise DeviceError(domain, label, f"a {disk.format.value} disk needs QEMU's qdisk backend, and xentool starts that only "
                          "with a PV guest that has a qdisk disk when it is created; convert the image to raw "
                          "(qemu-img convert -O raw IN OUT), or give the guest its disk in its config")
    if xs.read_or(f"{_libxl_dir(domid, 'vbd', devid)}/backend") is not None:
        raise DeviceError(domain, label, f"the domain already has {disk.vdev}; detach it first or pick another vdev")
    backend = Bindings(domid=domid).fill(disk_backend_path(disk))
    target = VbdTarget(domain, domid, devid, disk.vdev, backend, backend_domid(disk.backend), disk.target,
                       disk.access == Access.RO)
    hotplug: Callable[[], object]
    if qdisk:
        # QEMU watches its backend directory and takes the new disk up by itself.
        hotplug = lambda: wait_until_taken_up(xs, domain, disk, backend, device_model_log_path(uuid))  # noqa: E731
    else:
        hotplug = lambda: attach_vbd(xs, target)  # noqa: E731
    return _plug(hv, domid, domain, label, "vbd", devid, disk_nodes(disk), backend, hotplug, "blkfront", timeout)


def _serves_qdisk(hv: Hypervisor, domid: int, guest_type: GuestType) -> bool:
    """Whether the domain has a QEMU serving qdisk: a PV or PVH guest's (an HVM guest's runs
    restricted, where Xen's QEMU cannot)."""
    return hv.runs_device_models and guest_type != GuestType.HVM and has_device_model(hv, domid)


def attach_vif(hv: Hypervisor, domid: int, domain: str, uuid: str, vif: Vif,
               timeout: float = CONNECT_TIMEOUT) -> DeviceStatus:
    xs = hv.xenstore()
    # libxl__device_nextid: one past the highest, so a devid the guest may still remember is not reused
    devid = max((int(d) for d in xs.list_or_empty(f"/libxl/{domid}/device/vif") if d.isdigit()), default=-1) + 1
    label = f"vif {devid}"
    check_vif_on_host(domain, devid, vif)
    backend = Bindings(domid=domid).fill(vif_backend_path(vif, devid))
    target = network.VifTarget.of(domain, domid, devid, backend, vif)
    nodes = vif_nodes(vif, devid, vif.mac or stable_mac(uuid, devid))
    return _plug(hv, domid, domain, label, "vif", devid, nodes, backend,
                 lambda: network.attach_vif(xs, target), "netfront", timeout)


def _plug(hv: Hypervisor, domid: int, domain: str, label: str, kind: str, devid: int, nodes: tuple[XsNode, ...],
          backend: str, hotplug: Callable[[], object], driver: str, timeout: float) -> DeviceStatus:
    """The device's nodes, the hotplug work, the wait for both halves; any failure takes it all away."""
    xs = hv.xenstore()
    XenstoreTransaction(f"attach {label}", nodes).apply(hv, xs, Bindings(domid=domid))
    try:
        hotplug()
        _wait_connected(xs, domid, domain, label, kind, devid, backend, driver, timeout)
    except BaseException:
        _remove_nodes(xs, domid, kind, devid, backend)
        _wait_released(domain, label, kind, domid, devid)
        raise
    return _status(xs, domid, kind, devid)


def detach(hv: Hypervisor, domid: int, domain: str, kind: str, devid: int, label: str, force: bool = False,
           timeout: float = CLOSE_TIMEOUT) -> None:
    """Take a device away from a running guest; with ``force``, even if the guest holds on to it."""
    xs = hv.xenstore()
    backend = xs.read_or(f"{_libxl_dir(domid, kind, devid)}/backend")
    if backend is None:
        raise DeviceError(domain, label, f"the domain has no such device; `xentool {_command(kind)}-list {domain}` shows its devices")

    def ask_to_close(txn: object) -> None:
        if xs.read_or(f"{backend}/state", txn=txn) is None:
            return
        xs.write(f"{backend}/online", "0", txn)
        if (backend_state(xs, backend) or 0) < XenbusState.CLOSING:
            xs.write(f"{backend}/state", str(int(XenbusState.CLOSING)), txn)

    retry_transaction(xs, ask_to_close)
    closed = wait_for(lambda: (backend_state(xs, backend) or XenbusState.CLOSED) == XenbusState.CLOSED, timeout)
    if not closed and not force:
        raise DeviceError(domain, label, f"the guest did not let go of it within {timeout:g} s (is it mounted or up?); "
                          "release it in the guest and try again, or detach with --force")
    _remove_nodes(xs, domid, kind, devid, backend)
    _wait_released(domain, label, kind, domid, devid)


def _command(kind: str) -> str:
    return "block" if kind == "vbd" else "network"


def _remove_nodes(xs: XenStore, domid: int, kind: str, devid: int, backend: str) -> None:
    """Frontend, backend and the toolstack's copy, as libxl__device_destroy removes them."""
    def body(txn: object) -> None:
        xs.rm(frontend_path(domid, kind, devid), txn)
        xs.rm(backend, txn)
        xs.rm(_libxl_dir(domid, kind, devid), txn)

    retry_transaction(xs, body)
    for parent in (backend.rsplit("/", 1)[0], frontend_path(domid, kind, devid).rsplit("/", 1)[0]):
        if not xs.list_or_empty(parent):
            xs.rm(parent)


def _wait_connected(xs: XenStore, domid: int, domain: str, label: str, kind: str, devid: int, backend: str,
                    driver: str, timeout: float) -> None:
    frontend = frontend_path(domid, kind, devid)

    def connected() -> bool:
        return backend_state(xs, backend) == XenbusState.CONNECTED and backend_state(xs, frontend) == XenbusState.CONNECTED

    if not wait_for(connected, timeout):
        raise DeviceError(domain, label, f"not connected after {timeout:g} s (backend {_state_name(xs, backend)}, "
                          f"guest {_state_name(xs, frontend)}); does the guest have {driver} loaded?")


def _wait_released(domain: str, label: str, kind: str, domid: int, devid: int) -> None:
    path = sysfs_device(kind, domid, devid)
    if not wait_for(lambda: not os.path.exists(path), RELEASE_TIMEOUT):
        raise DeviceError(domain, label, f"the kernel backend still holds it {RELEASE_TIMEOUT:g} s after removal")


def _status(xs: XenStore, domid: int, kind: str, devid: int) -> DeviceStatus:
    return next(d for d in list_devices(xs, domid, kind) if d.devid == devid)
