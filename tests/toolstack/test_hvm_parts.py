"""The HVM pieces that need no Xen: memory layout and params of the build, the serial console
stream, obituaries, VNC display choice, the shutdown path, and an HVM guest on the simulator."""

from __future__ import annotations

import io
import socket
from types import SimpleNamespace

import pytest

from hypercalls.xen.domain_builder import (
    GUEST_LOW_MEM_START,
    VGA_HOLE_PAGES,
    hvm_e820,
    hvm_layout,
    patch_hvm_info,
    viridian_mask,
)
from pvdrivers.console import ConsoleBackend
from xentool import obituaries
from xentool.console.serial import SerialStream
from xentool.devicemodel.vnc import choose_vnc_display, port_is_free
from xentool.errors import DeviceError, UsageError

MIB = 1024 * 1024
GIB = 1024 * MIB
MMIO_256M = 0x10000000  # HVM_BELOW_4G_MMIO_LENGTH


def test_hvm_layout_takes_video_ram_out_and_splits_around_the_mmio_hole():
    small = hvm_layout(512 * 1024, 8 * 1024, MMIO_256M)
    assert small.mem_size == 504 * MIB and small.lowmem_end == 504 * MIB and small.highmem_end == 0
    assert small.mmio_start == 0xF0000000
    big = hvm_layout(8 * 1024 * 1024, 16 * 1024, MMIO_256M)  # 8 GiB, stdvga
    assert big.lowmem_end == 0xF0000000
    assert big.highmem_end == 4 * GIB + (8 * GIB - 16 * MIB - 0xF0000000)
    assert hvm_e820(big, 1) == [(GUEST_LOW_MEM_START, 0xF0000000 - GUEST_LOW_MEM_START, 1),
                                (4 * GIB, big.highmem_end - 4 * GIB, 1)]
    assert VGA_HOLE_PAGES == 0x20  # 0xA0000-0xBFFFF


BITS = SimpleNamespace(**{name: 1 << i for i, name in enumerate([
    "HVMPV_base_freq", "HVMPV_no_freq", "HVMPV_time_ref_count", "HVMPV_reference_tsc", "HVMPV_hcall_remote_tlb_flush",
    "HVMPV_apic_assist", "HVMPV_crash_ctl", "HVMPV_synic", "HVMPV_stimer", "HVMPV_hcall_ipi",
    "HVMPV_ex_processor_masks", "HVMPV_no_vp_limit", "HVMPV_cpu_hotplug"])})


def test_viridian_groups_become_libxls_mask():
    assert viridian_mask((), BITS) == 0
    assert viridian_mask(("base",), BITS) == BITS.HVMPV_base_freq | BITS.HVMPV_no_freq
    defaults = viridian_mask(("defaults",), BITS)
    assert defaults & BITS.HVMPV_base_freq and not defaults & BITS.HVMPV_no_freq
    assert defaults & BITS.HVMPV_apic_assist and not defaults & BITS.HVMPV_synic
    assert viridian_mask(("all",), BITS) & BITS.HVMPV_synic
    with pytest.raises(ValueError, match="base"):
        viridian_mask(("synic",), BITS)


def test_the_hvm_info_table_gets_vcpus_and_sums_to_zero():
    cffi = pytest.importorskip("cffi")
    ffi = cffi.FFI()
    ffi.cdef("struct hvm_info_table { char signature[8]; uint32_t length; uint8_t checksum; uint8_t apic_mode;"
             " uint32_t nr_vcpus; uint32_t low_mem_pgend; uint32_t reserved_mem_pgstart; uint32_t high_mem_pgend;"
             " uint8_t vcpu_online[16]; };")
    table = ffi.new("struct hvm_info_table *")
    table.signature = b"HVM INFO"
    table.length = ffi.sizeof("struct hvm_info_table")
    table.nr_vcpus = 1
    patch_hvm_info(ffi, table, nr_vcpus=12, online_vcpus=10)
    assert table.nr_vcpus == 12 and table.apic_mode == 1
    assert list(table.vcpu_online)[:3] == [0xFF, 0x03, 0x00]
    assert sum(bytes(ffi.buffer(table))) % 256 == 0


def test_the_serial_stream_feeds_the_console_backend_until_qemu_goes():
    qemu, ours = socket.socketpair()
    stream = SerialStream(ours)
    log = io.BytesIO()
    backend = ConsoleBackend(stream, stream, log)  # type: ignore[arg-type]
    qemu.sendall(b"SeaBIOS\r\nxentool-guest: marker=hvm\r\n")
    qemu.close()  # QEMU exits
    rounds = iter(range(50))
    backend.serve(lambda: next(rounds, None) is not None, poll_interval=0.01)
    assert log.getvalue() == b"SeaBIOS\r\nxentool-guest: marker=hvm\r\n"
    assert stream.ended and stream.write_input(b"typed") == 5  # dropped, not held forever


def test_typed_input_reaches_qemu():
    qemu, ours = socket.socketpair()
    stream = SerialStream(ours)
    assert stream.write_input(b"poweroff\n") == 9
    assert qemu.recv(100) == b"poweroff\n"


def test_obituaries_are_found_by_name_uuid_or_domid_and_forgotten(tmp_path):
    obituaries.record("u-1", "web", 7, "its device model died", directory=tmp_path)
    note = obituaries.find("web", directory=tmp_path)
    assert note and note.domid == 7 and "destroyed by xentool" in str(note) and "device model died" in str(note)
    assert obituaries.find("7", directory=tmp_path) == obituaries.find("u-1", directory=tmp_path) == note
    obituaries.forget("u-1", directory=tmp_path)
    assert obituaries.find("web", directory=tmp_path) is None


def test_vnc_display_first_free_and_a_taken_one_refused(make_config):
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    port = holder.getsockname()[1]
    try:
        assert not port_is_free("127.0.0.1", port)
        if 5900 <= port < 5900 + 59636:
            config = make_config(type="hvm", kernel=None, vnc={"display": port - 5900})
            with pytest.raises(DeviceError, match="in use"):
                choose_vnc_display(config)
        assert choose_vnc_display(make_config(type="hvm", kernel=None, vnc=False)) is None
        auto = choose_vnc_display(make_config(type="hvm", kernel=None))
        assert auto is not None and port_is_free("127.0.0.1", 5900 + auto)
    finally:
        holder.close()


def test_an_hvm_guest_on_the_simulator_shuts_down_by_its_power_button(xt, make_config):
    """The simulator runs no QEMU (it says so: runs_device_models), but the lifecycle is the same:
    with no PV drivers, shutdown presses the ACPI power button."""
    created = xt.create(make_config(name="win", type="hvm", kernel=None))
    assert created.type == "hvm" and not xt.hv.hvm_pv_callback_set(created.domid)
    assert xt.shutdown("win", wait=True, timeout=10) == "gone"


def test_rebooting_an_hvm_guest_without_pv_drivers_resets_and_restarts_it(xt, make_config):
    first = xt.create(make_config(name="win", type="hvm", kernel=None))
    assert xt.reboot("win", wait=True, timeout=10) in ("running", "blocked")
    again = xt.lookup("win")
    assert again.uuid == first.uuid and again.domid != first.domid


def test_shutdown_with_acpi_presses_an_hvm_guests_button_and_refuses_a_pv_guest(xt, make_config):
    """--acpi (libvirt's `shutdown --mode acpi`): the power button whatever drivers the guest has;
    a PV guest has none, which is one line naming it, and the guest runs on."""
    xt.create(make_config(name="pv1"))
    with pytest.raises(UsageError, match=r"^domain pv1: a pv guest has no ACPI power button; leave out --acpi"):
        xt.shutdown("pv1", acpi=True)
    assert xt.lookup("pv1").state in ("running", "blocked")
    xt.create(make_config(name="win", type="hvm", kernel=None))
    assert xt.shutdown("win", wait=True, timeout=10, acpi=True) == "gone"
