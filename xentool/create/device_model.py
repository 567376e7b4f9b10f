"""QEMU, running before the guest's first instruction: an HVM guest's device model, or a PV or
PVH guest's PV disk backend when it has qdisk disks (StartPvBackend).

libxl__spawn_local_dm in order: the nodes hvmloader and QEMU read, QEMU's xenstore directory, the
process (xentool.devicemodel.process), its pid where xl looks for it (LaunchDeviceModel, right
after the build), then, once the devices and the console are set up, the wait for QEMU's
``running`` (AwaitDeviceModel); after that, over QMP, what libxl's post-configuration does (VNC address and port into
xenstore, the VNC password), and the emulated NICs' taps join their bridges.  A restored HVM
guest's QEMU loads its device state from the save file.  Undo stops QEMU and removes all of it;
destroying the domain does the same (xentool.lifecycle).
"""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from hypercalls.interface import GuestType, Hypervisor, XenStore, perms
from xentool.config import GuestConfig
from xentool.config.model import Firmware, VifType
from xentool.console.paths import RUN_DIR, serial_socket_path
from xentool.create.build import RestoreSource
from xentool.create.devices import check_disk_target, disk_backend_path, qdisk_disks
from xentool.create.plan import Bindings, Op, Step
from xentool.devicemodel.privilege import Privilege
from xentool.devicemodel.process import StartedDeviceModel
from xentool.errors import DeviceError
from xentool.hotplug import netdev

VNC_BASE_PORT = 5900
VNC_AUTO_DISPLAYS = 100  # libxl's "to=99": the first free display from 0 to 99
QEMU_XEN_VERSION = "qemu_xen"  # /libxl/N/dm-version and platform/device-model (libxl's names)
BIOS_NAMES = {Firmware.BIOS: "seabios", Firmware.UEFI: "ovmf"}  # hvmloader/bios


def vnc_enabled(config: GuestConfig) -> bool:
    """libxl enables VNC for HVM guests unless told not to (on 127.0.0.1)."""
    return config.vnc is None or config.vnc.enabled


def vnc_listen(config: GuestConfig) -> str:
    return config.vnc.listen if config.vnc else "127.0.0.1"


class AddressNotHere(Exception):
    """The listen address belongs to no interface of dom0 (127.0.0.1 with the loopback down)."""


def port_is_free(listen: str, port: int) -> bool:
    family = socket.AF_INET6 if ":" in listen else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((listen, port))
        except OSError as e:
            if e.errno == errno.EADDRNOTAVAIL:
                raise AddressNotHere(listen) from e
            return False
    return True


def choose_vnc_display(config: GuestConfig) -> int | None:
    """The display QEMU serves on: the config's (which must be free), else the first free one."""
    if not vnc_enabled(config):
        return None
    try:
        return _free_vnc_display(config)
    except AddressNotHere as e:
        hint = "bring the loopback interface up (ip link set lo up)" if str(e).startswith("127.") else "fix vnc.listen"
        raise DeviceError(config.name, "vnc", f"{e} is not an address of dom0; {hint}, or set vnc.enabled: false") from None


def _free_vnc_display(config: GuestConfig) -> int | None:
    listen = vnc_listen(config)
    wanted = config.vnc.display if config.vnc else None
    if wanted is not None:
        if not port_is_free(listen, VNC_BASE_PORT + wanted):
            raise DeviceError(config.name, "vnc", f"display {wanted} (port {VNC_BASE_PORT + wanted} on {listen}) is in use; "
                              "pick another vnc.display or leave it unset for the first free one")
        return wanted
    for display in range(VNC_AUTO_DISPLAYS):
        if port_is_free(listen, VNC_BASE_PORT + display):
            return display
    raise DeviceError(config.name, "vnc", f"ports {VNC_BASE_PORT}-{VNC_BASE_PORT + VNC_AUTO_DISPLAYS - 1} on {listen} "
                      "are all in use; free one or set vnc.enabled: false")


def serial_to_console(config: GuestConfig) -> bool:
    """Whether the guest's serial port goes to xentool's console (log and `xentool console`): when
    unset or "pty"; other values are QEMU backends the user chose (file:, tcp:, ...)."""
    return config.serial in (None, "pty")


@dataclass(frozen=True)
class LaunchDeviceModel(Op):
    """An HVM guest's QEMU, started as soon as the domain is built: it takes seconds to become
    ready (in the lab's dom0, longer than all the rest of a create), so the devices and the console
    backend are set up meanwhile and AwaitDeviceModel waits for it afterwards."""

    config: GuestConfig
    uuid: str
    # A restored guest's QEMU loads its device state from the save file (-incoming fd:N).
    incoming: RestoreSource | None = None

    def describe(self) -> str:
        from xentool.devicemodel.argv import qemu_binary
        from xentool.devicemodel.process import device_model_log_path

        binary = qemu_binary(self.config)
        incoming = " with its device state from the save file (-incoming)" if self.incoming else ""
        return (f"start the device model {binary} for {{domid}}{incoming} (QMP /var/run/xen/qmp-libxl-{{domid}}, "
                f"log {device_model_log_path(self.uuid)})")

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if not hv.runs_device_models:
            return
        from xentool.devicemodel.argv import DeviceModelSetup, device_model_argv
        from xentool.devicemodel.privilege import choose_privilege
        from xentool.devicemodel.state import INCOMING_FD

        domid = bound["domid"]
        config = self.config
        serial = str(serial_socket_path(domid)) if serial_to_console(config) else None
        privilege = choose_privilege(config, domid)
        setup = DeviceModelSetup(domid=domid, serial_socket=serial, vnc_display=choose_vnc_display(config),
                                 uuid=self.uuid, privilege=privilege)
        argv = device_model_argv(config, setup)
        if serial:
            RUN_DIR.mkdir(parents=True, exist_ok=True, mode=0o700)
        state_fd = self._open_incoming()
        if state_fd is not None:
            argv += ["-incoming", f"fd:{INCOMING_FD}"]
        # The executor undoes only the operations that completed: this one ends its own QEMU.
        try:
            launch(xs, domid, self.uuid, argv, privilege, bound,
                   pass_fd=(state_fd, INCOMING_FD) if state_fd is not None else None)
        except BaseException:
            self.undo(hv, xs, bound)
            raise
        finally:
            if state_fd is not None:
                os.close(state_fd)  # QEMU has its own copy
        bound["dm_restricted"] = privilege.restricted
        bound["vnc_display"] = setup.vnc_display
        if serial:
            bound["serial_socket"] = serial

    def _open_incoming(self) -> int | None:
        """The save file, at QEMU's device state, for QEMU to read."""
        if self.incoming is None or self.incoming.dm_state_offset is None:
            return None
        fd = os.open(self.incoming.path, os.O_RDONLY | os.O_CLOEXEC)
        os.lseek(fd, self.incoming.dm_state_offset, os.SEEK_SET)
        return fd

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if not hv.runs_device_models or "domid" not in bound:
            return
        from xentool.devicemodel.process import stop_device_model

        stop_device_model(xs, bound["domid"])


@dataclass(frozen=True)
class AwaitDeviceModel(Op):
    """Wait until LaunchDeviceModel's QEMU is ready; then what libxl's post-configuration does
    (VNC address and port into xenstore, the VNC password), the emulated NICs' taps join their
    bridges, and, for a guest that is not to stay paused, QMP cont in the same session (the first
    half of libxl__domain_unpause; a connection costs a third of a second in the lab's dom0).  The
    vCPUs stay paused until the unpause step.  If this fails, undoing the launch ends QEMU."""

    config: GuestConfig
    uuid: str
    resume: bool = False

    def describe(self) -> str:
        cont = "; QMP cont" if self.resume else ""
        return f"wait for the device model of {{domid}} to be ready (QMP, or device-model/{{domid}}/state = running){cont}"

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if not hv.runs_device_models:
            return
        from xentool.devicemodel.process import (DeviceModelFailed, device_model_log_path, wait_until_prelaunch,
                                                 wait_until_running)

        domid, pid, display = bound["domid"], bound["dm_pid"], bound["vnc_display"]
        log_path = device_model_log_path(self.uuid)
        post_config = self._post_config_commands(display) + ([("cont", None)] if self.resume else [])
        try:
            if bound["dm_restricted"]:
                results = wait_until_prelaunch(domid, pid, log_path, post_config)
            else:
                wait_until_running(xs, domid, pid, log_path)
                results = self._qmp(domid, post_config) if post_config else []
        except DeviceModelFailed as e:
            raise DeviceError(self.config.name, "device model", str(e)) from e
        self._post_configure(xs, domid, display, results)
        self._bridge_taps(domid)

    def _qmp(self, domid: int, commands: list[tuple[str, dict | None]]) -> list:
        from xentool.devicemodel.qmp import QmpFailed, qmp_execute

        try:
            return qmp_execute(domid, commands)
        except QmpFailed as e:
            raise DeviceError(self.config.name, "device model", str(e)) from e

    def _post_config_commands(self, display: int | None) -> list[tuple[str, dict | None]]:
        """device_model_postconfig_vnc's QMP: where the VNC server listens, and its password."""
        if display is None:
            return []
        password = self.config.vnc.password if self.config.vnc else None
        return [("query-vnc", None)] + ([("change-vnc-password", {"password": password})] if password else [])

    def _post_configure(self, xs: XenStore, domid: int, display: int | None, results: list) -> None:
        """The VNC address and port into xenstore, for `xl vncviewer` and us."""
        password = self.config.vnc.password if self.config.vnc else None
        if display is not None:
            vnc = results[0]
            xs.write(f"/local/domain/{domid}/console/vnc-listen", str(vnc.get("host", vnc_listen(self.config))))
            xs.write(f"/local/domain/{domid}/console/vnc-port", str(vnc.get("service", VNC_BASE_PORT + display)))
            if password:
                xs.write(f"/local/domain/{domid}/console/vnc-pass", password)

    def _bridge_taps(self, domid: int) -> None:
        """What vif-bridge's "add type_if=tap" does for each emulated NIC: join the bridge, go up."""
        from xentool.devicemodel.argv import tap_ifname

        for devid, vif in enumerate(self.config.vifs):
            if vif.type == VifType.VIF:
                continue
            tap = tap_ifname(vif, domid, devid)
            try:
                netdev.add_to_bridge(vif.bridge, tap)
                netdev.set_up(tap)
            except OSError as e:
                raise DeviceError(self.config.name, f"vif {devid}", f"wiring {tap} to bridge {vif.bridge} failed: {e.strerror or e}") from e


def launch(xs: XenStore, domid: int, uuid: str, argv: list[str], privilege: Privilege, bound: Bindings,
           pass_fd: tuple[int, int] | None = None) -> StartedDeviceModel:
    """libxl__spawn_local_dm up to the wait: QEMU's xenstore directory (dom0's only), its chroot if
    restricted, the process, and its pid where xl looks for it."""
    from xentool.devicemodel.argv import device_model_env
    from xentool.devicemodel.privilege import prepare_chroot, restrict_this_process
    from xentool.devicemodel.process import device_model_log_path, dm_pid_path, dm_state_path, spawn

    Path("/var/run/xen").mkdir(parents=True, exist_ok=True)  # QMP's directory, libxl's run dir
    xs.mkdir(dm_state_path(domid))
    xs.set_perms(dm_state_path(domid), perms(0))
    prepare_chroot(privilege)
    started = spawn(argv, device_model_env(domid), device_model_log_path(uuid),
                    preexec=restrict_this_process if privilege.restricted else None, pass_fd=pass_fd)
    bound["dm_pid"] = started.pid
    xs.write(dm_pid_path(domid), str(started.pid))
    return started


@dataclass(frozen=True)
class StartPvBackend(Op):
    """A PV or PVH guest's QEMU, which serves its qdisk disks (images blkback cannot read, such as
    qcow2): started after the disks' nodes are written, as libxl starts it, then each qdisk must
    reach InitWait (QEMU opened the image and waits for the guest) before the guest runs."""

    config: GuestConfig
    uuid: str

    def describe(self) -> str:
        from xentool.devicemodel.argv import qemu_binary

        binary = qemu_binary(self.config)
        disks = ", ".join(d.vdev for d in qdisk_disks(self.config))
        return (f"start {binary} -machine xenpv for {{domid}} as the qdisk backend of {disks}; wait for "
                "device-model/{domid}/state = running, then for each qdisk's backend state InitWait")

    def apply(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if not hv.runs_device_models:
            return
        from xentool.devicemodel.argv import pv_backend_argv
        from xentool.devicemodel.process import DeviceModelFailed, wait_until_running
        from xentool.hotplug.qdisk import wait_until_taken_up

        domid = bound["domid"]
        # The executor undoes only the operations that completed: this one ends its own QEMU.
        try:
            started = launch(xs, domid, self.uuid, pv_backend_argv(self.config, domid), Privilege(restricted=False), bound)
            wait_until_running(xs, domid, started.pid, started.log_path)
            for disk in qdisk_disks(self.config):
                wait_until_taken_up(xs, self.config.name, disk, bound.fill(disk_backend_path(disk)), started.log_path)
        except BaseException as e:
            self.undo(hv, xs, bound)
            if isinstance(e, DeviceModelFailed):
                raise DeviceError(self.config.name, "qdisk backend (QEMU)", str(e)) from e
            raise

    def undo(self, hv: Hypervisor, xs: XenStore, bound: Bindings) -> None:
        if not hv.runs_device_models or "domid" not in bound:
            return
        from xentool.devicemodel.process import stop_device_model

        stop_device_model(xs, bound["domid"])


def check_device_model_inputs(config: GuestConfig) -> None:
    """Preflight for an HVM guest: what QEMU and hvmloader will open exists, bridges too, so that
    a typo costs nothing to undo."""
    from xentool.create.build import HVMLOADER, OVMF, SEABIOS
    from xentool.devicemodel.argv import DeviceModelSetup, device_model_argv
    from xentool.devicemodel.privilege import choose_privilege

    device_model_argv(config, DeviceModelSetup(domid=1, serial_socket=None, vnc_display=None))  # NIC models, IDE slots
    choose_privilege(config, 1)  # an unprivileged user to run QEMU as
    firmware = config.hvm.firmware if config.hvm else Firmware.BIOS
    bios = OVMF if firmware == Firmware.UEFI else SEABIOS
    package = "ovmf" if firmware == Firmware.UEFI else "seabios"
    for path, what, fix in ((HVMLOADER, "hvmloader", "install xen-utils-4.17"), (bios, firmware.value, f"install {package}")):
        if not Path(path).is_file():
            raise DeviceError(config.name, "firmware", f"{what} {path} is not there; {fix}")
    for disk in config.disks:
        if disk.target:
            check_disk_target(config.name, disk.vdev, disk.target, writable=False)  # QEMU reads it
    for key, path in (("kernel", config.kernel), ("ramdisk", config.ramdisk)):
        if path and not Path(path).is_file():
            raise DeviceError(config.name, key, f"{path} does not exist; QEMU loads it for direct kernel boot")
    choose_vnc_display(config)  # a display in use fails here, before anything exists


def hvm_platform_nodes(config: GuestConfig) -> list[tuple[str, str]]:
    """Relative to /local/domain/N: what hvmloader reads (libxl__build_hvm / libxl__spawn_local_dm)."""
    hvm = config.hvm
    acpi = "1" if hvm is None or hvm.acpi else "0"
    firmware = hvm.firmware if hvm else Firmware.BIOS
    return [
        ("hvmloader/bios", BIOS_NAMES[firmware]),
        ("hvmloader/allow-memory-relocate", "0"),
        ("platform/acpi", acpi),
        ("platform/acpi_s3", acpi),
        ("platform/acpi_s4", acpi),
        ("platform/acpi_laptop_slate", "0"),
        ("platform/device-model", QEMU_XEN_VERSION),
    ]


def plan_device_model_launch(config: GuestConfig, uuid: str, restore: RestoreSource | None = None) -> Step | None:
    """An HVM guest's QEMU, started right after the build (see LaunchDeviceModel)."""
    if config.type == GuestType.HVM:
        return Step("device model", (LaunchDeviceModel(config, uuid, restore),))
    return None


def plan_device_model(config: GuestConfig, uuid: str, paused: bool = False) -> Step | None:
    """After the devices: the wait for an HVM guest's QEMU (continued at once unless the guest is
    to stay paused); for a PV or PVH guest, a QEMU only if it has qdisk disks."""
    if config.type == GuestType.HVM:
        return Step("device model ready", (AwaitDeviceModel(config, uuid, resume=not paused),))
    if qdisk_disks(config):
        return Step("device model (qdisk backend)", (StartPvBackend(config, uuid),))
    return None


__all__ = ["AwaitDeviceModel", "LaunchDeviceModel", "StartPvBackend", "check_device_model_inputs",
           "hvm_platform_nodes", "launch", "plan_device_model", "plan_device_model_launch"]
