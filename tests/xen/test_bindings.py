"""The real backend on a machine without Xen: the bindings compile, load, and fail clearly."""

from __future__ import annotations

import errno
import importlib.machinery
from pathlib import Path

import pytest

from hypercalls.connect import is_dom0
from hypercalls.errors import BackendUnavailable, XenError
from hypercalls.interface import FirmwareModule, XsPerm, perms
from hypercalls.xen import _ffi_build, _lib
from hypercalls.xen.domain_builder import pvh_e820, pvh_layout, required_paging_pool_kib
from hypercalls.xen.errors import xen_error
from hypercalls.xen.store import bits_to_perm, decode_perms, encode_perms, perm_to_bits
from xentool.create.acpi_tables import build_pvh_acpi

needs_toolchain = pytest.mark.skipif(
    bool(_ffi_build.missing_build_prerequisites()),
    reason="gcc, Python.h or libxen-dev missing: " + ", ".join(map(str, _ffi_build.missing_build_prerequisites())),
)


@needs_toolchain
def test_bindings_compile_against_the_installed_headers(tmp_path: Path):
    module = _ffi_build.compile_bindings(tmp_path)
    assert module.parent == tmp_path
    assert any(module.name.endswith(s) for s in importlib.machinery.EXTENSION_SUFFIXES)
    assert [p.name for p in tmp_path.iterdir()] == [module.name]  # no .c or .o left behind


@needs_toolchain
def test_the_module_loads_with_constants_from_the_headers():
    module = _lib.load()
    lib = module.lib
    assert lib.XEN_DOMCTL_CDF_hvm == 1 and lib.XEN_DOMCTL_CDF_hap == 2
    assert lib.XEN_X86_EMU_LAPIC == 1
    assert lib.XEN_X86_EMU_ALL & lib.XEN_X86_EMU_VPCI
    assert (lib.HVM_PARAM_STORE_PFN, lib.HVM_PARAM_STORE_EVTCHN) == (1, 2)
    assert (lib.HVM_PARAM_CONSOLE_PFN, lib.HVM_PARAM_CONSOLE_EVTCHN) == (17, 18)
    assert module.ffi.sizeof("xen_domain_handle_t") == 16
    assert module.ffi.sizeof("struct e820entry") == 20  # packed, as Xen wants it


STRUCTS = [
    "struct xen_domctl_createdomain", "struct xen_domctl_getdomaininfo", "struct xen_sysctl_physinfo",
    "struct evtchn_status", "struct e820entry", "struct xs_permissions", "struct xc_dom_image",
    "struct xc_hvm_firmware_module", "struct xen_arch_domainconfig",
]


@needs_toolchain
@pytest.mark.parametrize("struct", STRUCTS)
def test_struct_layouts_agree_with_the_headers(struct: str):
    # cffi checks a cdef'd struct against the compiler's layout on first use; this is that use.
    assert _lib.load().ffi.sizeof(struct) > 0


@needs_toolchain
def test_our_logger_keeps_the_last_error_instead_of_printing_it():
    module = _lib.load()
    lib, ffi = module.lib, module.ffi
    logger = lib.xentool_logger_new()
    try:
        assert ffi.string(lib.xentool_logger_last(logger)) == b""
    finally:
        lib.xtl_logger_destroy(logger)


@pytest.mark.skipif(is_dom0(), reason="this is a dom0: opening succeeds here")
@needs_toolchain
def test_open_xen_outside_dom0_says_what_to_do():
    from hypercalls.xen import open_xen

    with pytest.raises(BackendUnavailable) as caught:
        open_xen()
    message = str(caught.value)
    assert "/dev/xen/privcmd" in message
    assert "lab" in caught.value.hint and "sim://" in caught.value.hint


def test_missing_build_tools_are_named_with_their_debian_packages(monkeypatch):
    monkeypatch.setattr(_ffi_build, "include_dirs", lambda: [Path("/nonexistent")])
    monkeypatch.setattr(_ffi_build.shutil, "which", lambda name: None)
    missing = _ffi_build.missing_build_prerequisites()
    packages = {m.package for m in missing}
    assert "libxen-dev" in packages and "gcc" in packages
    assert any("xenctrl.h" in m.what for m in missing)


def test_without_compiled_module_or_toolchain_open_xen_raises_backend_unavailable(monkeypatch, tmp_path):
    monkeypatch.setattr(_lib, "PACKAGE_DIR", tmp_path / "pkg")
    monkeypatch.setattr(_lib, "cache_dir", lambda: tmp_path / "cache")
    monkeypatch.setattr(_lib, "_module", None)
    monkeypatch.setattr(
        _ffi_build, "missing_build_prerequisites", lambda: [_ffi_build.Missing("Xen's header xenctrl.h", "libxen-dev")]
    )
    with pytest.raises(BackendUnavailable) as caught:
        _lib.load()
    assert "xenctrl.h" in str(caught.value) and "libxen-dev" in str(caught.value)


def test_loading_finds_the_module_where_the_build_writes_it():
    # _lib keeps its own copy so that loading does not import the build script.
    assert (_lib.MODULE, _lib.PACKAGE_DIR) == (_ffi_build.MODULE, _ffi_build.PACKAGE_DIR)


def test_a_missing_runtime_library_names_its_debian_package(tmp_path):
    error = ImportError("libxenctrl.so.4.17: cannot open shared object file: No such file or directory")
    unavailable = _lib._runtime_library_error(error, tmp_path / "_xenlibs.so")
    assert "libxenctrl.so.4.17" in str(unavailable)
    assert "libxenmisc4.17" in unavailable.hint


def test_errno_becomes_xen_error_with_op_and_domain():
    e = xen_error("xc_domain_create", errno.ENOMEM, 7, "out of memory")
    assert isinstance(e, XenError)
    assert (e.op, e.errno, e.domid) == ("xc_domain_create", errno.ENOMEM, 7)
    assert "xc_domain_create on domain 7 failed: ENOMEM" in str(e)


def test_builder_failures_without_errno_say_what_they_mean():
    assert xen_error("xc_dom_parse_image", 0, 3).errno == errno.EINVAL
    assert xen_error("xc_dom_boot_mem_init", 0, 3).errno == errno.ENOMEM
    assert xen_error("xc_domain_pause", 0, 3).errno == errno.EIO
    assert xen_error("xc_dom_parse_image", errno.ENOENT, 3).errno == errno.ENOENT


def test_xenstore_permission_letters_encode_as_xs_perm_bits():
    assert [perm_to_bits(p) for p in (XsPerm.NONE, XsPerm.READ, XsPerm.WRITE, XsPerm.BOTH)] == [0, 1, 2, 3]
    assert bits_to_perm(3 | 0x08) == XsPerm.BOTH  # XS_PERM_OWNER is internal and ignored
    listed = perms(5, (0, XsPerm.READ), default=XsPerm.NONE)
    assert encode_perms(listed) == [(5, 0), (0, 1)]
    assert decode_perms(encode_perms(listed)) == listed
    with pytest.raises(ValueError):
        encode_perms(())


def test_pvh_memory_layout_matches_libxl():
    layout = pvh_layout(512 * 1024, nr_special_pages=8, end_special_region=0xFF000)
    assert layout.mmio_start == 0xFC000000 and layout.mmio_size == 64 << 20
    assert (layout.lowmem_end, layout.highmem_end) == (512 << 20, 0)
    big = pvh_layout(4 * 1024 * 1024, nr_special_pages=8, end_special_region=0xFF000)
    assert big.lowmem_end == 0xFC000000 and big.highmem_end == (1 << 32) + (64 << 20)
    e820 = pvh_e820(layout, 8, 0xFF000, ram=1, reserved=2)
    assert e820 == [(0, 512 << 20, 1), (0xFEFF8000, 8 * 4096, 2)]


def test_pvh_memory_map_gives_each_acpi_module_an_acpi_entry_from_its_page():
    layout = pvh_layout(512 * 1024, nr_special_pages=8, end_special_region=0xFF000)
    tables = build_pvh_acpi(vcpus=1, max_vcpus=2)
    modules = tuple(FirmwareModule(m.guest_addr, m.data) for m in tables.modules())
    e820 = pvh_e820(layout, 8, 0xFF000, ram=1, reserved=2, acpi=3, firmware=modules)
    acpi = [entry for entry in e820 if entry[2] == 3]
    assert [(addr, size) for addr, size, _ in acpi] == sorted(tables.e820_ranges())
    assert e820 == sorted(e820)  # guests expect the map in address order
    rsdp = tables.rsdp.guest_addr
    assert any(addr <= rsdp and rsdp + 36 <= addr + size for addr, size, _ in acpi)


def test_paging_pool_is_libxls_shadow_memory_estimate():
    assert required_paging_pool_kib(128 * 1024, 1) == 4 * (256 + 256)
