"""QEMU's command line for an HVM guest, as Xen 4.17's libxl builds it.

This follows ``libxl__build_device_model_args_new`` (``tools/libs/light/libxl_dm.c``, 4.17) option by
option and in its order (docs/hvm-facts.md section 4), so a guest sees the same hardware, in the same
PCI slots, whether xl or xentool started it, and xl's QMP client finds the socket where it looks.
Where xentool differs it says why: no libxenstat monitor, the serial port on a UNIX socket that
xentool's console service reads, and taps that xentool bridges itself (no ``br=``).

Everything here is pure: config in, argv out.  The result is a list for ``exec``, never a shell
string; values inside QEMU's ``key=value,...`` options go through :func:`qemu_opt_value`.
"""

from __future__ import annotations

from dataclasses import dataclass

from hypercalls.interface import GuestType
from pvdrivers.blkif import EXTENDED, IDE_MAJORS, vdev_to_devid
from xentool.config.model import BootDevice, DevType, Disk, DiskFormat, GuestConfig, HdType, Vif, VifType
from xentool.devicemodel.paths import qmp_socket_path
from xentool.devicemodel.privilege import Privilege
from xentool.devices.vif import stable_mac
from xentool.errors import DeviceError

__all__ = [
    "NIC_MODELS",
    "QEMU_XEN",
    "DeviceModelSetup",
    "device_model_argv",
    "emulated_by_qemu",
    "pv_backend_argv",
    "qemu_binary",
    "qemu_opt_value",
    "serial_to_console",
    "tap_ifname",
]

QEMU_XEN = "/usr/libexec/xen-qemu-system-i386"  # libxl's QEMU_XEN_PATH on Debian

# `xen-qemu-system-i386 -device help`, "Network devices", Debian bookworm's qemu-system-xen
# 1:7.2+dfsg-7+deb12u18 (QEMU 7.2.22), names and aliases.  Left out: the ones xenfv has no bus for
# (virtio-net-device needs a virtio bus, usb-net a USB port) and rocker, a switch with no netdev=.
NIC_MODELS = frozenset(
    {
        "e1000", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e",
        "i82550", "i82551", "i82557a", "i82557b", "i82557c", "i82558a", "i82558b",
        "i82559a", "i82559b", "i82559c", "i82559er", "i82562", "i82801",
        "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "tulip",
        "virtio-net", "virtio-net-pci", "virtio-net-pci-non-transitional", "virtio-net-pci-transitional",
        "vmxnet3",
    }
)  # fmt: skip
DEFAULT_NIC_MODEL = "rtl8139"  # libxl_nic.c: the model of an HVM NIC left unset

IDE_SLOTS = 4  # the PIIX3 IDE controller: ide.0 and ide.1, master and slave on each
LSI_TARGETS = 7  # QEMU's lsi53c895a (LSI_MAX_DEVS): SCSI ids 0-6, 7 is the adapter's own
AHCI_CONTROLLER = "ahci0"  # hdtype: ahci, QEMU's ich9-ahci as libxl names it; its ports 0-5 take disks 0-3
IFNAMSIZ = 16  # Linux: an interface name has at most 15 characters

_BOOT_LETTERS = {BootDevice.DISK: "c", BootDevice.CDROM: "d", BootDevice.NETWORK: "n"}
# libxl__qemu_disk_format_string (libxl_device.c)
_QEMU_FORMATS = {
    DiskFormat.RAW: "raw",
    DiskFormat.QCOW: "qcow",
    DiskFormat.QCOW2: "qcow2",
    DiskFormat.VHD: "vpc",
    DiskFormat.QED: "qed",
}


def qemu_binary(config: GuestConfig) -> str:
    """The QEMU to run: the config's device_model.path, else Debian's."""
    dm = config.device_model
    return dm.path if dm and dm.path else QEMU_XEN


def qemu_opt_value(text: str) -> str:
    """``text`` as one value inside a QEMU ``key=value,...`` option: QemuOpts reads ",," as a comma."""
    return text.replace(",", ",,")


@dataclass(frozen=True)
class DeviceModelSetup:
    """What the create step decides for this QEMU, beyond the config."""

    domid: int
    # A UNIX socket QEMU serves serial0 on, for xentool's console service; None when config.serial
    # names another QEMU backend (file:..., tcp:..., /dev/...), or none/null, or is unset.
    serial_socket: str | None
    vnc_display: int | None  # None: no VNC server (-vnc none)
    # The domain's uuid, from which a vif without a MAC gets one (the same as its vif backend's).
    uuid: str | None = None
    # How QEMU is confined (xentool.devicemodel.privilege); None adds nothing (tests, preflight).
    privilege: Privilege | None = None
    # A restored or migrated guest's QEMU: it waits for its device state (-incoming defer), and
    # appends to a serial file rather than truncating what the guest printed before.
    incoming: bool = False


def serial_to_console(config: GuestConfig) -> bool:
    """Whether the guest's serial port goes to xentool's console (log and `xentool console`): when
    unset or "pty"; other values are QEMU backends the user chose (file:, tcp:, ...)."""
    return config.serial in (None, "pty")


def tap_ifname(vif: Vif, domid: int | str, devid: int) -> str:
    """The tap QEMU creates for an emulated NIC, which xentool then adds to the vif's bridge."""
    # libxl always names it vif<domid>.<devid>-emu (libxl__device_nic_devname); xentool follows a
    # vifname the user gave, as the backend's own interface does.
    base = vif.vifname or f"vif{domid}.{devid}"
    return f"{base}-emu"


def device_model_argv(config: GuestConfig, setup: DeviceModelSetup) -> list[str]:
    """QEMU's argv for the HVM guest ``config`` as domain ``setup.domid``; argv[0] is the binary.

    Raises :class:`DeviceError` for a device QEMU cannot emulate (unknown NIC model, an IDE slot
    taken twice, a read-only IDE disk, a cdrom past hdd), naming the device.
    """
    if config.type != GuestType.HVM or config.hvm is None:
        raise ValueError(f"{config.name} is a {config.type.value} guest; only hvm guests have a device model")
    hvm = config.hvm
    dm = config.device_model
    domid = setup.domid
    qmp = qemu_opt_value(qmp_socket_path(domid))

    argv = [qemu_binary(config), "-xen-domid", str(domid)]
    # QEMU stays alive when the guest powers off, so that the toolstack sees it and destroys both.
    argv.append("-no-shutdown")
    argv += ["-chardev", f"socket,id=libxl-cmd,path={qmp},server=on,wait=off", "-mon", "chardev=libxl-cmd,mode=control"]
    argv += ["-nodefaults", "-no-user-config", "-name", config.name]
    argv += _vnc_args(config, setup)
    argv += ["-display", "none"]
    if config.kernel:
        argv += ["-kernel", config.kernel]
        if config.ramdisk:
            argv += ["-initrd", config.ramdisk]
        if config.cmdline:
            argv += ["-append", config.cmdline]
    # libxl adds the SCSI adapter before the other devices so that it keeps its PCI slot.
    if any(_vdev_prefix(d.vdev) == "sd" and d.devtype != DevType.CDROM for d in config.disks):
        argv += ["-device", "lsi53c895a"]
    argv += _serial_args(config, setup)
    vga = "VGA" if hvm.stdvga else "cirrus-vga"
    argv += ["-device", f"{vga},vgamem_mb={hvm.videoram}"]
    argv += ["-boot", "order=" + "".join(_BOOT_LETTERS[device] for device in hvm.boot)]
    # A tablet serves a pointer on a screen; without one (xl's default too) the guest gets no USB
    # controller, which is less to emulate and to attack.
    if hvm.usb_tablet if hvm.usb_tablet is not None else setup.vnc_display is not None:
        argv += ["-usb", "-usbdevice", "tablet"]
    if not hvm.acpi:
        argv.append("-no-acpi")
    if config.max_vcpus > 1:
        argv += ["-smp", f"{config.vcpus},maxcpus={config.max_vcpus}"]
    argv += _nic_args(config, setup)
    if dm:
        argv += dm.args
    argv += ["-machine", "xenfv,suppress-vmdesc=on"]
    # libxl__sizekb_to_mb rounds up.
    argv += ["-m", str(-(-(config.maxmem_kib - config.videoram_kib) // 1024))]
    if hvm.hdtype == HdType.AHCI:
        argv += ["-device", f"ahci,id={AHCI_CONTROLLER}"]
    argv += _disk_args(config)
    argv += setup.privilege.argv() if setup.privilege else []
    if setup.incoming:
        argv += ["-incoming", "defer"]
    return argv


def pv_backend_argv(config: GuestConfig, domid: int) -> list[str]:
    """QEMU's argv as the PV backend of a PV or PVH guest: no emulated machine (``xenpv``), only
    its xen-bus serving the guest's qdisk disks, which it finds under backend/qdisk/DOMID
    (libxl__build_device_model_args_new's PV branch, 4.17).  Like libxl, no -runas or
    -xen-domid-restrict: Xen's restricted QEMU cannot serve qdisk (qemu-deprivilege.pandoc)."""
    if config.type == GuestType.HVM:
        raise ValueError(f"{config.name} is an hvm guest; its QEMU is built by device_model_argv")
    dm = config.device_model
    qmp = qemu_opt_value(qmp_socket_path(domid))
    argv = [qemu_binary(config), "-xen-domid", str(domid), "-no-shutdown"]
    argv += ["-chardev", f"socket,id=libxl-cmd,path={qmp},server=on,wait=off", "-mon", "chardev=libxl-cmd,mode=control"]
    argv += ["-nodefaults", "-no-user-config", "-xen-attach", "-name", config.name]
    argv += ["-vnc", "none", "-display", "none", "-nographic"]
    if dm:
        argv += dm.args
    argv += ["-machine", "xenpv", "-m", str(-(-config.maxmem_kib // 1024))]
    return argv


def emulated_by_qemu(disk: Disk) -> bool:
    """Whether an HVM guest's QEMU emulates ``disk`` (as :func:`_disk_args` gives it): cdroms, SCSI
    disks, and the first four other disks; the rest are for the guest's PV drivers only."""
    if disk.devtype == DevType.CDROM or _vdev_prefix(disk.vdev) == "sd":
        return True
    return _vdev_disk_index(disk.vdev) < IDE_SLOTS


def _vnc_args(config: GuestConfig, setup: DeviceModelSetup) -> list[str]:
    if setup.vnc_display is None:
        return ["-vnc", "none"]
    if config.vnc is not None and not config.vnc.enabled:
        raise ValueError(f"{config.name}: a VNC display was chosen for a guest whose config turns VNC off")
    listen = config.vnc.listen if config.vnc else "127.0.0.1"
    if ":" in listen:
        listen = f"[{listen}]"  # QEMU's host:display needs an IPv6 address in brackets
    vnc = f"{listen}:{setup.vnc_display}"
    if config.vnc and config.vnc.password:
        # QEMU starts without one and refuses clients until the toolstack sets it over QMP.
        vnc += ",password=on"
    return ["-vnc", vnc]


def _serial_args(config: GuestConfig, setup: DeviceModelSetup) -> list[str]:
    serial = config.serial
    if setup.serial_socket is not None:
        if serial not in (None, "pty"):
            raise ValueError(f"{config.name}: a serial socket was chosen but the config sends the serial port to {serial}")
        path = qemu_opt_value(setup.serial_socket)
        # id serial0 is the label QEMU gives the first -serial itself, which query-chardev reports.
        return ["-chardev", f"socket,id=serial0,path={path},server=on,wait=off", "-serial", "chardev:serial0"]
    if serial is None or serial in ("none", "null"):
        return []
    if setup.incoming and serial.startswith("file:"):
        # -serial file: opens with O_TRUNC; a migrated guest's target QEMU starts while the source's
        # still writes (to the same file, on shared storage), and the guest's log goes on.
        path = qemu_opt_value(serial.removeprefix("file:"))
        return ["-chardev", f"file,id=serial0,path={path},append=on", "-serial", "chardev:serial0"]
    return ["-serial", serial]


def _nic_args(config: GuestConfig, setup: DeviceModelSetup) -> list[str]:
    args: list[str] = []
    for devid, vif in enumerate(config.vifs):
        # An HVM guest's vif is ioemu unless it says vif (libxl_nic.c): the emulated NIC and the PV
        # one share the MAC, and the guest's PV drivers unplug the emulated one.
        if vif.type == VifType.VIF:
            continue
        model = vif.model or DEFAULT_NIC_MODEL
        if model not in NIC_MODELS:
            raise DeviceError(
                config.name, f"vif {devid}", f"QEMU has no NIC model {model!r}; use one of {', '.join(sorted(NIC_MODELS))}"
            )
        ifname = tap_ifname(vif, setup.domid, devid)
        if len(ifname) >= IFNAMSIZ:
            raise DeviceError(
                config.name, f"vif {devid}", f"the tap name {ifname!r} is longer than Linux allows (15); shorten vifname to 11 characters"
            )
        mac = vif.mac or _derived_mac(config, setup, devid)
        args += ["-device", f"{model},id=nic{devid},netdev=net{devid},mac={mac}"]
        # script=no: the tap is not bridged by QEMU; xentool adds it to vif.bridge once QEMU made it.
        args += ["-netdev", f"type=tap,id=net{devid},ifname={ifname},script=no,downscript=no"]
    return args or ["-net", "none"]


def _derived_mac(config: GuestConfig, setup: DeviceModelSetup, devid: int) -> str:
    uuid = setup.uuid or (str(config.uuid) if config.uuid else None)
    if uuid is None:
        raise ValueError(f"{config.name}: vif {devid} has no MAC and DeviceModelSetup has no uuid to derive it from")
    return stable_mac(uuid, devid)


def _disk_args(config: GuestConfig) -> list[str]:
    """The emulated disks, in config order, as libxl_dm.c l.1866-2040 gives them to QEMU."""
    args: list[str] = []
    ide_slots: dict[int, str] = {}
    hdtype = config.hvm.hdtype if config.hvm else HdType.IDE

    def take_ide_slot(disk: Disk, slot: int) -> None:
        if slot in ide_slots:
            raise DeviceError(
                config.name,
                disk.vdev,
                f"QEMU emulates {IDE_SLOTS} IDE devices and slot {slot} (hd{'abcd'[slot]}) "
                f"is already {ide_slots[slot]}'s; use another vdev",
            )
        ide_slots[slot] = disk.vdev

    for disk in config.disks:
        prefix, index = _vdev_prefix(disk.vdev), _vdev_disk_index(disk.vdev)
        file = f"file={qemu_opt_value(_plain_file(disk.target))}" if disk.target else ""
        fmt = _QEMU_FORMATS.get(disk.format)
        if disk.devtype == DevType.CDROM:
            # libxl emulates a cdrom of any prefix on IDE, by its disk index.
            if index >= IDE_SLOTS:
                raise DeviceError(
                    config.name,
                    disk.vdev,
                    "QEMU emulates a cdrom on IDE only, so it must be one of the first 4 disks (hda..hdd or xvda..xvdd)",
                )
            take_ide_slot(disk, index)
            drive_id = f"ide-{vdev_to_devid(disk.vdev)}"
            drive = f"if=none,readonly=on,id={drive_id}"
            if disk.target and fmt:  # an empty drive has no file; the guest sees no medium
                drive += f",{file},format={fmt}"
            args += ["-drive", drive, "-device", f"ide-cd,id={drive_id},drive={drive_id},bus=ide.{index // 2},unit={index % 2}"]
        elif prefix == "sd":
            if index >= LSI_TARGETS:
                raise DeviceError(
                    config.name, disk.vdev, f"QEMU's SCSI adapter has {LSI_TARGETS} targets, sda..sdg; use one of those or an xvd disk"
                )
            readonly = "on" if disk.access.value == "ro" else "off"
            drive_id = f"scsi0-hd{index}"
            args += ["-drive", f"{file},id={drive_id},format={fmt},if=none,readonly={readonly},cache=writeback"]
            args += ["-device", f"scsi-hd,drive={drive_id},scsi-id={index}"]
        elif index < IDE_SLOTS:
            # hd[a-d], and xvd[a-d] too: libxl emulates disks 0-3 on IDE whatever the prefix, so
            # the firmware can boot from them before the guest's PV drivers take over.
            if disk.access.value != "rw":
                raise DeviceError(
                    config.name, disk.vdev,
                    f"QEMU's {hdtype.value.upper()} disks cannot be read-only (libxl refuses them too); make it rw or "
                    "use xvde or later",
                )
            take_ide_slot(disk, index)
            if hdtype == HdType.AHCI:
                # libxl_dm.c's hdtype=ahci: the disk on the AHCI controller's port of its index.
                drive_id = f"ahcidisk-{index}"
                args += ["-drive", f"{file},if=none,id={drive_id},format={fmt},cache=writeback",
                         "-device", f"ide-hd,bus={AHCI_CONTROLLER}.{index},unit=0,drive={drive_id}"]
            else:
                args += ["-drive", f"{file},if=ide,index={index},media=disk,format={fmt},cache=writeback"]
        # Further disks (xvde on) are for the guest's PV drivers only, as in libxl.
    return args


def _plain_file(path: str) -> str:
    """``path`` as QEMU reads a file name, never a protocol: QEMU takes "nbd:...", "http:..." and
    the like (a ':' before any '/') as a network block device, so a relative path gets "./"."""
    return path if path.startswith("/") else f"./{path}"


def _vdev_prefix(vdev: str) -> str:
    return "xvd" if vdev.startswith("xvd") else vdev[:2]


def _vdev_disk_index(vdev: str) -> int:
    """The disk's index within its prefix (hdc: 2, xvdb1: 1), as libxl__device_disk_dev_number gives it."""
    devid = vdev_to_devid(vdev)
    prefix = _vdev_prefix(vdev)
    if prefix == "hd":
        return IDE_MAJORS.index(devid >> 8) * 2 + ((devid >> 6) & 1)
    if prefix == "xvd" and devid & EXTENDED:
        return (devid & ~EXTENDED) >> 8
    return (devid >> 4) & 0xF
