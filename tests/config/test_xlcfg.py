"""Importing xl.cfg files."""

from __future__ import annotations

import pytest

from hypercalls.interface import GuestType
from xentool.config import import_xl_cfg, load_config_text, xl_cfg_to_yaml
from xentool.config.model import Access, DevType, Firmware
from xentool.config.xlcfg import parse_xl_cfg, xl_config
from xentool.errors import ConfigError

PV_CFG = """\
# A Debian PV guest, as xen-create-image writes them
name        = "debian-pv"
kernel      = "/boot/vmlinuz-6.1.0-18-amd64"
ramdisk     = '/boot/initrd.img-6.1.0-18-amd64'
root        = "/dev/xvda2 ro"
extra       = "console=hvc0 elevator=noop"
memory      = 1024
maxmem      = 2048
vcpus       = 2; maxvcpus = 4
cpus        = "0-3"
disk        = [
                'file:/srv/xen/domains/debian-pv/disk.img,xvda2,w',
                'phy:/dev/vg0/debian-swap,xvda1,w',
              ]
vif         = [ 'mac=00:16:3E:5A:2F:01,bridge=xenbr0,script=vif-bridge' ]
on_poweroff = 'destroy'
on_reboot   = 'restart'
on_crash    = 'preserve'
localtime   = 0
"""

HVM_CFG = """\
builder = 'hvm'
name = "win"
memory = 4096
vcpus = 2
disk = [ 'format=qcow2, vdev=hda, access=rw, target=/var/lib/xen/images/win.qcow2',
         '/srv/iso/install.iso,raw,hdc:cdrom,r' ]
vif = [ 'type=ioemu, model=e1000, bridge=xenbr0' ]
boot = "dc"
acpi = 1
viridian = 1
stdvga = 1
videoram = 16
hdtype = "ahci"
bios = "ovmf"
usb = 1
usbdevice = "tablet"
vnc = 1
vnclisten = "0.0.0.0"
vncdisplay = 3
vncpasswd = "s3cret"
serial = "pty"
device_model_args = [ "-no-shutdown" ]
pae = 1
nosuchthing = "x"
"""


def test_realistic_pv_cfg():
    config, warnings = xl_config(PV_CFG)
    assert (config.name, config.type, config.memory, config.maxmem, config.vcpus, config.max_vcpus) == (
        "debian-pv", GuestType.PV, 1024, 2048, 2, 4
    )
    assert config.cmdline == "root=/dev/xvda2 ro console=hvc0 elevator=noop"
    assert config.cpus == [0, 1, 2, 3]
    assert [(d.target, d.vdev, d.access) for d in config.disks] == [
        ("/srv/xen/domains/debian-pv/disk.img", "xvda2", Access.RW),
        ("/dev/vg0/debian-swap", "xvda1", Access.RW),
    ]
    assert config.vifs[0].mac == "00:16:3e:5a:2f:01"
    assert any("localtime" in w for w in warnings)


def test_realistic_hvm_cfg():
    config, warnings = xl_config(HVM_CFG)
    assert config.type == GuestType.HVM
    assert [b.value for b in config.hvm.boot] == ["cdrom", "disk"]
    assert (config.hvm.firmware, config.hvm.stdvga, config.hvm.videoram, config.hvm.viridian) == (Firmware.UEFI, True, 16, True)
    assert config.hvm.hdtype.value == "ahci"
    assert config.disks[0].format.value == "qcow2" and config.disks[1].devtype == DevType.CDROM
    assert (config.vnc.listen, config.vnc.display, config.vnc.password) == ("0.0.0.0", 3, "s3cret")
    assert config.device_model.args == ["-no-shutdown"] and config.serial == "pty"
    assert any("nosuchthing" in w for w in warnings) and any("pae" in w for w in warnings)


def test_import_returns_data_and_warnings():
    data, warnings = import_xl_cfg('name = "a"\nkernel = "/k"\npae = 1\n')
    assert data == {"name": "a", "kernel": "/k"}
    assert len(warnings) == 1 and "pae" in warnings[0]


@pytest.mark.parametrize("cfg", [PV_CFG, HVM_CFG])
def test_yaml_output_loads_back_equal(tmp_path, cfg):
    path = tmp_path / "guest.cfg"
    path.write_text(cfg)
    text, warnings = xl_cfg_to_yaml(path)
    assert text.startswith(f"# converted from {path} by xentool config import\n")
    assert load_config_text(text, "out.yaml") == xl_config(cfg)[0]
    assert list(load_config_text(text, "out.yaml").model_dump())[:2] == ["name", "type"]


def test_syntax_errors_have_line_numbers():
    with pytest.raises(ConfigError) as caught:
        parse_xl_cfg('name = "a"\nmemory = = 3\nkernel = unquoted\nvcpus = "x\n', "g.cfg")
    lines = [i.line for i in caught.value.issues]
    assert lines == [2, 3, 4]


def test_invalid_values_point_at_the_xl_line():
    with pytest.raises(ConfigError) as caught:
        xl_config('name = "a"\nkernel = "/k"\nmemory = "lots"\n', "g.cfg")
    assert str(caught.value.issues[0]).startswith("g.cfg:3: memory:")


def test_append_and_semicolons():
    settings = parse_xl_cfg('extra = "a"; extra += " b"\ndisk = ["x"]\ndisk += ["y"]\n')
    assert [(s.key, s.value) for s in settings][-1] == ("disk", ["x", "y"])
    assert ("extra", "a b") in [(s.key, s.value) for s in settings]


def test_older_spellings_map_onto_the_same_keys():
    data, warnings = import_xl_cfg(
        'name = "a"\ninitrd = "/i"\nmaxcpus = 4\ntype = "pvh"\nbuilder = "hvm"\nuuid = "u"\non_watchdog = "destroy"\n'
    )
    assert data == {"name": "a", "ramdisk": "/i", "maxvcpus": 4, "type": "pvh", "uuid": "u", "on_watchdog": "destroy"}
    assert warnings == []
    assert import_xl_cfg('builder = "generic"\n')[0] == {"type": "pv"}


def test_root_cmdline_and_extra_make_one_command_line():
    data, warnings = import_xl_cfg('extra = "quiet"\ncmdline = "console=hvc0"\nroot = "/dev/xvda1"\n')
    assert data["cmdline"] == "root=/dev/xvda1 console=hvc0 quiet"
    assert warnings == ["line 1: both cmdline and extra are set; xentool joins them"]


def test_lists_xentool_takes_only_part_of_are_warned_about():
    data, warnings = import_xl_cfg(
        'cpus = ["0-1", "2"]\nserial = ["pty", "file:/tmp/s"]\nvif = ["bridge=xenbr0,rate=10Mb/s,foo=1"]\n'
    )
    assert data == {"cpus": "0-1,2", "serial": "pty", "vifs": ["bridge=xenbr0"]}
    assert warnings == [
        "line 1: per-vcpu cpus lists are not supported; every vcpu gets every cpu listed",
        "line 2: only the first serial port is supported; ['file:/tmp/s'] left out",
        "line 3: vif option 'rate=10Mb/s' is not supported; left out",
        "line 3: vif option 'foo=1' is not supported; left out",
    ]
    assert "serial" not in import_xl_cfg("serial = []\n")[0]


def test_hvm_firmware_usb_and_device_model_settings():
    data, warnings = import_xl_cfg(
        'type = "hvm"\nfirmware = "rombios"\nusb = 0\nusbdevice = ["tablet", "mouse"]\n'
        'device_model_override = "/q"\ndevice_model_args = ["-a"]\ndevice_model_args_hvm = "-b"\ndevice_model_user = "qemu"\n'
    )
    assert data["hvm"] == {"firmware": "bios", "usb_tablet": True}
    assert data["device_model"] == {"path": "/q", "args": ["-a", "-b"], "user": "qemu"}
    assert warnings == [
        "line 2: rombios is replaced by SeaBIOS (hvm.firmware: bios)",
        "line 4: usb devices ['mouse'] are not supported; left out",
    ]
    assert import_xl_cfg('type = "hvm"\nusb = 0\n')[0]["hvm"] == {"usb_tablet": False}
    assert import_xl_cfg('bios = "coreboot"\n')[1] == ["line 1: bios='coreboot' is not supported (use bios or uefi); left out"]


def test_hvm_settings_on_a_pv_guest_are_left_out_with_the_line_they_came_from():
    data, warnings = import_xl_cfg('name = "a"\nvnc = 1\nacpi = 1\ndevice_model_args = "-x"\n')
    assert data == {"name": "a"}
    assert warnings == [
        "line 3: hvm settings only apply to hvm guests; left out",
        "line 2: vnc settings only apply to hvm guests; left out",
        "line 4: device_model settings only apply to hvm guests; left out",
    ]


def test_settings_xentool_does_another_way_say_why():
    assert import_xl_cfg('type = "hvm"\nhap = 0\n')[0] == {"type": "hvm", "hap": False}
    assert import_xl_cfg("hap = 1\n") == ({}, ["line 1: hap only applies to hvm and pvh guests; left out"])


def test_cpu_placement_and_weights_come_across():
    data, warnings = import_xl_cfg('cpus = "0-1"\ncpus_soft = "1"\ncpu_weight = 512\ncap = 50\n')
    assert data == {"cpus": "0-1", "cpus_soft": "1", "sched": {"weight": 512, "cap": 50}} and warnings == []
