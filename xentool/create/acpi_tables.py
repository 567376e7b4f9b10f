"""The ACPI tables of a PVH guest, as libxl builds them, in pure Python.

A PVH guest has no firmware, so the toolstack writes the ACPI tables into guest memory itself.
libxl does this with tools/libacpi (a static library that Xen does not install) from
``libxl__dom_load_acpi`` (tools/libs/light/libxl_x86_acpi.c). It passes the result to libxenguest as
three entries of ``xc_dom_image.acpi_modules[]``. ``xc_dom_build_image`` copies them into guest
memory, and ``bootlate_hvm`` puts the address of module 0 into ``hvm_start_info.rsdp_paddr``.

This module builds the same tables with the same addresses:

====================  =============================  ==========================================
acpi_modules[]        guest physical address         contents
====================  =============================  ==========================================
0  RSDP (64 bytes)    just after the tables, or      RSDP revision 2 -> XSDT (and RSDT)
                      0xFFFC0 for an old Linux
1  info page (4 KiB)  0xFC000000                     libacpi's ``struct acpi_info``
2  tables             0xFC001000                     FACS, DSDT, FADT rev 1, FADT rev 5, MADT,
                                                     XSDT, RSDT
====================  =============================  ==========================================

For a PVH domain libxl sets no ``ACPI_HAS_*`` flag at all. So there is no IOAPIC, HPET, PM timer,
fixed-feature button, VGA, i8042 or CMOS RTC. The FADT says so in its IA-PC boot flags, and this is
what stops Linux from probing rtc_cmos and i8042. The MADT has one local APIC per possible vcpu,
enabled for the vcpus that are online at boot.

The one deliberate difference from libxl is the DSDT. libxl loads a prebuilt 27 KiB AML blob with
128 processor objects and ACPI CPU-hotplug methods. Those methods drive I/O ports 0xAF00 and the
GPE0 block, which only QEMU emulates, and only for HVM guests. For a PVH domU, Xen drops writes to
them and reads return all ones. So here the DSDT holds just one processor device per possible vcpu,
which is what a Linux guest reads from it. See ``_dsdt``.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

PAGE_SIZE = 4096

# xen/include/public/hvm/hvm_info_table.h: the local APIC ID scheme (2 * vcpu, in a byte-wide MADT
# field) and the AML processor IDs stop at 128 vcpus for HVM and PVH guests.
HVM_MAX_VCPUS = 128

# tools/libacpi/libacpi.h and libxl_x86_acpi.c: the acpi_info page, with the tables right after it
# "to avoid fracturing e820". Both sit in the MMIO hole below the local APIC.
ACPI_INFO_PHYSICAL_ADDRESS = 0xFC000000
ACPI_TABLES_ADDRESS = ACPI_INFO_PHYSICAL_ADDRESS + PAGE_SIZE
LAPIC_BASE_ADDRESS = 0xFEE00000

# Linux kernels that do not advertise XENFEAT_linux_rsdp_unrestricted ignore rsdp_paddr. They
# find the RSDP only with the BIOS-area scan, so libxl puts it in the last 64 bytes below 1 MiB.
LOW_RSDP_ADDRESS = 0x100000 - 64
RSDP_MODULE_LENGTH = 64  # libxl loads 64 bytes although the RSDP is 36 bytes long
XENFEAT_LINUX_RSDP_UNRESTRICTED = 15  # xen/include/public/features.h

E820_ACPI = 3  # libxl gives each ACPI module an "ACPI reclaimable" e820 entry, not "reserved"

# The common table header (tools/libacpi/acpi2_0.h). Guests see "Xen"/"HVM" with creator "HVML",
# as in every table libxl makes, so any OS quirk keyed on them behaves the same under xentool.
OEM_ID = b"Xen"
OEM_TABLE_ID = b"HVM"
OEM_REVISION = 0
CREATOR_ID = b"HVML"
CREATOR_REVISION = 0
_HEADER = struct.Struct("<4sIBB6s8sI4sI")
HEADER_LENGTH = _HEADER.size  # 36
CHECKSUM_OFFSET = 9

# Table revisions libxl uses. FADT revision 5 is the first with the "no CMOS RTC" boot flag.
RSDP_REVISION = 2
RSDT_REVISION = 1
XSDT_REVISION = 1
FADT_REVISION = 5
FADT_V1_REVISION = 1
MADT_REVISION = 2
DSDT_REVISION = 5  # >= 2: AML integers are 64-bit
FACS_VERSION = 1

FADT_LENGTH = 268  # ACPI 5.0 FADT, up to and including SLEEP_STATUS_REG
FADT_V1_LENGTH = 116  # ACPI 1.0 FADT, up to and including Flags
FACS_LENGTH = 64
RSDP_LENGTH = 36
ACPI_INFO_LENGTH = 40

# FADT fixed-feature flags (acpi2_0.h / ACPI 5.0 table 5-35).
FADT_WBINVD = 1 << 0
FADT_PROC_C1 = 1 << 2
FADT_PWR_BUTTON = 1 << 4  # set: there is NO fixed-feature power button
FADT_SLP_BUTTON = 1 << 5  # set: there is NO fixed-feature sleep button
FADT_FIX_RTC = 1 << 6
FADT_TMR_VAL_EXT = 1 << 8
FADT_USE_PLATFORM_CLOCK = 1 << 15
# libacpi's static FADT flags, plus both "no button" flags because PVH has no ACPI_HAS_BUTTONS.
# Neither HW_REDUCED_ACPI (bit 20) nor RESET_REG_SUP (bit 10) is set, as in libxl.
PVH_FADT_FLAGS = (FADT_WBINVD | FADT_PROC_C1 | FADT_FIX_RTC | FADT_TMR_VAL_EXT | FADT_USE_PLATFORM_CLOCK
                  | FADT_PWR_BUTTON | FADT_SLP_BUTTON)

# FADT IA-PC boot architecture flags. PVH has no VGA and no CMOS RTC. It has no i8042 either, which
# the FADT says by leaving bit 1 ("8042") clear; bit 0 ("legacy devices") stays clear too.
IAPC_NO_VGA = 1 << 2
IAPC_NO_CMOS_RTC = 1 << 5
PVH_IAPC_BOOT_ARCH = IAPC_NO_VGA | IAPC_NO_CMOS_RTC

# The PM1a event/control and GPE0 blocks that libacpi's static FADT describes. These are the
# ACPI_*_ADDRESS_V1 ports in xen/include/public/hvm/ioreq.h. Nothing emulates them for a PVH
# domU, so reads return all ones and writes are dropped. They are still given, as by libxl,
# because an FADT without HW_REDUCED_ACPI must have PM1a blocks: ACPICA complains otherwise and
# reads SCI_EN from PM1a_CNT to conclude the system is already in ACPI mode. There is no PM timer
# block, because Xen emulates the PM timer only with XEN_X86_EMU_PM, which PVH does not have.
PM1A_EVT_BLK = 0xB000
PM1A_CNT_BLK = 0xB004
GPE0_BLK = 0xAFE0
PM1_EVT_LEN = 4
PM1_CNT_LEN = 2
GPE0_BLK_LEN = 4
SCI_INT = 9
P_LVL_LAT_NONE = 0x0FFF  # above 100 (C2) and 1000 (C3) microseconds: no C2/C3 states
RESET_PORT = 0xCF9  # given as in libxl, but RESET_REG_SUP stays clear, so guests do not use it
RESET_VALUE = 6

GAS_SYSTEM_IO = 1
_GAS = struct.Struct("<BBBBQ")  # space id, bit width, bit offset, access size, address

# MADT (acpi2_0.h): the local APIC entry of each vcpu, "PC-AT compatible" as libacpi sets it.
MADT_PCAT_COMPAT = 1 << 0
MADT_TYPE_LOCAL_APIC = 0
MADT_LOCAL_APIC_LENGTH = 8
MADT_LAPIC_ENABLED = 1 << 0
MADT_FIXED_LENGTH = HEADER_LENGTH + 8  # + local APIC address + flags


def lapic_id(vcpu: int) -> int:
    """Xen's HVM/PVH vLAPIC ID of a vcpu, which the MADT must match (libxl's acpi_lapic_id)."""
    return vcpu * 2


def rsdp_must_be_below_1mib(guest_os: str, rsdp_unrestricted: bool) -> bool:
    """libxl's placement rule, from what xc_dom_parse_image read from the kernel's ELF notes.

    ``guest_os`` is ``xc_dom_guest_os(dom)``, and ``rsdp_unrestricted`` is
    ``xc_dom_feature_get(dom, XENFEAT_linux_rsdp_unrestricted)``. Only a Linux kernel that does
    not claim the feature needs the BIOS-area copy. Linux built with CONFIG_XEN_PVH claims it.
    """
    return guest_os == "linux" and not rsdp_unrestricted


@dataclass(frozen=True)
class AcpiModule:
    """One ``xc_hvm_firmware_module`` for ``acpi_modules[]``: bytes and where they go.

    libxenguest accepts any address. It copies ``data`` to ``guest_addr``, populating the pages
    that this touches.
    """

    name: str
    guest_addr: int
    data: bytes

    @property
    def length(self) -> int:
        return len(self.data)

    @property
    def e820_range(self) -> tuple[int, int]:
        """(address, size) of the e820 entry that libxl's domain_construct_memmap gives the module.

        The entry starts at the module's page and ends at the module's last byte.
        """
        offset = self.guest_addr % PAGE_SIZE
        return self.guest_addr - offset, self.length + offset


@dataclass(frozen=True)
class AcpiBlobs:
    """What the PVH builder loads: the three modules in ``acpi_modules[]`` order, and the tables' map.

    ``table_addrs`` maps each table's name ("FACS", "DSDT", "FADT1" for the revision 1 FADT behind
    the RSDT, "FADT", "MADT", "XSDT", "RSDT") to its guest physical address. Tests and ``--dry-run``
    use it. The builder does not need it.
    """

    rsdp: AcpiModule
    info: AcpiModule
    tables: AcpiModule
    table_addrs: Mapping[str, int]

    @property
    def rsdp_paddr(self) -> int:
        """What ends up in hvm_start_info.rsdp_paddr: libxenguest takes acpi_modules[0]'s address."""
        return self.rsdp.guest_addr

    def modules(self) -> tuple[AcpiModule, AcpiModule, AcpiModule]:
        """In ``acpi_modules[]`` order. Module 0 must be the RSDP, because bootlate_hvm reads it."""
        return self.rsdp, self.info, self.tables

    def e820_ranges(self) -> tuple[tuple[int, int], ...]:
        """(address, size) of the E820_ACPI entries libxl adds to a PVH memory map, one per module.

        With the RSDP below 1 MiB, its entry overlaps the low RAM entry, as it does under libxl.
        """
        return tuple(module.e820_range for module in self.modules())

    def table(self, name: str) -> bytes:
        """The bytes of one table, by the names in ``table_addrs``."""
        offset = self.table_addrs[name] - self.tables.guest_addr
        # Every table, the FACS too (which has no checksum), has its length at byte 4.
        length = struct.unpack_from("<I", self.tables.data, offset + 4)[0]
        return self.tables.data[offset:offset + length]


def build_pvh_acpi(vcpus: int, max_vcpus: int, *, rsdp_below_1mib: bool = False) -> AcpiBlobs:
    """The ACPI tables of a PVH guest with ``max_vcpus`` vcpus, the first ``vcpus`` online at boot.

    ``rsdp_below_1mib`` comes from ``rsdp_must_be_below_1mib``. It is false for any kernel that
    reads ``hvm_start_info.rsdp_paddr``. Then the RSDP goes on the page after the tables, as libxl
    places it.
    """
    if not 1 <= max_vcpus <= HVM_MAX_VCPUS:
        raise ValueError(f"a PVH guest's ACPI tables describe 1 to {HVM_MAX_VCPUS} vcpus, not max_vcpus={max_vcpus}")
    if not 1 <= vcpus <= max_vcpus:
        raise ValueError(f"vcpus={vcpus} must be between 1 and max_vcpus={max_vcpus}")

    dsdt = _dsdt(vcpus, max_vcpus)
    madt_length = MADT_FIXED_LENGTH + MADT_LOCAL_APIC_LENGTH * max_vcpus
    # The order in which libacpi's acpi_build_tables allocates. The FACS must be 64-byte aligned.
    layout = _Layout(ACPI_TABLES_ADDRESS)
    addr = {
        "FACS": layout.place(FACS_LENGTH, align=64),
        "DSDT": layout.place(len(dsdt)),
        "FADT1": layout.place(FADT_V1_LENGTH),
        "FADT": layout.place(FADT_LENGTH),
        "MADT": layout.place(madt_length),
    }
    secondary = [addr["MADT"]]  # the tables after the FADT in both the XSDT and the RSDT
    addr["XSDT"] = layout.place(HEADER_LENGTH + 8 * (1 + len(secondary)))
    addr["RSDT"] = layout.place(HEADER_LENGTH + 4 * (1 + len(secondary)))

    fadt = _fadt(facs=addr["FACS"], dsdt=addr["DSDT"])
    madt = _madt(vcpus, max_vcpus)
    contents = {
        "FACS": _facs(),
        "DSDT": dsdt,
        "FADT1": _fadt_v1(fadt),
        "FADT": fadt,
        "MADT": madt,
        "XSDT": _sdt(b"XSDT", XSDT_REVISION, struct.pack(f"<{1 + len(secondary)}Q", addr["FADT"], *secondary)),
        "RSDT": _sdt(b"RSDT", RSDT_REVISION, struct.pack(f"<{1 + len(secondary)}I", addr["FADT1"], *secondary)),
    }
    tables = bytearray(layout.pages() * PAGE_SIZE)
    for name, data in contents.items():
        offset = addr[name] - ACPI_TABLES_ADDRESS
        tables[offset:offset + len(data)] = data

    rsdp_addr = LOW_RSDP_ADDRESS if rsdp_below_1mib else ACPI_TABLES_ADDRESS + len(tables)
    info = _acpi_info(max_vcpus, madt_addr=addr["MADT"])
    return AcpiBlobs(
        rsdp=AcpiModule("RSDP", rsdp_addr, _rsdp(rsdt=addr["RSDT"], xsdt=addr["XSDT"])),
        info=AcpiModule("acpi_info", ACPI_INFO_PHYSICAL_ADDRESS, info),
        tables=AcpiModule("tables", ACPI_TABLES_ADDRESS, bytes(tables)),
        table_addrs=MappingProxyType(addr),
    )


# -- layout and checksums -----------------------------------------------------------------------------
class _Layout:
    """A bump allocator over guest physical addresses.

    Each table is 16-byte aligned, as libacpi's allocator aligns them. libxl's allocator keeps the
    address of the last byte where it should keep the one after it. That can make two tables share
    a byte. This one does not copy that bug.
    """

    def __init__(self, start: int) -> None:
        self.start = self.next = start

    def place(self, size: int, align: int = 16) -> int:
        addr = -(-self.next // align) * align
        self.next = addr + size
        return addr

    def pages(self) -> int:
        return -(-(self.next - self.start) // PAGE_SIZE)


def checksum(data: bytes | bytearray) -> int:
    """The byte that makes ``data`` sum to zero modulo 256 (ACPI's table checksum)."""
    return -sum(data) & 0xFF


def _sdt(signature: bytes, revision: int, body: bytes) -> bytes:
    """A System Description Table: the common header with length and checksum, then ``body``."""
    table = bytearray(_HEADER.pack(signature, HEADER_LENGTH + len(body), revision, 0, OEM_ID, OEM_TABLE_ID,
                                   OEM_REVISION, CREATOR_ID, CREATOR_REVISION) + body)
    table[CHECKSUM_OFFSET] = checksum(table)
    return bytes(table)


def _gas(space_id: int, bit_width: int, address: int) -> bytes:
    return _GAS.pack(space_id, bit_width, 0, 0, address)


_NO_GAS = bytes(_GAS.size)


# -- the tables ---------------------------------------------------------------------------------------
def _rsdp(rsdt: int, xsdt: int) -> bytes:
    """RSDP revision 2, padded to the 64 bytes libxl loads (and gives an e820 entry)."""
    rsdp = bytearray(struct.pack("<8sB6sBIIQB3x", b"RSD PTR ", 0, OEM_ID, RSDP_REVISION, rsdt, RSDP_LENGTH, xsdt, 0))
    rsdp[8] = checksum(rsdp[:20])  # the ACPI 1.0 part
    rsdp[32] = checksum(rsdp)  # the whole 36 bytes
    return bytes(rsdp).ljust(RSDP_MODULE_LENGTH, b"\0")


def _facs() -> bytes:
    """An empty FACS: libacpi's, with no waking vector (PVH guests have no S3) and no global lock."""
    return struct.pack("<4sIIIIIQB31x", b"FACS", FACS_LENGTH, 0, 0, 0, 0, 0, FACS_VERSION)


def _fadt(facs: int, dsdt: int) -> bytes:
    """FADT revision 5 with libacpi's values for a PVH guest.

    It is not hardware-reduced: libacpi describes the PM1a and GPE0 blocks of an HVM guest. There
    is no PM timer and no fixed buttons, and the boot flags say no VGA, no CMOS RTC and no i8042.
    SLEEP_CONTROL/SLEEP_STATUS are left empty. No \\_S5 in the DSDT goes with that (see ``_dsdt``).
    """
    body = b"".join((
        struct.pack("<II", facs, dsdt),
        struct.pack("<BBHIBBBB", 0, 0, SCI_INT, 0, 0, 0, 0, 0),  # INT_MODEL, PM profile, SCI, SMI_CMD...
        struct.pack("<8I", PM1A_EVT_BLK, 0, PM1A_CNT_BLK, 0, 0, 0, GPE0_BLK, 0),  # PM1a/b, PM2, PM_TMR, GPE0/1
        struct.pack("<8B", PM1_EVT_LEN, PM1_CNT_LEN, 0, 0, GPE0_BLK_LEN, 0, 0, 0),
        struct.pack("<HHHH", P_LVL_LAT_NONE, P_LVL_LAT_NONE, 0, 0),  # P_LVL2/3_LAT, FLUSH_SIZE/STRIDE
        struct.pack("<BBBBBHBI", 0, 0, 0, 0, 0, PVH_IAPC_BOOT_ARCH, 0, PVH_FADT_FLAGS),
        _gas(GAS_SYSTEM_IO, 8, RESET_PORT),
        struct.pack("<B3x", RESET_VALUE),
        struct.pack("<QQ", facs, dsdt),  # X_FIRMWARE_CTRL, X_DSDT
        _gas(GAS_SYSTEM_IO, PM1_EVT_LEN * 8, PM1A_EVT_BLK),
        _NO_GAS,  # X_PM1b_EVT_BLK
        _gas(GAS_SYSTEM_IO, PM1_CNT_LEN * 8, PM1A_CNT_BLK),
        _NO_GAS * 3,  # X_PM1b_CNT_BLK, X_PM2_CNT_BLK, X_PM_TMR_BLK
        _NO_GAS * 2,  # X_GPE0_BLK (libacpi gives only the 32-bit GPE0_BLK), X_GPE1_BLK
        _NO_GAS * 2,  # SLEEP_CONTROL_REG, SLEEP_STATUS_REG
    ))
    fadt = _sdt(b"FACP", FADT_REVISION, body)
    assert len(fadt) == FADT_LENGTH
    return fadt


def _fadt_v1(fadt: bytes) -> bytes:
    """The revision 1 FADT behind the RSDT, for OSes that read only ACPI 1.0 tables.

    libacpi adds it because such OSes overflow a 116-byte buffer on a longer FADT. It is the
    first 116 bytes of the real FADT, with IAPC_BOOT_ARCH zeroed because ACPI 1.0 reserves it.
    libxl's copy also keeps the PM timer and drops the button flags, by accident of ordering in
    acpi_build_tables. This one has neither mistake.
    """
    v1 = bytearray(fadt[:FADT_V1_LENGTH])
    struct.pack_into("<I", v1, 4, FADT_V1_LENGTH)
    v1[8] = FADT_V1_REVISION
    struct.pack_into("<H", v1, 109, 0)
    v1[CHECKSUM_OFFSET] = 0
    v1[CHECKSUM_OFFSET] = checksum(v1)
    return bytes(v1)


def _madt(vcpus: int, max_vcpus: int) -> bytes:
    """MADT: the local APIC base and one local APIC per possible vcpu, with no IOAPIC for PVH.

    Vcpus past ``vcpus`` get a disabled entry rather than none. Linux counts disabled entries as
    possible CPUs, which is what lets it bring them up later when xenstore's
    cpu/N/availability says so. The ACPI processor ID is the vcpu number, which the DSDT's _UIDs
    match.
    """
    entries = b"".join(
        struct.pack("<BBBBI", MADT_TYPE_LOCAL_APIC, MADT_LOCAL_APIC_LENGTH, vcpu, lapic_id(vcpu),
                    MADT_LAPIC_ENABLED if vcpu < vcpus else 0)
        for vcpu in range(max_vcpus)
    )
    return _sdt(b"APIC", MADT_REVISION, struct.pack("<II", LAPIC_BASE_ADDRESS, MADT_PCAT_COMPAT) + entries)


def _acpi_info(max_vcpus: int, madt_addr: int) -> bytes:
    """libacpi's ``struct acpi_info`` page at ACPI_INFO_PHYSICAL_ADDRESS.

    Only libxl's DSDT reads this page, and ours does not. It is filled the same way all the same.
    That keeps the guest's memory map and e820 identical to an xl-built guest, and libxl's DSDT,
    loaded for comparison, would still find what it expects. For PVH there are no COM, LPT or HPET
    bits, no PCI hole and no VM generation ID.
    """
    info = struct.pack("<BxHIIIIIQQ", 0, max_vcpus, 0, 0,
                       madt_addr + CHECKSUM_OFFSET,  # madt_csum_addr
                       madt_addr + MADT_FIXED_LENGTH,  # madt_lapic0_addr
                       0, 0, 0)
    assert len(info) == ACPI_INFO_LENGTH
    return info.ljust(PAGE_SIZE, b"\0")


# -- the DSDT -----------------------------------------------------------------------------------------
def _dsdt(vcpus: int, max_vcpus: int) -> bytes:
    """A DSDT with one processor device per possible vcpu, and nothing else.

    What a Linux guest reads from the DSDT: ``\\_SB.PRxx`` devices with _HID "ACPI0007" and
    _UID = vcpu. Linux's ACPI processor driver finds each one's MADT local APIC through the _UID.
    _STA says which vcpus are present at boot, matching the MADT's enabled bits. libxl's _STA reads
    the same bit from the MADT.

    What is left out of libxl's DSDT, and why:

    * its 128 ``Processor()`` objects. We declare only ``max_vcpus``, as devices, the form ACPI 6
      prefers; libxl's _STA also hides the ones past max_vcpus.
    * the CPU-hotplug machinery (PRST at I/O port 0xAF00, PRSC, \\_GPE._E02, _MAT/_EJ0, and the
      acpi_info "BIOS" region they use). Only QEMU emulates it, for HVM. A PVH guest adds vcpus
      through xenstore instead.
    * There is no \\_S5, as in libxl. Xen drops the guest's write to PM1a_CNT. With \\_S5, Linux
      would try that ACPI power-off and then carry on running instead of halting. Without it,
      Linux halts every CPU with interrupts off, and Xen's hvm_vcpu_down turns that into
      SHUTDOWN_poweroff.
    """
    devices = b"".join(
        _aml_device(f"PR{vcpu:02X}", _aml_name("_HID", _aml_string("ACPI0007"))
                    + _aml_name("_UID", _aml_integer(vcpu))
                    + _aml_method("_STA", _aml_return(_aml_integer(0x0F if vcpu < vcpus else 0))))
        for vcpu in range(max_vcpus)
    )
    return _sdt(b"DSDT", DSDT_REVISION, _aml_scope(b"\\_SB_", devices))


# AML encoding (ACPI 6.5 chapter 20). Only the few terms the DSDT above uses.
AML_ZERO_OP = 0x00
AML_ONE_OP = 0x01
AML_NAME_OP = 0x08
AML_BYTE_PREFIX = 0x0A
AML_WORD_PREFIX = 0x0B
AML_DWORD_PREFIX = 0x0C
AML_STRING_PREFIX = 0x0D
AML_QWORD_PREFIX = 0x0E
AML_SCOPE_OP = 0x10
AML_METHOD_OP = 0x14
AML_RETURN_OP = 0xA4
AML_EXT_OP_PREFIX = 0x5B
AML_DEVICE_OP = 0x82  # after AML_EXT_OP_PREFIX


def _aml_pkg_length(payload: int) -> bytes:
    """PkgLength for ``payload`` bytes: the length counts its own 1 to 4 encoding bytes.

    One byte holds up to 63. Longer lengths put the byte count in bits 7-6 of the lead byte, the low
    4 bits of the length in its bits 3-0, and the rest in the following bytes, low byte first.
    """
    if payload + 1 <= 0x3F:
        return bytes((payload + 1,))
    for extra in (1, 2, 3):
        total = payload + 1 + extra
        if total < 1 << (4 + 8 * extra):
            rest = (total >> 4).to_bytes(extra, "little")
            return bytes(((extra << 6) | (total & 0x0F),)) + rest
    raise ValueError(f"AML package of {payload} bytes is too long")


def _aml_nameseg(name: str) -> bytes:
    """A 4-character NameSeg, padded with '_' as ASL pads short names."""
    seg = name.ljust(4, "_").encode("ascii")
    if len(seg) != 4 or not (seg[:1].isupper() or seg[:1] == b"_"):
        raise ValueError(f"bad AML name segment {name!r}")
    return seg


def _aml_integer(value: int) -> bytes:
    if value == 0:
        return bytes((AML_ZERO_OP,))
    if value == 1:
        return bytes((AML_ONE_OP,))
    for prefix, fmt in ((AML_BYTE_PREFIX, "<B"), (AML_WORD_PREFIX, "<H"), (AML_DWORD_PREFIX, "<I"),
                        (AML_QWORD_PREFIX, "<Q")):
        if value < 1 << (8 * struct.calcsize(fmt)):
            return bytes((prefix,)) + struct.pack(fmt, value)
    raise ValueError(f"AML integer {value} does not fit in 64 bits")


def _aml_string(value: str) -> bytes:
    return bytes((AML_STRING_PREFIX,)) + value.encode("ascii") + b"\0"


def _aml_name(name: str, value: bytes) -> bytes:
    return bytes((AML_NAME_OP,)) + _aml_nameseg(name) + value


def _aml_return(value: bytes) -> bytes:
    return bytes((AML_RETURN_OP,)) + value


def _aml_method(name: str, body: bytes, args: int = 0) -> bytes:
    """Method(name, args, NotSerialized) { body }."""
    inner = _aml_nameseg(name) + bytes((args & 0x7,)) + body
    return bytes((AML_METHOD_OP,)) + _aml_pkg_length(len(inner)) + inner


def _aml_device(name: str, body: bytes) -> bytes:
    inner = _aml_nameseg(name) + body
    return bytes((AML_EXT_OP_PREFIX, AML_DEVICE_OP)) + _aml_pkg_length(len(inner)) + inner


def _aml_scope(name_string: bytes, body: bytes) -> bytes:
    inner = name_string + body
    return bytes((AML_SCOPE_OP,)) + _aml_pkg_length(len(inner)) + inner


__all__ = [
    "ACPI_INFO_PHYSICAL_ADDRESS",
    "ACPI_TABLES_ADDRESS",
    "E820_ACPI",
    "HVM_MAX_VCPUS",
    "LOW_RSDP_ADDRESS",
    "XENFEAT_LINUX_RSDP_UNRESTRICTED",
    "AcpiBlobs",
    "AcpiModule",
    "build_pvh_acpi",
    "checksum",
    "lapic_id",
    "rsdp_must_be_below_1mib",
]
