"""The guest's devices in xenstore: the primary console, disks (vbd) and network (vif), then the
hotplug work that hands each to its kernel backend (what Xen's block and vif scripts do).

Each device is a frontend directory (the guest's, readable by the backend domain) and a backend
directory (the backend domain's, readable by the guest), both in state Initialising, as
libxl__device_generic_add writes them (xentool.devices); a backend driver then takes the device
from there.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypercalls.interface import Hypervisor, XenStore
from pvdrivers.blkif import vdev_to_devid
from xentool.config import GuestConfig
from xentool.config.model import Access, Disk, Vif, VifMode
from xentool.create.plan import REAL_XEN, Bindings, HostFeatures, Op, Step, XenstoreTransaction
from xentool.devices.console import CONSOLE_RING_NODES, console_nodes
from xentool.devices.disk import check_disk_target, disk_backend_path, disk_kind, disk_nodes, pv_disks, served_by_blkback
from xentool.devices.nodes import XsNode, backend_domid
from xentool.devices.vif import stable_mac, vif_backend_path, vif_nodes
from xentool.errors import DeviceError
from xentool.hotplug.backend import RELEASE_TIMEOUT, wait_until_released
from xentool.hotplug.block import VbdTarget, attach_vbd
from xentool.hotplug.network import VifTarget, attach_vif


@dataclass(frozen=True)
class CheckDiskTarget(Op):
    """The disk's image or block device must exist and be readable before the guest is given it."""

    name: str
    vdev: str
    target: str
    writable: bool

    def describe(self) -> str:
        return f"check {self.vdev} target {self.target} ({'rw' if self.writable else 'ro'})"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        check_disk_target(self.name, self.vdev, self.target, self.writable)


@dataclass(frozen=True)
class AwaitBackendRelease(Op):
    """Nothing on the way in; on undo (after the backend directories are gone) the wait until
    blkback and netback have let go of the devices, so a failed create returns with no loop
    device or vif interface left."""

    name: str

    def describe(self) -> str:
        return "(on undo: wait until blkback and netback have released the domain's devices)"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        pass

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        held = wait_until_released(bound.domid, RELEASE_TIMEOUT)
        if held:
            raise DeviceError(self.name, ", ".join(held), f"the kernel backends still hold them {RELEASE_TIMEOUT:g} s after removal")


@dataclass(frozen=True)
class AttachDiskBackend(Op):
    """The block hotplug work: the disk's device (a loop device for a file) handed to blkback.
    Removing the backend directory (the devices transaction's undo) makes blkback let go, and the
    loop device, made to detach itself on its last close, goes with it."""

    name: str
    disk: Disk

    def describe(self) -> str:
        d = self.disk
        return (f"hotplug vbd {d.vdev}: {d.target} (a loop device if a file, {d.access.value}) -> "
                f"{disk_backend_path(d)}/physical-device; wait for blkback to open it")

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        d = self.disk
        attach_vbd(xs, VbdTarget(self.name, bound.domid, vdev_to_devid(d.vdev), d.vdev, bound.fill(disk_backend_path(d)),
                                 backend_domid(d.backend), d.target, d.access == Access.RO))


@dataclass(frozen=True)
class AttachVifBackend(Op):
    """The vif hotplug work: netback's interface renamed, on its bridge, up; then hotplug-status.
    Netback removes the interface (and with it its bridge port and routes) once the backend
    directory goes."""

    name: str
    devid: int
    vif: Vif

    def describe(self) -> str:
        v = self.vif
        wiring = (f"up with dom0's address on {v.gatewaydev or 'the default route interface'}, proxy ARP, routes to {v.ip}"
                  if v.mode == VifMode.ROUTE else f"joins bridge {v.bridge}, up")
        return (f"hotplug vif {self.devid}: vif{{domid}}.{self.devid}{f' as {v.vifname}' if v.vifname else ''} "
                f"{wiring}; {vif_backend_path(v, self.devid)}/hotplug-status = 'connected'")

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        backend = bound.fill(vif_backend_path(self.vif, self.devid))
        attach_vif(xs, VifTarget.of(self.name, bound.domid, self.devid, backend, self.vif))


def plan_devices(config: GuestConfig, uuid: str, host: HostFeatures = REAL_XEN) -> Step:
    ops: list[Op] = []
    disks = pv_disks(config)
    for disk in disks:
        if disk.target:
            ops.append(CheckDiskTarget(config.name, disk.vdev, disk.target, disk.access == Access.RW))
    nodes: list[XsNode] = list(console_nodes(config.name))
    for disk in disks:
        nodes += disk_nodes(disk)
    for devid, vif in enumerate(config.vifs):
        nodes += vif_nodes(vif, devid, vif.mac or stable_mac(uuid, devid))
    if host.has_kernel_backends:
        ops.append(AwaitBackendRelease(config.name))
    ops.append(XenstoreTransaction("devices (console, vbd, vif)", tuple(nodes),
                                   cleanup=CONSOLE_RING_NODES + _backend_roots(config)))
    if host.has_kernel_backends:
        ops += [AttachDiskBackend(config.name, disk) for disk in disks if disk.target and served_by_blkback(disk)]
        ops += [AttachVifBackend(config.name, devid, vif) for devid, vif in enumerate(config.vifs)]
    return Step("devices", tuple(ops))


def _backend_roots(config: GuestConfig) -> tuple[str, ...]:
    """Backend directories to remove on undo; the frontends go with /local/domain/N."""
    roots = {"/local/domain/0/backend/console/{domid}"}
    for disk in pv_disks(config):
        roots.add(f"/local/domain/{backend_domid(disk.backend)}/backend/{disk_kind(disk)}/{{domid}}")
    for vif in config.vifs:
        roots.add(f"/local/domain/{backend_domid(vif.backend)}/backend/vif/{{domid}}")
    return tuple(sorted(roots))
