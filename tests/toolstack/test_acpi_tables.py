"""The PVH ACPI tables: well-formed, linked to each other, and saying what libxl's say."""

from __future__ import annotations

import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from xentool.create.acpi_tables import (
    ACPI_INFO_PHYSICAL_ADDRESS,
    ACPI_TABLES_ADDRESS,
    HVM_MAX_VCPUS,
    LOW_RSDP_ADDRESS,
    AcpiBlobs,
    _aml_pkg_length,
    build_pvh_acpi,
    rsdp_must_be_below_1mib,
)

TABLES = ("FACS", "DSDT", "FADT1", "FADT", "MADT", "XSDT", "RSDT")
SIGNATURES = {"FACS": b"FACS", "DSDT": b"DSDT", "FADT1": b"FACP", "FADT": b"FACP", "MADT": b"APIC",
              "XSDT": b"XSDT", "RSDT": b"RSDT"}

# Produced by Xen 4.17.7's own tools/libacpi (build.c, static_tables.c) in a harness that configures it as
# libxl__dom_load_acpi does for a PVH guest with vcpus=2, maxvcpus=4. Its FACS and DSDT land at the same
# addresses as ours (0xFC001000, 0xFC001040), so the FADT must match byte for byte; so must the MADT.
LIBXL_FADT_2_OF_4 = bytes.fromhex(
    "464143500c01000005f158656e00000048564d00000000000000000048564d4c00000000001000fc401000fc0000090000000000"
    "0000000000b000000000000004b00000000000000000000000000000e0af0000000000000402000004000000ff0fff0f00000000"
    "00000000002400007581000001080000f90c00000000000006000000001000fc00000000401000fc000000000120000000b00000"
    "000000000000000000000000000000000110000004b0000000000000000000000000000000000000000000000000000000000000"
    "00000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"
    "0000000000000000"
)
LIBXL_MADT_2_OF_4 = bytes.fromhex(
    "415049434c000000023558656e00000048564d00000000000000000048564d4c000000000000e0fe010000000008000001000000"
    "000801020100000000080204000000000008030600000000"
)


def header(table: bytes) -> tuple[bytes, int, int]:
    signature, length, revision = struct.unpack_from("<4sIB", table)
    return signature, length, revision


def table_at(blobs: AcpiBlobs, addr: int) -> bytes:
    offset = addr - blobs.tables.guest_addr
    assert 0 <= offset < blobs.tables.length, f"{addr:#x} is outside the tables module"
    length = struct.unpack_from("<I", blobs.tables.data, offset + 4)[0]
    return blobs.tables.data[offset:offset + length]


def madt_lapics(madt: bytes) -> list[tuple[int, int, int]]:
    """(ACPI processor id, APIC id, flags) of each local APIC entry."""
    entries, offset = [], 44
    while offset < len(madt):
        kind, length = madt[offset], madt[offset + 1]
        assert length > 0
        if kind == 0:
            entries.append(struct.unpack_from("<BBI", madt, offset + 2))
        offset += length
    return entries


@pytest.fixture(params=[(1, 1), (2, 4), (HVM_MAX_VCPUS, HVM_MAX_VCPUS)], ids=["1of1", "2of4", "128of128"])
def blobs(request) -> AcpiBlobs:
    vcpus, max_vcpus = request.param
    return build_pvh_acpi(vcpus, max_vcpus)


def test_every_table_has_its_signature_length_and_a_zero_checksum(blobs: AcpiBlobs) -> None:
    for name in TABLES:
        table = blobs.table(name)
        signature, length, _ = header(table)
        assert signature == SIGNATURES[name]
        assert length == len(table)
        if name != "FACS":  # the FACS has no checksum
            assert sum(table) % 256 == 0, name


def test_rsdp_is_revision_2_with_both_checksums_and_points_at_the_xsdt_and_rsdt(blobs: AcpiBlobs) -> None:
    rsdp = blobs.rsdp.data
    assert blobs.rsdp.length == 64  # what libxl loads and reserves
    signature, _, oem, revision, rsdt, length, xsdt = struct.unpack_from("<8sB6sBIIQ", rsdp)
    assert (signature, oem, revision, length) == (b"RSD PTR ", b"Xen\0\0\0", 2, 36)
    assert sum(rsdp[:20]) % 256 == 0
    assert sum(rsdp[:36]) % 256 == 0
    assert xsdt == blobs.table_addrs["XSDT"]
    assert rsdt == blobs.table_addrs["RSDT"]


def test_xsdt_lists_the_revision_5_fadt_then_the_madt(blobs: AcpiBlobs) -> None:
    xsdt = blobs.table("XSDT")
    entries = struct.unpack_from(f"<{(len(xsdt) - 36) // 8}Q", xsdt, 36)
    assert [header(table_at(blobs, addr))[:3:2] for addr in entries] == [(b"FACP", 5), (b"APIC", 2)]


def test_rsdt_lists_a_revision_1_fadt_then_the_same_madt(blobs: AcpiBlobs) -> None:
    rsdt = blobs.table("RSDT")
    entries = struct.unpack_from(f"<{(len(rsdt) - 36) // 4}I", rsdt, 36)
    assert entries == (blobs.table_addrs["FADT1"], blobs.table_addrs["MADT"])
    assert header(table_at(blobs, entries[0])) == (b"FACP", 116, 1)


def test_both_fadts_point_at_the_dsdt_and_facs(blobs: AcpiBlobs) -> None:
    facs, dsdt = blobs.table_addrs["FACS"], blobs.table_addrs["DSDT"]
    fadt = blobs.table("FADT")
    assert struct.unpack_from("<II", fadt, 36) == (facs, dsdt)
    assert struct.unpack_from("<QQ", fadt, 132) == (facs, dsdt)  # X_FIRMWARE_CTRL, X_DSDT
    assert struct.unpack_from("<II", blobs.table("FADT1"), 36) == (facs, dsdt)
    assert header(table_at(blobs, dsdt))[0] == b"DSDT"
    assert blobs.table("FACS")[32] == 1  # FACS version
    assert facs % 64 == 0  # the FACS must be 64-byte aligned


def test_fadt_says_no_vga_no_cmos_rtc_and_no_i8042() -> None:
    fadt = build_pvh_acpi(1, 1).table("FADT")
    boot_arch = struct.unpack_from("<H", fadt, 109)[0]
    assert boot_arch & (1 << 2)  # VGA not present
    assert boot_arch & (1 << 5)  # CMOS RTC not present
    assert not boot_arch & (1 << 1)  # no 8042
    assert not boot_arch & (1 << 0)  # no legacy devices


def test_fadt_has_no_fixed_buttons_no_pm_timer_and_is_not_hardware_reduced() -> None:
    fadt = build_pvh_acpi(1, 1).table("FADT")
    flags = struct.unpack_from("<I", fadt, 112)[0]
    assert flags == 0x8175  # libacpi's static flags + PWR_BUTTON + SLP_BUTTON ("no button")
    assert not flags & (1 << 20)  # HW_REDUCED_ACPI
    assert not flags & (1 << 10)  # RESET_REG_SUP
    assert struct.unpack_from("<I", fadt, 76)[0] == 0 and fadt[91] == 0  # PM_TMR_BLK, PM_TMR_LEN
    assert fadt[208:220] == bytes(12)  # X_PM_TMR_BLK
    assert fadt[244:268] == bytes(24)  # SLEEP_CONTROL_REG, SLEEP_STATUS_REG
    assert struct.unpack_from("<II", fadt, 56)[0] == 0xB000 and struct.unpack_from("<I", fadt, 64)[0] == 0xB004


def test_fadt_and_madt_match_what_libxl_builds_byte_for_byte() -> None:
    blobs = build_pvh_acpi(2, 4)
    assert blobs.table_addrs["FACS"] == 0xFC001000 and blobs.table_addrs["DSDT"] == 0xFC001040
    assert blobs.table("FADT") == LIBXL_FADT_2_OF_4
    assert blobs.table("MADT") == LIBXL_MADT_2_OF_4


@pytest.mark.parametrize(("vcpus", "max_vcpus"), [(1, 1), (1, 3), (3, 8), (128, 128), (5, 128)])
def test_madt_has_one_lapic_per_possible_vcpu_enabled_only_for_those_online(vcpus: int, max_vcpus: int) -> None:
    madt = build_pvh_acpi(vcpus, max_vcpus).table("MADT")
    assert struct.unpack_from("<II", madt, 36) == (0xFEE00000, 1)  # local APIC base, PC-AT compatible
    lapics = madt_lapics(madt)
    assert [processor for processor, _, _ in lapics] == list(range(max_vcpus))
    assert [apic for _, apic, _ in lapics] == [2 * vcpu for vcpu in range(max_vcpus)]
    assert [flags & 1 for _, _, flags in lapics] == [1] * vcpus + [0] * (max_vcpus - vcpus)
    assert len(madt) == 44 + 8 * max_vcpus  # no IOAPIC, no interrupt source overrides


def test_dsdt_has_a_processor_device_per_possible_vcpu_and_no_s5() -> None:
    dsdt = build_pvh_acpi(2, 20).table("DSDT")
    assert header(dsdt)[2] == 5
    for vcpu in range(20):
        assert f"PR{vcpu:02X}".encode() in dsdt
    assert b"PR14" not in dsdt  # vcpu 20 does not exist
    assert dsdt.count(b"\x08_HID\x0dACPI0007\x00") == 20
    assert b"_S5_" not in dsdt


def test_dsdt_status_follows_the_madt_enabled_bits() -> None:
    dsdt = build_pvh_acpi(1, 2).table("DSDT")
    sta = b"_STA\x00\xa4"  # Method(_STA, 0) { Return (...) }
    assert dsdt.count(sta + b"\x0a\x0f") == 1  # PR00: present, enabled, shown, functioning
    assert dsdt.count(sta + b"\x00") == 1  # PR01: Zero, not present


def test_tables_sit_after_the_info_page_and_the_rsdp_on_the_page_after_them(blobs: AcpiBlobs) -> None:
    assert blobs.info.guest_addr == ACPI_INFO_PHYSICAL_ADDRESS == 0xFC000000
    assert blobs.info.length == 4096
    assert blobs.tables.guest_addr == ACPI_TABLES_ADDRESS == 0xFC001000
    assert blobs.tables.length % 4096 == 0
    assert blobs.rsdp_paddr == blobs.tables.guest_addr + blobs.tables.length
    assert blobs.modules()[0] is blobs.rsdp  # libxenguest takes rsdp_paddr from acpi_modules[0]
    spans = sorted((addr, addr + len(blobs.table(name))) for name, addr in blobs.table_addrs.items())
    for (_, end), (start, _) in zip(spans, spans[1:], strict=False):
        assert end <= start, "tables overlap"
    assert all(addr % 16 == 0 for addr in blobs.table_addrs.values())
    assert spans[-1][1] <= blobs.tables.guest_addr + blobs.tables.length


def test_an_old_linux_gets_its_rsdp_in_the_bios_area_below_1mib() -> None:
    blobs = build_pvh_acpi(1, 1, rsdp_below_1mib=True)
    assert blobs.rsdp_paddr == LOW_RSDP_ADDRESS == 0xFFFC0
    assert blobs.rsdp_paddr % 16 == 0  # the BIOS-area scan looks at 16-byte boundaries
    assert blobs.rsdp.e820_range == (0xFF000, 0x1000)


@pytest.mark.parametrize(("guest_os", "unrestricted", "low"),
                         [("linux", False, True), ("linux", True, False), ("FreeBSD", False, False)])
def test_only_a_linux_without_the_rsdp_feature_needs_the_low_rsdp(guest_os: str, unrestricted: bool,
                                                                  low: bool) -> None:
    assert rsdp_must_be_below_1mib(guest_os, unrestricted) is low


def test_e820_has_an_acpi_range_per_module_like_libxl() -> None:
    blobs = build_pvh_acpi(2, 4)
    assert blobs.e820_ranges() == (
        (blobs.rsdp_paddr, 64),
        (0xFC000000, 4096),
        (0xFC001000, blobs.tables.length),
    )


def test_info_page_says_where_the_madt_is_and_how_many_vcpus() -> None:
    blobs = build_pvh_acpi(2, 4)
    flags, nr_cpus, pci_min, pci_len, csum_addr, lapic0_addr, vm_gid = struct.unpack_from("<BxHIIIII", blobs.info.data)
    madt = blobs.table_addrs["MADT"]
    assert (flags, nr_cpus, pci_min, pci_len, vm_gid) == (0, 4, 0, 0, 0)
    assert csum_addr == madt + 9
    assert lapic0_addr == madt + 44
    assert blobs.info.data[40:] == bytes(4096 - 40)


@pytest.mark.parametrize(("vcpus", "max_vcpus"), [(0, 1), (2, 1), (1, 0), (1, HVM_MAX_VCPUS + 1)])
def test_impossible_vcpu_counts_are_refused(vcpus: int, max_vcpus: int) -> None:
    with pytest.raises(ValueError, match="vcpus"):
        build_pvh_acpi(vcpus, max_vcpus)


@pytest.mark.parametrize(("payload", "encoded"), [
    (0, b"\x01"), (62, b"\x3f"), (63, b"\x41\x04"), (4093, b"\x4f\xff"), (4094, b"\x81\x00\x01"),
])
def test_aml_package_length_counts_its_own_bytes(payload: int, encoded: bytes) -> None:
    assert _aml_pkg_length(payload) == encoded


IASL = shutil.which("iasl")
needs_iasl = pytest.mark.skipif(IASL is None, reason="iasl not installed (Debian package acpica-tools)")


def run_iasl(*args: str, cwd: Path) -> str:
    result = subprocess.run([IASL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False)
    return result.stdout + result.stderr


@needs_iasl
@pytest.mark.parametrize("name", TABLES)
def test_iasl_disassembles_each_table_without_complaint(name: str, tmp_path: Path) -> None:
    for vcpus, max_vcpus in ((1, 1), (3, 7), (HVM_MAX_VCPUS, HVM_MAX_VCPUS)):
        binary = tmp_path / f"{name}-{max_vcpus}.dat"
        binary.write_bytes(build_pvh_acpi(vcpus, max_vcpus).table(name))
        output = run_iasl("-d", binary.name, cwd=tmp_path)
        listing = binary.with_suffix(".dsl")
        assert listing.exists(), output
        # iasl exits 0 even on a bad checksum or a malformed name, so read what it says.
        text = (output + listing.read_text()).lower()
        for complaint in ("error", "warning", "incorrect", "invalid"):
            assert complaint not in text, f"{name}: {output}"


@needs_iasl
def test_iasl_recompiles_the_disassembled_dsdt_cleanly(tmp_path: Path) -> None:
    (tmp_path / "dsdt.dat").write_bytes(build_pvh_acpi(2, 16).table("DSDT"))
    run_iasl("-d", "dsdt.dat", cwd=tmp_path)
    output = run_iasl("dsdt.dsl", cwd=tmp_path)
    assert "0 Errors, 0 Warnings, 0 Remarks" in output, output
