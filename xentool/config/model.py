"""The guest config as typed data: what a YAML file, a dict or an xl.cfg import becomes once valid.

Every rule about what a config may say lives here, field by field and then across fields, so the
loader (``xentool.config.loader``) only has to read YAML and say where a problem is.  Validation
messages are written for the person editing the file: what was wrong and what is accepted.  A rule
that involves more than one field raises :class:`FieldProblems`, which names the key each problem
belongs to, so the loader can point at the right line.

Units follow xl: memory in MiB (sizes like ``2G`` accepted), ids as integers.  The hypervisor
interface counts memory in KiB; ``memory_kib`` and ``maxmem_kib`` convert.
"""

from __future__ import annotations

import enum
import ipaddress
import re
import uuid as uuid_module
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    TypeAdapter,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from hypercalls.interface import GuestType
from pvdrivers.blkif import vdev_to_devid
from xentool.config.sizes import parse_size_mib
from xentool.config.xlspec import MAX_CPU_ID, parse_boot_letters, parse_cpu_list, parse_disk_spec, parse_vif_spec

__all__ = [
    "Access",
    "Action",
    "BackendType",
    "BootDevice",
    "DevType",
    "DeviceModel",
    "Disk",
    "DiskFormat",
    "FieldProblems",
    "Firmware",
    "GuestConfig",
    "GuestType",
    "HvmOptions",
    "Vif",
    "VifType",
    "Vnc",
    "validate_domain_name",
]

MAX_MEMORY_MIB = 16 * 1024 * 1024  # 16 TiB, the most Xen 4.17 supports on x86
MAX_VCPUS = 4096
HVM_MAX_VCPUS = 128  # xen/include/public/hvm/hvm_info_table.h: HVM and PVH guests
STDVGA_MIN_VIDEORAM = 16  # MiB, libxl's floor for a standard VGA card
DOMID_FIRST_RESERVED = 0x7FF0  # DOMID_SELF and above are not domains


class FieldProblems(ValueError):
    """Problems found across fields, each with the key path (relative to the model) it belongs to."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        self.problems = list(problems)
        super().__init__("; ".join(f"{_dotted(path)}: {message}" for path, message in self.problems))


def _dotted(path: tuple[str | int, ...]) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _shown(value: object) -> str:
    if isinstance(value, str):
        return '"' + (value if len(value) <= 60 else value[:57] + "...") + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value)


# -- enums --------------------------------------------------------------------------------------


class Action(str, enum.Enum):
    """What to do when the guest shuts down for a reason (xl's on_poweroff, on_reboot, ...)."""

    DESTROY = "destroy"
    RESTART = "restart"
    PRESERVE = "preserve"
    RENAME_RESTART = "rename-restart"
    COREDUMP_DESTROY = "coredump-destroy"
    COREDUMP_RESTART = "coredump-restart"


class DiskFormat(str, enum.Enum):
    RAW = "raw"
    QCOW = "qcow"
    QCOW2 = "qcow2"
    VHD = "vhd"
    QED = "qed"
    EMPTY = "empty"


class Access(str, enum.Enum):
    RW = "rw"
    RO = "ro"


class BackendType(str, enum.Enum):
    PHY = "phy"
    QDISK = "qdisk"
    TAP = "tap"


class DevType(str, enum.Enum):
    DISK = "disk"
    CDROM = "cdrom"


class VifType(str, enum.Enum):
    IOEMU = "ioemu"
    VIF = "vif"


class VifMode(str, enum.Enum):
    BRIDGE = "bridge"  # xl's script=vif-bridge
    ROUTE = "route"  # xl's script=vif-route


class Firmware(str, enum.Enum):
    BIOS = "bios"
    UEFI = "uefi"


class HdType(str, enum.Enum):
    """The controller QEMU emulates an HVM guest's first disks on (xl's hdtype)."""

    IDE = "ide"
    AHCI = "ahci"


class BootDevice(str, enum.Enum):
    DISK = "disk"
    CDROM = "cdrom"
    NETWORK = "network"


ViridianGroup = Literal[
    "defaults",
    "all",
    "base",
    "freq",
    "time_ref_count",
    "reference_tsc",
    "hcall_remote_tlb_flush",
    "apic_assist",
    "crash_ctl",
    "synic",
    "stimer",
    "hcall_ipi",
    "ex_processor_masks",
    "no_vp_limit",
    "cpu_hotplug",
]
VIRIDIAN_GROUPS: tuple[str, ...] = ViridianGroup.__args__  # type: ignore[attr-defined]


# -- reusable checks ----------------------------------------------------------------------------

_NAME_CHARS = re.compile(r"^[A-Za-z0-9._-]+$")
_UUID_LIKE = re.compile(r"^[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}$")


def validate_domain_name(name: object) -> str:
    """``name`` if it can name a domain, else ValueError saying why.

    Domains are looked up by name, id or uuid, so a name must not look like either of the other
    two; "Domain-0" is dom0's.  The character set keeps names safe in xenstore paths and shells.
    """
    if isinstance(name, int) and not isinstance(name, bool):
        name = str(name)  # YAML reads name: 42 as a number; say what is wrong with it as a name
    if not isinstance(name, str):
        raise ValueError(f"{_shown(name)} is not a domain name; a name is text like web-1")
    if not 1 <= len(name) <= 64:
        raise ValueError(f"a domain name has 1 to 64 characters, not {len(name)}")
    if not _NAME_CHARS.match(name):
        raise ValueError(f"{_shown(name)} is not a domain name; use letters, digits, '.', '_' and '-' only")
    if name.isdigit():
        raise ValueError(f"{_shown(name)} is all digits, which reads as a domain id; add a letter")
    if _UUID_LIKE.match(name):
        raise ValueError(f"{_shown(name)} reads as a uuid; pick a name that does not")
    if name == "Domain-0":
        raise ValueError('"Domain-0" is the name of dom0, the control domain; pick another')
    if name.startswith("-"):
        raise ValueError(f"{_shown(name)} starts with '-', which commands would take for an option")
    return name


def _whole_number(value: Any) -> Any:
    # pydantic would take true as 1; in a config that is always a mistake.
    if isinstance(value, bool):
        raise ValueError(f"{_shown(value)} is not a number; write a whole number like 2")
    return value


def _size_mib(value: Any) -> int:
    mib = parse_size_mib(value)
    if mib > MAX_MEMORY_MIB:
        raise ValueError(f"{_shown(value)} is more than Xen can give a guest ({MAX_MEMORY_MIB // (1024 * 1024)} TiB)")
    return mib


def _backend_domid(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.isdigit() or int(value) >= DOMID_FIRST_RESERVED:
        raise ValueError(f"{_shown(value)} is not a backend domain; give the backend's domain id, like 0 for dom0")
    return str(int(value))


def _ifname(value: str, what: str) -> str:
    if not 1 <= len(value) <= 15 or not re.match(r"^[A-Za-z0-9._:-]+$", value):
        raise ValueError(f"{_shown(value)} is not a {what}; a network interface name has 1 to 15 letters, digits, '.', '_', ':' or '-'")
    return value


_SIZE_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 1},
        {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*([KkMmGgTt](i?[Bb])?)?\s*$"},
    ]
}
SizeMiB = Annotated[int, BeforeValidator(_size_mib), WithJsonSchema(_SIZE_SCHEMA)]
Count = Annotated[int, BeforeValidator(_whole_number)]
BackendDomid = Annotated[str, BeforeValidator(_backend_domid), WithJsonSchema({"type": ["string", "integer"], "pattern": r"^\d+$"})]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, use_attribute_docstrings=False)


# -- devices ------------------------------------------------------------------------------------


def _access_alias(value: Any) -> Any:
    return {"r": "ro", "w": "rw"}.get(value, value) if isinstance(value, str) else value


class Disk(_Section):
    """A virtual disk or cdrom drive (xl's disk=; the string form ``/img/a.raw,raw,xvda,rw`` works too)."""

    target: str = Field(
        "",
        description="The image file or block device behind the disk. Only an empty cdrom drive may leave it out.",
    )
    vdev: str = Field(
        description="The name the guest sees: xvda.. (PV), hda..hdd (IDE), sda..sdp (SCSI), with an optional partition number, like xvda1."
    )
    format: DiskFormat = Field(DiskFormat.RAW, description="The image format.")
    access: Annotated[Access, BeforeValidator(_access_alias)] = Field(
        Access.RW, description="rw or ro (xl's w and r are accepted). A cdrom is always ro."
    )
    devtype: DevType = Field(DevType.DISK, description="disk, or cdrom for a removable drive.")
    backendtype: BackendType | None = Field(
        None, description="Which backend serves it: phy (blkback, raw devices and files), qdisk (QEMU) or tap. Unset: xentool picks phy."
    )
    backend: BackendDomid = Field("0", description="The domain id of the backend domain (0 is dom0).")

    @model_validator(mode="before")
    @classmethod
    def _cdrom_is_read_only_by_default(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("devtype") == "cdrom" and "access" not in data:
            data = {**data, "access": "ro"}
        return data

    @field_validator("vdev")
    @classmethod
    def _vdev_is_one_xen_numbers(cls, vdev: str) -> str:
        vdev_to_devid(vdev)  # raises ValueError with the accepted forms
        return vdev

    @field_validator("target")
    @classmethod
    def _target_is_a_path(cls, target: str) -> str:
        if "\0" in target or "\n" in target:
            raise ValueError("a disk target cannot hold a NUL or newline character")
        return target

    @model_validator(mode="after")
    def _consistent(self) -> Disk:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if not self.target and self.devtype != DevType.CDROM:
            problems.append(
                (("target",), "missing; a disk needs a target (its image file or block device); only an empty cdrom drive may leave it out")
            )
        if self.devtype == DevType.CDROM and self.access == Access.RW:
            problems.append((("access",), "a cdrom is read-only; use ro or leave access out"))
        if self.format == DiskFormat.EMPTY and self.target:
            problems.append(
                (("format",), "format empty is for a cdrom drive with nothing in it; remove the target or pick the image's format")
            )
        if self.backendtype == BackendType.PHY and self.format not in (DiskFormat.RAW, DiskFormat.EMPTY):
            problems.append((("backendtype",), f"phy serves raw images and devices only; use qdisk for {self.format.value}"))
        if problems:
            raise FieldProblems(problems)
        return self


def _disk_spec(value: Any) -> Any:
    return parse_disk_spec(value) if isinstance(value, str) else value


_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


class Vif(_Section):
    """A network interface (xl's vif=; the string form ``bridge=xenbr0,mac=00:16:3e:00:00:01`` works too)."""

    mac: str | None = Field(
        None, description="The MAC address, xx:xx:xx:xx:xx:xx. Unset: one in Xen's 00:16:3e range, derived from the domain's uuid."
    )
    bridge: str = Field("xenbr0", description="The bridge in the backend domain the interface joins.")
    model: str | None = Field(None, description="HVM only: the emulated NIC QEMU shows the guest (e1000, rtl8139, ...).")
    type: VifType | None = Field(
        None, description="HVM only: ioemu (an emulated NIC plus the PV one) or vif (PV only). Unset: ioemu for hvm guests."
    )
    backend: BackendDomid = Field("0", description="The domain id of the backend domain (0 is dom0).")
    mode: VifMode = Field(
        VifMode.BRIDGE,
        description="bridge: the backend interface joins `bridge`. route: dom0 routes the guest's `ip` addresses to it "
        "and answers ARP there (proxy ARP), the interface taking dom0's address on `gatewaydev` (xl's script=vif-route).",
    )
    ip: str | None = Field(
        None, description="The guest's IP addresses (space-separated): routed to it in route mode (IPv4), recorded otherwise."
    )
    gatewaydev: str | None = Field(
        None,
        description="Route mode: the dom0 interface whose IPv4 address the guest reaches dom0 by. "
        "Unset: the interface of dom0's default route.",
    )
    vifname: str | None = Field(None, description="The backend interface's name in the backend domain. Unset: vifDOMID.DEVID.")

    @field_validator("mac")
    @classmethod
    def _mac_is_unicast(cls, mac: str | None) -> str | None:
        if mac is None:
            return None
        if not _MAC.match(mac):
            raise ValueError(f"{_shown(mac)} is not a MAC address; write six hex pairs like 00:16:3e:01:02:03")
        if int(mac[:2], 16) & 1:
            raise ValueError(f"{_shown(mac)} is a multicast address; a NIC needs a unicast one (even first byte), like 00:16:3e:01:02:03")
        return mac.lower()

    @field_validator("bridge")
    @classmethod
    def _bridge_name(cls, bridge: str) -> str:
        return _ifname(bridge, "bridge name")

    @field_validator("vifname", "gatewaydev")
    @classmethod
    def _vif_name(cls, name: str | None) -> str | None:
        return None if name is None else _ifname(name, "interface name")

    @model_validator(mode="after")
    def _routed_addresses(self) -> Vif:
        if self.mode == VifMode.ROUTE:
            if not self.ip:
                raise FieldProblems([(("ip",), "missing; a routed vif needs the guest's IPv4 address(es) to route to it")])
            v6 = [a for a in self.ip.split() if ipaddress.ip_address(a).version != 4]
            if v6:
                raise FieldProblems([(("ip",), f"{v6[0]} is IPv6; route mode routes IPv4 addresses (as Xen's vif-route); "
                                      "use mode: bridge for IPv6")])
        elif self.gatewaydev:
            raise FieldProblems([(("gatewaydev",), "only a routed vif has one; set mode: route, or leave gatewaydev out")])
        return self

    @field_validator("model")
    @classmethod
    def _model_name(cls, model: str | None) -> str | None:
        if model is not None and not re.match(r"^[A-Za-z0-9_-]{1,32}$", model):
            raise ValueError(f"{_shown(model)} is not a NIC model; use a QEMU device name like e1000 or rtl8139")
        return model

    @field_validator("ip")
    @classmethod
    def _addresses(cls, ip: str | None) -> str | None:
        if ip is None:
            return None
        for address in ip.split():
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise ValueError(f"{_shown(address)} is not an IP address; write addresses like 192.0.2.10, separated by spaces") from None
        if not ip.split():
            raise ValueError("empty; give one or more IP addresses, or leave ip out")
        return ip


def _vif_spec(value: Any) -> Any:
    return parse_vif_spec(value) if isinstance(value, str) else value


def disk_adapter() -> TypeAdapter[Disk]:
    """Validates one disk as a config's disks entry does (a dict, or xl's string form)."""
    return TypeAdapter(Annotated[Disk, BeforeValidator(_disk_spec)])


def vif_adapter() -> TypeAdapter[Vif]:
    return TypeAdapter(Annotated[Vif, BeforeValidator(_vif_spec)])


class Vnc(_Section):
    """The VNC server of an HVM guest's emulated display (``vnc: true`` is short for defaults)."""

    enabled: bool = Field(True, description="Whether QEMU serves the display over VNC.")
    listen: str = Field("127.0.0.1", description="The address to listen on. Keep 127.0.0.1 unless the network is trusted.")
    display: Count | None = Field(
        None, ge=0, le=59635, description="The VNC display number; the port is 5900 + display. Unset: the first free one."
    )
    password: str | None = Field(None, description="The VNC password (at most 8 characters, as the VNC protocol allows).")

    @field_validator("listen")
    @classmethod
    def _listen_address(cls, listen: str) -> str:
        try:
            ipaddress.ip_address(listen)
        except ValueError:
            raise ValueError(f"{_shown(listen)} is not an IP address; use one like 127.0.0.1 or 0.0.0.0") from None
        return listen

    @field_validator("password")
    @classmethod
    def _vnc_password(cls, password: str | None) -> str | None:
        if password is not None and len(password) > 8:
            raise ValueError(f"a VNC password has at most 8 characters, not {len(password)}")
        return password


def _vnc_shorthand(value: Any) -> Any:
    return {"enabled": value} if isinstance(value, bool) else value


def _boot_order(value: Any) -> Any:
    if isinstance(value, str):
        return [value] if value in BootDevice._value2member_map_ else parse_boot_letters(value)
    return value


def _viridian(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise ValueError(f"{_shown(value)} is not a viridian setting; use true, false or a list of enlightenment groups")
    for group in value:
        if group not in VIRIDIAN_GROUPS:
            raise ValueError(f"{_shown(group)} is not a viridian group; use {', '.join(VIRIDIAN_GROUPS)}")
    return value


class HvmOptions(_Section):
    """Options for HVM guests only; an hvm guest always has them (defaults when the section is left out)."""

    firmware: Firmware = Field(Firmware.BIOS, description="bios (SeaBIOS) or uefi (OVMF).")
    boot: Annotated[list[BootDevice], BeforeValidator(_boot_order)] = Field(
        [BootDevice.DISK, BootDevice.CDROM],
        min_length=1,
        description="Boot order: a list of disk, cdrom, network (xl's letters, like dc, work too).",
    )
    acpi: bool = Field(True, description="Give the guest ACPI tables (needed for a clean shutdown from the host).")
    viridian: Annotated[bool | list[ViridianGroup], BeforeValidator(_viridian)] = Field(
        False, description="Hyper-V enlightenments for Windows guests: true for libxl's default groups, or a list of groups."
    )
    stdvga: bool = Field(False, description="Emulate a standard VGA card instead of a Cirrus one.")
    hdtype: HdType = Field(
        HdType.IDE,
        description="The emulated controller of the first four disks: ide, or ahci (SATA: the firmware and boot loader "
        "read by DMA, one exit per request instead of several per 512-byte sector, so booting is much faster; "
        "older Windows needs a driver for it). CD-ROMs stay on IDE.",
    )
    videoram: SizeMiB = Field(8, description="Video memory in MiB; taken out of the guest's memory.")
    usb_tablet: bool | None = Field(
        None,
        description="An emulated USB tablet (and its USB controller), so the VNC pointer tracks the guest's. "
        "Unset: one when the guest has a VNC display.",
    )

    @field_validator("boot")
    @classmethod
    def _no_repeats(cls, boot: list[BootDevice]) -> list[BootDevice]:
        if len(set(boot)) != len(boot):
            raise ValueError("each device may appear once in the boot order")
        return boot

    @model_validator(mode="after")
    def _stdvga_video_memory(self) -> HvmOptions:
        # libxl: a standard VGA card gets (and needs) at least 16 MiB.
        if self.stdvga and "videoram" not in self.model_fields_set:
            self.videoram = STDVGA_MIN_VIDEORAM
        elif self.stdvga and self.videoram < STDVGA_MIN_VIDEORAM:
            raise FieldProblems([(("videoram",), f"stdvga needs at least {STDVGA_MIN_VIDEORAM} MiB of video memory, not {self.videoram}")])
        return self


class DeviceModel(_Section):
    """QEMU, the device model that emulates an HVM guest's hardware."""

    path: str | None = Field(None, description="The QEMU binary (xl's device_model_override). Unset: Xen's qemu-system-i386.")
    args: list[str] = Field([], description="Extra arguments appended to QEMU's command line (xl's device_model_args).")
    user: str | None = Field(
        None,
        description="The unprivileged user QEMU runs as (xl's device_model_user). Unset: xen-qemuuser-range-base "
        "(one uid per guest) or xen-qemuuser-shared, as libxl's dm_restrict picks.",
    )
    privileged: bool = Field(
        False,
        description="Run QEMU as root with access to all of Xen and xenstore. Off: QEMU runs restricted "
        "(its own user, -xen-domid-restrict, a chroot), as libxl's dm_restrict.",
    )


class Scheduling(_Section):
    """Weight and cap under Xen's credit and credit2 schedulers, set when the domain is made (as xl's
    cpu_weight= and cap=); `xentool sched-credit2` changes them later."""

    weight: Count | None = Field(None, ge=1, le=65535, description="Share when CPUs are contended; 256 is Xen's default.")
    cap: Count | None = Field(None, ge=0, le=100 * MAX_VCPUS, description="The most CPU it may use, % of one CPU; 0: no cap.")


# -- the guest ----------------------------------------------------------------------------------


PVGRUB = "pvgrub"
PYGRUB = "pygrub"


def _bootloader(value: Any) -> Any:
    """pvgrub, pygrub, or the absolute path of a program (xl's "/usr/bin/pygrub" means pygrub)."""
    if not isinstance(value, str):
        return value
    if value in (PVGRUB, PYGRUB):
        return value
    if re.fullmatch(r"/usr/(bin|lib/xen-[0-9.]+/bin)/pygrub", value):  # where xl.cfg files name Xen's own
        return PYGRUB
    if not value.startswith("/") or "\0" in value or "\n" in value:
        raise ValueError(f"{_shown(value)} is not a bootloader; give pvgrub, pygrub, or the absolute path of a program")
    return value


def _cpus(value: Any) -> Any:
    if isinstance(value, str):
        return [] if value.strip() == "all" else parse_cpu_list(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    return value


def _serial(value: str | None) -> str | None:
    if value is None:
        return None
    if value in ("pty", "stdio", "null", "none", "vc", "mon:stdio") or value.startswith(
        ("file:", "/dev/", "tcp:", "udp:", "unix:", "pipe:", "telnet:")
    ):
        return value
    raise ValueError(f"{_shown(value)} is not a serial backend; use pty, file:/path, /dev/DEVICE, tcp:HOST:PORT, unix:/path or none")


class GuestConfig(BaseModel):
    """A guest: what to boot, with how much memory and how many vcpus, and its devices."""

    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)

    name: Annotated[str, BeforeValidator(validate_domain_name)] = Field(
        description="The domain's name: 1 to 64 letters, digits, '.', '_', '-'; not all digits, not a uuid, not Domain-0."
    )
    type: GuestType = Field(GuestType.PV, description="pv (paravirtualized), pvh (PV in an HVM container) or hvm (fully virtualized).")
    uuid: uuid_module.UUID | None = Field(None, description="The domain's uuid. Unset: a new random one at each create.")
    kernel: str | None = Field(
        None, description="The kernel image to boot. Required for pv and pvh (unless a bootloader finds it); for hvm, a "
        "kernel for QEMU to boot directly. With bootloader: pygrub, a path inside the guest's disk."
    )
    ramdisk: str | None = Field(None, description="The initial ramdisk (initrd) loaded with the kernel.")
    cmdline: str = Field("", description="The kernel command line.")
    bootloader: Annotated[str | None, BeforeValidator(_bootloader)] = Field(
        None,
        description="pv and pvh: boot what the guest's first disk names in its /boot/grub/grub.cfg. pvgrub: Debian's "
        "PVGRUB2 (package grub-xen-host) is the guest's kernel and reads it in the guest; pygrub: Xen's pygrub reads it "
        "in dom0 before the build, as an unprivileged user (kernel, ramdisk and cmdline then override its choice, with "
        "paths inside the disk); or the absolute path of another program that speaks pygrub's options.",
    )
    bootloader_args: list[str] = Field(
        [], description="More arguments for pygrub (or the bootloader program), e.g. --entry=1 for the second menu entry."
    )
    memory: SizeMiB = Field(128, description="Memory at boot, in MiB (or a size like 512M, 2G).")
    maxmem: SizeMiB | None = Field(None, description="The most memory the guest may balloon up to, in MiB. Unset: the same as memory.")
    vcpus: Count = Field(1, ge=1, le=MAX_VCPUS, description="Virtual CPUs online at boot.")
    maxvcpus: Count | None = Field(
        None, ge=1, le=MAX_VCPUS, description="The most virtual CPUs the guest may bring online. Unset: the same as vcpus."
    )
    hap: bool | None = Field(
        None,
        description="HVM and PVH: hardware-assisted paging (EPT/NPT); false: Xen's shadow page tables instead (xl's "
        "hap=0). Unset or true: HAP where the host has it.",
    )
    cpus: Annotated[list[Annotated[Count, Field(ge=0, le=MAX_CPU_ID)]], BeforeValidator(_cpus)] = Field(
        [], description='Physical CPUs the vcpus may run on (a list, or xl\'s "0-3,5"). Empty: any.'
    )
    cpus_soft: Annotated[list[Annotated[Count, Field(ge=0, le=MAX_CPU_ID)]], BeforeValidator(_cpus)] = Field(
        [], description="Physical CPUs the scheduler prefers for the vcpus (soft affinity, within cpus). Empty: any."
    )
    sched: Scheduling | None = Field(None, description="The guest's share of the CPUs under the credit schedulers.")
    pool: str | None = Field(None, description="The cpupool to make it in (xentool cpupool-list). Unset: Pool-0.")
    on_poweroff: Action = Field(Action.DESTROY, description="What to do when the guest powers off.")
    on_reboot: Action = Field(Action.RESTART, description="What to do when the guest reboots.")
    on_crash: Action = Field(Action.DESTROY, description="What to do when the guest crashes.")
    on_watchdog: Action = Field(Action.DESTROY, description="What to do when the guest's watchdog fires.")
    restart_tries: Count = Field(
        3, ge=1, le=1000,
        description="How many times xentool restarts a guest within restart_window seconds (on_* restart) before it "
        "gives up on one that keeps going down, a guest crashing at boot say, and destroys it.",
    )
    restart_window: Count = Field(60, ge=1, le=86400, description="Seconds; see restart_tries.")
    autostart: bool = Field(False, description="A defined guest (xentool define, apply): start it when the host boots.")
    autostart_order: int = Field(0, ge=-1000, le=1000, description="Autostart guests start lowest first (then by name).")
    autostart_delay: float = Field(0, ge=0, le=3600, description="Seconds to wait after autostarting it before the next guest.")
    disks: list[Annotated[Disk, BeforeValidator(_disk_spec)]] = Field([], description="Virtual disks and cdrom drives.")
    vifs: list[Annotated[Vif, BeforeValidator(_vif_spec)]] = Field([], description="Network interfaces.")
    serial: str | None = Field(
        None, description="HVM only: where the emulated serial port goes (pty, file:/path, ...). PV and PVH guests use the console (hvc0)."
    )
    vnc: Annotated[Vnc | None, BeforeValidator(_vnc_shorthand)] = Field(None, description="HVM only: the VNC display.")
    hvm: HvmOptions | None = Field(None, description="HVM only: firmware, boot order and emulated hardware.")
    device_model: DeviceModel | None = Field(None, description="HVM only: how QEMU is run.")

    _source: str | None = PrivateAttr(None)

    @field_validator("serial")
    @classmethod
    def _serial_backend(cls, serial: str | None) -> str | None:
        return _serial(serial)

    @field_validator("kernel", "ramdisk")
    @classmethod
    def _path(cls, path: str | None) -> str | None:
        if path is not None and (not path or "\0" in path or "\n" in path):
            raise ValueError("not a file path; give the path of the file, or leave the key out")
        return path

    @model_validator(mode="after")
    def _consistent(self) -> GuestConfig:
        problems: list[tuple[tuple[str | int, ...], str]] = []
        kind = self.type.value
        if self.type in (GuestType.PV, GuestType.PVH) and not self.kernel and not self.bootloader:
            problems.append((("kernel",), f"missing; a {kind} guest boots a kernel directly, so it needs kernel (the image's "
                                          "path), or bootloader: pvgrub or pygrub to boot what its disk names"))
        problems += self._bootloader_problems()
        if self.type != GuestType.HVM:
            for key in ("hvm", "device_model", "serial", "vnc"):
                if getattr(self, key) is not None:
                    problems.append(((key,), f"only hvm guests have {key}; this is a {kind} guest (set type: hvm, or remove {key})"))
        if self.type == GuestType.PV and self.hap is not None:
            problems.append((("hap",), "a pv guest has no paging mode to choose; remove hap, or set type: hvm or pvh"))
        if self.sched and self.sched.cap is not None and self.sched.cap > 100 * self.max_vcpus:
            problems.append((("sched", "cap"), f"{self.sched.cap}% is more than {self.max_vcpus} vcpus can use; "
                                               f"give at most {100 * self.max_vcpus} (0: no cap)"))
        if self.ramdisk and not self.kernel and not self.bootloader:
            problems.append((("ramdisk",), "a ramdisk goes with a kernel; set kernel too, or remove ramdisk"))
        if self.maxmem is not None and self.maxmem < self.memory:
            problems.append(
                (
                    ("maxmem",),
                    f"{self.maxmem} MiB is less than memory ({self.memory} MiB); "
                    "maxmem is what the guest may grow to, so at least memory",
                )
            )
        if self.maxvcpus is not None and self.maxvcpus < self.vcpus:
            problems.append((("maxvcpus",), f"{self.maxvcpus} is less than vcpus ({self.vcpus}); maxvcpus must be at least vcpus"))
        if self.type != GuestType.PV and max(self.maxvcpus or 0, self.vcpus) > HVM_MAX_VCPUS:
            # hvm_info_table.h: the APIC IDs in the MADT and the processor objects stop there.
            key = "maxvcpus" if (self.maxvcpus or 0) > self.vcpus else "vcpus"
            problems.append(((key,), f"a {kind} guest has at most {HVM_MAX_VCPUS} vcpus; lower {key}"))
        if self.type == GuestType.HVM:
            videoram = self.hvm.videoram if self.hvm else 8
            if self.memory <= videoram:
                problems.append(
                    (("memory",), f"{self.memory} MiB leaves nothing after the {videoram} MiB of video memory; give the guest more")
                )
        seen: dict[int, int] = {}
        for index, disk in enumerate(self.disks):
            devid = vdev_to_devid(disk.vdev)
            if devid in seen:
                first = seen[devid]
                problems.append(
                    (("disks", index, "vdev"), f'"{disk.vdev}" is already used by disks[{first}]; every disk needs its own vdev')
                )
            else:
                seen[devid] = index
        macs: dict[str, int] = {}
        for index, vif in enumerate(self.vifs):
            if vif.mac and vif.mac in macs:
                problems.append(
                    (("vifs", index, "mac"), f'"{vif.mac}" is already used by vifs[{macs[vif.mac]}]; every vif needs its own MAC')
                )
            elif vif.mac:
                macs[vif.mac] = index
            if self.type == GuestType.HVM and vif.mode == VifMode.ROUTE and vif.type != VifType.VIF:
                problems.append((("vifs", index, "mode"), "an emulated NIC's tap joins a bridge; a routed vif of an hvm guest "
                                 "must be PV only (type: vif), or use mode: bridge"))
        if problems:
            raise FieldProblems(problems)
        # Fill in what defaults to another field, so the dump (and the record) says what was built.
        if self.maxmem is None:
            self.maxmem = self.memory
        if self.maxvcpus is None:
            self.maxvcpus = self.vcpus
        if self.type == GuestType.HVM and self.hvm is None:
            self.hvm = HvmOptions()
        return self

    def _bootloader_problems(self) -> list[tuple[tuple[str | int, ...], str]]:
        if self.bootloader is None:
            return [(("bootloader_args",), "these are a bootloader's; set bootloader too, or remove them")] if self.bootloader_args else []
        if self.type == GuestType.HVM:
            return [(("bootloader",), "an hvm guest boots from its disk through its own firmware; remove bootloader")]
        problems: list[tuple[tuple[str | int, ...], str]] = []
        if self.bootloader == PVGRUB:
            for key in ("kernel", "ramdisk", "bootloader_args"):
                if getattr(self, key):
                    problems.append(((key,), "pvgrub is the guest's kernel and reads the rest from the guest's own "
                                             f"grub.cfg; remove {key}, or use bootloader: pygrub"))
        disks = [d for d in self.disks if d.devtype == DevType.DISK]
        if not disks:
            problems.append((("bootloader",), f"{self.bootloader} reads the guest's first disk, and it has none; add one to disks"))
        elif self.bootloader != PVGRUB and disks[0].format != DiskFormat.RAW:
            index = self.disks.index(disks[0])
            problems.append((("disks", index, "format"), f"{self.bootloader} reads the first disk in dom0, and reads raw "
                                                          "images only; convert it (qemu-img convert -O raw) or use bootloader: pvgrub"))
        return problems

    @property
    def source(self) -> str | None:
        """Where the config came from (a file name, "<dict>"); not part of the config itself."""
        return self._source

    def as_data(self) -> dict[str, Any]:
        """The config as plain data (JSON types, unset keys left out): one form for what records
        and definitions keep, what the daemon's API carries, and what `apply` compares."""
        return self.model_dump(mode="json", exclude_none=True, exclude={"source"})

    @property
    def memory_kib(self) -> int:
        return self.memory * 1024

    @property
    def maxmem_kib(self) -> int:
        return (self.maxmem or self.memory) * 1024

    @property
    def max_vcpus(self) -> int:
        return self.maxvcpus or self.vcpus

    @property
    def videoram_kib(self) -> int:
        """The video memory QEMU takes out of an HVM guest's RAM (0 for other types)."""
        return self.hvm.videoram * 1024 if self.type == GuestType.HVM and self.hvm else 0

    def __eq__(self, other: object) -> bool:
        # Two configs saying the same thing are equal wherever they were read from.
        if not isinstance(other, GuestConfig):
            return NotImplemented
        return self.__dict__ == other.__dict__

    __hash__ = None  # type: ignore[assignment]
