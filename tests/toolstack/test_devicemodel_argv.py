"""QEMU's command line for HVM guests, checked against libxl 4.17's (docs/hvm-facts.md section 4)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from pathlib import Path

import pytest

from xentool.config import config_from_dict
from xentool.devicemodel.argv import QEMU_XEN, DeviceModelSetup, device_model_argv, qemu_opt_value
from xentool.devicemodel.paths import qmp_socket_path
from xentool.devicemodel.privilege import Privilege
from xentool.devicemodel.process import device_model_env
from xentool.devices.vif import stable_mac
from xentool.errors import DeviceError

SERIAL = "/run/xentool/console/hvm1-serial.sock"


def hvm(**fields):
    data = {"name": "hvm1", "type": "hvm", "memory": 512}
    data.update(fields)
    return config_from_dict(data)


def doc_example():
    """The example config of hvm-facts.md section 4, in xentool's terms."""
    return hvm(
        vcpus=2,
        disks=["/srv/hvm1.img,raw,hda,rw", "/srv/debian.iso,raw,hdc,cdrom"],
        vifs=["mac=00:16:3e:12:34:56,bridge=xenbr0,model=e1000"],
        vnc={"listen": "127.0.0.1"},
        serial="pty",
        hvm={"boot": "dc", "usb_tablet": False},
    )


def setup(domid=7, serial_socket=SERIAL, vnc_display=0, uuid=None, privilege=None, incoming=False):
    return DeviceModelSetup(domid=domid, serial_socket=serial_socket, vnc_display=vnc_display, uuid=uuid,
                            privilege=privilege, incoming=incoming)


def options(argv):
    """argv as (option, value) pairs, value None for a flag; argv[0] left out."""
    pairs, rest = [], argv[1:]
    while rest:
        if len(rest) > 1 and not rest[1].startswith("-"):
            pairs.append((rest[0], rest[1]))
            rest = rest[2:]
        else:
            pairs.append((rest[0], None))
            rest = rest[1:]
    return pairs


def values(argv, option):
    return [value for name, value in options(argv) if name == option]


def test_doc_example_gives_libxls_argv_with_xentools_serial_and_taps():
    argv = device_model_argv(doc_example(), setup())
    assert argv == [
        "/usr/libexec/xen-qemu-system-i386",
        "-xen-domid", "7",
        "-no-shutdown",
        "-chardev", "socket,id=libxl-cmd,path=/var/run/xen/qmp-libxl-7,server=on,wait=off",
        "-mon", "chardev=libxl-cmd,mode=control",
        "-nodefaults",
        "-no-user-config",
        "-name", "hvm1",
        "-vnc", "127.0.0.1:0",
        "-display", "none",
        "-chardev", f"socket,id=serial0,path={SERIAL},server=on,wait=off",
        "-serial", "chardev:serial0",
        "-device", "cirrus-vga,vgamem_mb=8",
        "-boot", "order=dc",
        "-smp", "2,maxcpus=2",
        "-device", "e1000,id=nic0,netdev=net0,mac=00:16:3e:12:34:56",
        "-netdev", "type=tap,id=net0,ifname=vif7.0-emu,script=no,downscript=no",
        "-machine", "xenfv,suppress-vmdesc=on",
        "-m", "504",
        "-drive", "file=/srv/hvm1.img,if=ide,index=0,media=disk,format=raw,cache=writeback",
        "-drive", "if=none,readonly=on,id=ide-5632,file=/srv/debian.iso,format=raw",
        "-device", "ide-cd,id=ide-5632,drive=ide-5632,bus=ide.1,unit=0",
    ]  # fmt: skip


def test_environment_is_libxls():
    assert device_model_env(7) == {"XEN_QEMU_CONSOLE_LIMIT": "1048576", "XEN_DOMAIN_ID": "7"}


def test_qmp_socket_is_where_xl_looks():
    assert qmp_socket_path(12) == "/var/run/xen/qmp-libxl-12"


def test_cdrom_only_guest_has_no_nic_and_an_empty_drive_without_file():
    config = hvm(disks=[{"vdev": "hdc", "devtype": "cdrom", "format": "empty"}], hvm={"boot": "cdrom"})
    argv = device_model_argv(config, setup(vnc_display=None, serial_socket=None))
    assert values(argv, "-drive") == ["if=none,readonly=on,id=ide-5632"]
    assert "ide-cd,id=ide-5632,drive=ide-5632,bus=ide.1,unit=0" in values(argv, "-device")
    assert values(argv, "-boot") == ["order=d"]
    assert ("-net", "none") in options(argv)
    assert ("-vnc", "none") in options(argv)
    assert "-serial" not in argv and "-smp" not in argv


def test_usb_tablet_is_on_by_default_and_after_boot():
    argv = device_model_argv(hvm(), setup())
    assert argv[argv.index("-boot") + 2 : argv.index("-boot") + 5] == ["-usb", "-usbdevice", "tablet"]


def test_a_guest_without_a_screen_gets_no_tablet_unless_asked():
    assert "-usb" not in device_model_argv(hvm(vnc=False), setup(vnc_display=None))
    assert "-usbdevice" in device_model_argv(hvm(vnc=False, hvm={"usb_tablet": True}), setup(vnc_display=None))


def test_usb_tablet_off_gives_no_usb():
    argv = device_model_argv(hvm(hvm={"usb_tablet": False}), setup())
    assert "-usb" not in argv and "-usbdevice" not in argv


def test_one_vcpu_gives_no_smp():
    assert "-smp" not in device_model_argv(hvm(vcpus=1), setup())


def test_smp_counts_online_and_most_vcpus():
    assert values(device_model_argv(hvm(vcpus=2, maxvcpus=4), setup()), "-smp") == ["2,maxcpus=4"]


def test_direct_kernel_boot_comes_before_serial():
    config = hvm(kernel="/boot/vmlinuz", ramdisk="/boot/initrd.img", cmdline="console=ttyS0 root=/dev/sda1")
    argv = device_model_argv(config, setup())
    start = argv.index("-kernel")
    assert argv[start : start + 6] == ["-kernel", "/boot/vmlinuz", "-initrd", "/boot/initrd.img", "-append", "console=ttyS0 root=/dev/sda1"]
    assert argv.index("-display") < start < argv.index("-serial")


def test_stdvga_gets_libxls_16_mib_and_the_memory_excludes_it():
    argv = device_model_argv(hvm(hvm={"stdvga": True}), setup())
    assert values(argv, "-device")[0] == "VGA,vgamem_mb=16"
    assert values(argv, "-m") == ["496"]


def test_memory_for_qemu_is_maxmem_less_video_memory():
    argv = device_model_argv(hvm(memory=512, maxmem=1024, hvm={"videoram": 32}), setup())
    assert values(argv, "-m") == ["992"]
    assert "cirrus-vga,vgamem_mb=32" in values(argv, "-device")


def test_commas_in_paths_are_doubled():
    config = hvm(
        disks=[
            {"target": "/srv/a,b/disk.img", "vdev": "hda"},
            {"target": "/srv/x,y.iso", "vdev": "hdc", "devtype": "cdrom"},
            {"target": "/srv/s,c.img", "vdev": "sda"},
        ]
    )
    argv = device_model_argv(config, setup(serial_socket="/run/se,rial.sock"))
    assert values(argv, "-drive") == [
        "file=/srv/a,,b/disk.img,if=ide,index=0,media=disk,format=raw,cache=writeback",
        "if=none,readonly=on,id=ide-5632,file=/srv/x,,y.iso,format=raw",
        "file=/srv/s,,c.img,id=scsi0-hd0,format=raw,if=none,readonly=off,cache=writeback",
    ]
    assert "socket,id=serial0,path=/run/se,,rial.sock,server=on,wait=off" in values(argv, "-chardev")
    assert qemu_opt_value("a,,b") == "a,,,,b"


def test_scsi_disk_adds_the_lsi_adapter_once_before_serial():
    config = hvm(disks=[{"target": "/srv/a.img", "vdev": "sda"}, {"target": "/srv/b.img", "vdev": "sdb", "access": "ro"}])
    argv = device_model_argv(config, setup())
    devices = values(argv, "-device")
    assert devices.count("lsi53c895a") == 1
    assert argv.index("lsi53c895a") < argv.index("-serial")
    assert devices[-2:] == ["scsi-hd,drive=scsi0-hd0,scsi-id=0", "scsi-hd,drive=scsi0-hd1,scsi-id=1"]
    assert values(argv, "-drive")[1] == "file=/srv/b.img,id=scsi0-hd1,format=raw,if=none,readonly=on,cache=writeback"


def test_first_four_xvd_disks_are_emulated_on_ide_as_libxl_does():
    config = hvm(disks=[{"target": "/srv/a.img", "vdev": "xvda"}, {"target": "/srv/e.img", "vdev": "xvde"}])
    argv = device_model_argv(config, setup())
    assert values(argv, "-drive") == ["file=/srv/a.img,if=ide,index=0,media=disk,format=raw,cache=writeback"]


def test_qcow2_disk_is_given_its_format():
    config = hvm(disks=[{"target": "/srv/a.qcow2", "vdev": "hda", "format": "qcow2", "backendtype": "qdisk"}])
    assert values(device_model_argv(config, setup()), "-drive") == [
        "file=/srv/a.qcow2,if=ide,index=0,media=disk,format=qcow2,cache=writeback"
    ]


def test_unknown_nic_model_names_the_vif():
    config = hvm(vifs=[{"mac": "00:16:3e:00:00:01"}, {"mac": "00:16:3e:00:00:02", "model": "virtio"}])
    with pytest.raises(DeviceError) as raised:
        device_model_argv(config, setup())
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("domain hvm1, device vif 1: QEMU has no NIC model 'virtio'")


def test_nic_defaults_to_rtl8139_and_pv_only_vifs_get_no_nic():
    config = hvm(vifs=[{"mac": "00:16:3e:00:00:01"}, {"mac": "00:16:3e:00:00:02", "type": "vif"}])
    argv = device_model_argv(config, setup())
    assert values(argv, "-device")[-1] == "rtl8139,id=nic0,netdev=net0,mac=00:16:3e:00:00:01"
    assert values(argv, "-netdev") == ["type=tap,id=net0,ifname=vif7.0-emu,script=no,downscript=no"]


def test_vif_without_mac_gets_the_same_mac_as_its_backend():
    uuid = "0b9a2f4e-5c1d-4e8f-9a7b-3c2d1e0f4a5b"
    argv = device_model_argv(hvm(vifs=[{}]), setup(uuid=uuid))
    assert values(argv, "-device")[-1] == f"rtl8139,id=nic0,netdev=net0,mac={stable_mac(uuid, 0)}"


def test_vifname_names_the_tap():
    argv = device_model_argv(hvm(vifs=[{"mac": "00:16:3e:00:00:01", "vifname": "web0"}]), setup())
    assert values(argv, "-netdev") == ["type=tap,id=net0,ifname=web0-emu,script=no,downscript=no"]


def test_tap_name_too_long_for_linux_is_refused():
    with pytest.raises(DeviceError, match="device vif 0: .*longer than Linux allows"):
        device_model_argv(hvm(vifs=[{"mac": "00:16:3e:00:00:01", "vifname": "a-long-vifname"}]), setup())


def test_two_disks_in_one_ide_slot_are_refused():
    config = hvm(disks=[{"target": "/srv/a.img", "vdev": "hda"}, {"target": "/srv/b.img", "vdev": "xvda"}])
    with pytest.raises(DeviceError, match=r"device xvda: QEMU emulates 4 IDE devices and slot 0 \(hda\) is already hda's"):
        device_model_argv(config, setup())


def test_cdrom_past_the_fourth_disk_is_refused():
    config = hvm(disks=[{"target": "/srv/x.iso", "vdev": "xvde", "devtype": "cdrom"}])
    with pytest.raises(DeviceError, match="device xvde: QEMU emulates a cdrom on IDE only"):
        device_model_argv(config, setup())


def test_read_only_ide_disk_is_refused_as_libxl_does():
    config = hvm(disks=[{"target": "/srv/a.img", "vdev": "hdb", "access": "ro"}])
    with pytest.raises(DeviceError, match="device hdb: QEMU's IDE disks cannot be read-only"):
        device_model_argv(config, setup())


def test_scsi_disk_past_the_adapters_targets_is_refused():
    with pytest.raises(DeviceError, match="device sdh: QEMU's SCSI adapter has 7 targets"):
        device_model_argv(hvm(disks=[{"target": "/srv/a.img", "vdev": "sdh"}]), setup())


@pytest.mark.parametrize(
    ("serial", "expected"),
    [("file:/var/log/xen/hvm1-serial.log", ["file:/var/log/xen/hvm1-serial.log"]), ("none", []), ("null", []), (None, [])],
)
def test_serial_without_a_socket_goes_to_qemu_as_given(serial, expected):
    argv = device_model_argv(hvm(serial=serial), setup(serial_socket=None))
    assert values(argv, "-serial") == expected


def test_no_acpi_vnc_password_extra_args_and_runas_in_libxls_places():
    config = hvm(
        vnc={"listen": "0.0.0.0", "password": "secret"},
        hvm={"acpi": False},
        device_model={"args": ["-global", "x=y"], "user": "xen-qemuuser-7"},
    )
    argv = device_model_argv(config, setup(vnc_display=3, privilege=Privilege(restricted=False, runas="xen-qemuuser-7")))
    assert values(argv, "-vnc") == ["0.0.0.0:3,password=on"]
    assert argv.index("-usbdevice") < argv.index("-no-acpi") < argv.index("-net")
    assert argv[argv.index("-net") + 2 : argv.index("-machine")] == ["-global", "x=y"]
    assert argv[-2:] == ["-runas", "xen-qemuuser-7"]


def test_ipv6_vnc_listen_is_bracketed():
    argv = device_model_argv(hvm(vnc={"listen": "::1"}), setup(vnc_display=1))
    assert values(argv, "-vnc") == ["[::1]:1"]


def test_device_model_path_override():
    argv = device_model_argv(hvm(device_model={"path": "/opt/qemu/bin/qemu-system-i386"}), setup())
    assert argv[0] == "/opt/qemu/bin/qemu-system-i386"


def test_pv_guest_has_no_device_model(tmp_path: Path):
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"")
    config = config_from_dict({"name": "pv1", "type": "pv", "kernel": str(kernel)})
    with pytest.raises(ValueError, match="only hvm guests"):
        device_model_argv(config, setup())


# -- the real QEMU ---------------------------------------------------------------------------------


def _without_xen(argv: list[str], tmp_path: Path) -> list[str]:
    """argv with what needs a Xen host swapped out: no domid, the pc machine on qtest, no taps."""
    out = [argv[0]]
    for option, value in options(argv):
        if option == "-xen-domid":
            continue
        if option == "-machine":
            value, out = "pc", [*out, "-accel", "qtest"]
        elif option == "-netdev":
            value = "hubport,id={},hubid=0".format(value.split("id=")[1].split(",")[0])
        elif option == "-chardev" and "libxl-cmd" in value:
            value = value.replace(qmp_socket_path(7), qemu_opt_value(str(tmp_path / "q,mp.sock")))
        out += [option] if value is None else [option, value]
    return out


def _qmp(sock: socket.socket, command: str) -> dict:
    sock.sendall(json.dumps({"execute": command}).encode() + b"\n")
    reader = sock.makefile("rb")
    while True:
        reply = json.loads(reader.readline())
        if "return" in reply or "error" in reply:
            return reply


@pytest.mark.skipif(not os.access(QEMU_XEN, os.X_OK), reason="Debian's qemu-system-xen is not installed")
def test_real_qemu_accepts_the_options_and_opens_the_comma_paths(tmp_path: Path):
    # xenfv and -xen-domid need a Xen host, so the machine becomes pc on the qtest accelerator (the
    # only other one this binary has); every device, drive, chardev and option is QEMU's real parse.
    folder = tmp_path / "im,ages"
    folder.mkdir()
    (folder / "d,isk.img").write_bytes(b"\0" * 1024 * 1024)
    (folder / "cd.iso").write_bytes(b"\0" * 1024 * 1024)
    (folder / "s.img").write_bytes(b"\0" * 1024 * 1024)
    config = hvm(
        vcpus=2,
        disks=[
            {"target": str(folder / "d,isk.img"), "vdev": "hda"},
            {"target": str(folder / "cd.iso"), "vdev": "hdc", "devtype": "cdrom"},
            {"vdev": "hdd", "devtype": "cdrom", "format": "empty"},
            {"target": str(folder / "s.img"), "vdev": "sda"},
        ],
        vifs=[{"mac": "00:16:3e:12:34:56", "model": "e1000"}],
        hvm={"stdvga": True, "acpi": False},
    )
    argv = _without_xen(device_model_argv(config, setup(serial_socket=str(tmp_path / "se,rial.sock"), vnc_display=None)), tmp_path)
    qemu = subprocess.Popen([*argv, "-S"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        qmp_path = tmp_path / "q,mp.sock"
        deadline = time.monotonic() + 10
        while not qmp_path.exists():
            if qemu.poll() is not None:
                pytest.fail(f"QEMU refused the argv: {qemu.stderr.read().decode().strip()}")
            assert time.monotonic() < deadline, "QEMU did not open its QMP socket in 10 s"
            time.sleep(0.05)
        assert (tmp_path / "se,rial.sock").exists()
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(qmp_path))
            sock.settimeout(10)
            assert "QMP" in json.loads(sock.makefile("rb").readline())
            _qmp(sock, "qmp_capabilities")
            blocks = {b["device"] or b["qdev"]: b.get("inserted", {}).get("file") for b in _qmp(sock, "query-block")["return"]}
            _qmp(sock, "quit")
        assert str(folder / "d,isk.img") in blocks.values()
        assert blocks["ide-5632"] == str(folder / "cd.iso")
        assert blocks["ide-5696"] is None
        qemu.wait(timeout=10)
    finally:
        if qemu.poll() is None:
            qemu.kill()
            qemu.wait()



def test_a_restricted_device_model_gets_libxls_dm_restrict_options_last():
    privilege = Privilege(restricted=True, runas="131079:131072", chroot="/var/run/xen/qemu-root-7")
    argv = device_model_argv(hvm(), setup(privilege=privilege))
    assert argv[-6:] == ["-xen-domid-restrict", "-chroot", "/var/run/xen/qemu-root-7", "-S", "-runas", "131079:131072"]


def test_the_default_privilege_is_restricted_and_refuses_root(monkeypatch):
    import pwd

    from xentool.devicemodel import privilege as priv
    from xentool.errors import DeviceError

    users = {"xen-qemuuser-shared": pwd.struct_passwd(("xen-qemuuser-shared", "x", 999, 999, "", "/", "/bin/false")),
             "root": pwd.struct_passwd(("root", "x", 0, 0, "", "/root", "/bin/sh"))}

    def getpwnam(name):
        if name not in users:
            raise KeyError(name)
        return users[name]

    monkeypatch.setattr(priv.pwd, "getpwnam", getpwnam)
    chosen = priv.choose_privilege(hvm(), 7)
    assert chosen == Privilege(restricted=True, runas="xen-qemuuser-shared", chroot="/var/run/xen/qemu-root-7")
    users["xen-qemuuser-range-base"] = pwd.struct_passwd(("xen-qemuuser-range-base", "x", 131072, 131072, "", "/", ""))
    assert priv.choose_privilege(hvm(), 7).runas == "131079:131072"
    with pytest.raises(DeviceError, match="is root"):
        priv.choose_privilege(hvm(device_model={"user": "root"}), 7)
    assert priv.choose_privilege(hvm(device_model={"privileged": True}), 7) == Privilege(restricted=False)
    users.clear()
    with pytest.raises(DeviceError, match="no unprivileged user"):
        priv.choose_privilege(hvm(), 7)


def test_a_relative_disk_target_is_never_read_as_a_qemu_protocol():
    config = hvm(disks=[{"target": "nbd:evil.example:10809", "vdev": "hda"}])
    drives = values(device_model_argv(config, setup()), "-drive")
    assert drives[0].startswith("file=./nbd:evil.example:10809,")


def test_a_pv_guest_s_qdisk_backend_is_libxl_s_xenpv_qemu():
    """libxl's PV branch (docs/devices-facts.md, qdisk): xen-attach, machine xenpv, no emulated
    devices, no restriction (Xen's restricted QEMU cannot serve qdisk), -m in MiB of maxmem."""
    from xentool.devicemodel.argv import pv_backend_argv

    config = config_from_dict({"name": "pv1", "type": "pv", "kernel": "/k", "memory": 128, "maxmem": 200,
                               "disks": [{"target": "/srv/a.qcow2", "vdev": "xvdb", "format": "qcow2"}]})
    argv = pv_backend_argv(config, 9)
    assert argv == [QEMU_XEN, "-xen-domid", "9", "-no-shutdown",
                    "-chardev", "socket,id=libxl-cmd,path=/var/run/xen/qmp-libxl-9,server=on,wait=off",
                    "-mon", "chardev=libxl-cmd,mode=control", "-nodefaults", "-no-user-config", "-xen-attach",
                    "-name", "pv1", "-vnc", "none", "-display", "none", "-nographic", "-machine", "xenpv", "-m", "200"]
    with pytest.raises(ValueError, match="hvm guest"):
        pv_backend_argv(hvm(), 9)


def test_which_disks_an_hvm_guest_s_qemu_emulates():
    from xentool.devicemodel.argv import emulated_by_qemu

    disks = hvm(disks=["/a,raw,hda,rw", "/b,raw,xvdd,rw", "/c,raw,xvde,rw", "/d,raw,sdb,rw", "/e,raw,hdc,cdrom"]).disks
    assert [emulated_by_qemu(d) for d in disks] == [True, True, False, True, True]


def test_the_device_model_is_spawned_detached_with_only_stdin_stdout_and_stderr(tmp_path):
    """QEMU inherits none of our descriptors (a restored guest's state now goes over QMP, not by
    inheritance): an inheritable one of ours is closed in the child, and its output goes to the log."""
    from xentool.devicemodel.process import spawn

    ours = os.open(os.devnull, os.O_RDONLY)
    os.dup2(ours, 77)  # inheritable
    try:
        log = tmp_path / "dm.log"
        started = spawn(["/bin/sh", "-c", "echo fds: /proc/$$/fd/*; echo sid: $(cut -d' ' -f6 /proc/$$/stat)"], {}, log)
        deadline = time.monotonic() + 10
        while "\nsid: " not in log.read_text() and time.monotonic() < deadline:  # (the log's head line has the argv)
            time.sleep(0.05)
        text = log.read_text()
        fds = {int(path.rsplit("/", 1)[1]) for path in text.split("\nfds: ")[1].split("\n")[0].split()}
        assert {0, 1, 2} <= fds and 77 not in fds, text
        assert f"/proc/{started.pid}/fd/0" in text  # the pid reported is the process that runs
        assert int(text.split("\nsid: ")[1].split()[0]) != os.getsid(0)  # a session of its own: no terminal of ours
    finally:
        os.close(77)
        os.close(ours)


def test_a_restored_guests_serial_file_is_appended_to_and_its_qemu_waits_for_its_state():
    config = hvm(serial="file:/srv/logs/a,b.log")
    assert options(device_model_argv(config, setup(serial_socket=None)))[-1] != ("-incoming", "defer")
    assert ("-serial", "file:/srv/logs/a,b.log") in options(device_model_argv(config, setup(serial_socket=None)))
    argv = device_model_argv(config, setup(serial_socket=None, incoming=True))
    assert ("-chardev", "file,id=serial0,path=/srv/logs/a,,b.log,append=on") in options(argv)
    assert ("-serial", "chardev:serial0") in options(argv)
    assert options(argv)[-1] == ("-incoming", "defer")


def test_hdtype_ahci_puts_the_first_disks_on_an_ahci_controller_and_cdroms_stay_on_ide():
    """libxl_dm.c's hdtype=ahci: one `ahci` device, each of disks 0-3 on its port of the disk's
    index; a CD-ROM stays IDE; a read-only emulated disk is refused, as libxl refuses it."""
    config = hvm(hvm={"hdtype": "ahci"}, disks=[{"target": "/srv/a.img", "vdev": "hda"},
                                                {"target": "/srv/x.iso", "vdev": "hdc", "devtype": "cdrom"},
                                                {"target": "/srv/b.img", "vdev": "xvdb"}])
    argv = device_model_argv(config, setup())
    assert values(argv, "-drive")[::2] == ["file=/srv/a.img,if=none,id=ahcidisk-0,format=raw,cache=writeback",
                                           "file=/srv/b.img,if=none,id=ahcidisk-1,format=raw,cache=writeback"]
    devices = values(argv, "-device")
    assert devices.count("ahci,id=ahci0") == 1
    assert "ide-hd,bus=ahci0.0,unit=0,drive=ahcidisk-0" in devices and "ide-hd,bus=ahci0.1,unit=0,drive=ahcidisk-1" in devices
    assert "ide-cd,id=ide-5632,drive=ide-5632,bus=ide.1,unit=0" in devices
    with pytest.raises(DeviceError, match="QEMU's AHCI disks cannot be read-only"):
        device_model_argv(hvm(hvm={"hdtype": "ahci"}, disks=[{"target": "/srv/a.img", "vdev": "hda", "access": "ro"}]), setup())
