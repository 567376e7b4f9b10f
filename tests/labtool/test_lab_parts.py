"""The lab's pure parts, without QEMU: package choice, the initramfs, QEMU's argv, errors, state files."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from xentool.errors import UsageError, XentoolError
from xentool.lab import Lab, LabOptions, initramfs, link, packages, qemu
from xentool.lab.errors import BootFailed, LabNotRunning, LabOwnedByOtherUser, MissingTool, NoDiskSpace

APT_CACHE_DEPENDS = """linux-image-amd64
  Depends: linux-image-6.1.0-56-amd64
"""
APT_CACHE_SHOW = """Package: linux-image-amd64
Source: linux-signed-amd64 (6.1.192+2)
Version: 6.1.192-2
Depends: linux-image-6.1.0-56-amd64 (= 6.1.192-2)
"""
APT_POLICY = """xen-hypervisor-4.17-amd64:
  Installed: (none)
  Candidate: 4.17.7+13-g2445b30a44-0+deb12u1
"""


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    (tmp_path / "run").mkdir()


# -- which kernel ------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", [APT_CACHE_DEPENDS, APT_CACHE_SHOW])
def test_kernel_release_comes_from_what_linux_image_amd64_depends_on(text: str) -> None:
    assert packages.parse_kernel_dependency(text) == "6.1.0-56-amd64"


def test_kernel_choice_never_takes_the_cloud_flavour() -> None:
    text = "Depends: linux-image-6.1.0-57-cloud-amd64\n  Depends: linux-image-6.1.0-56-amd64\n"
    assert packages.parse_kernel_dependency(text) == "6.1.0-56-amd64"


def test_kernel_choice_takes_the_newest_of_several() -> None:
    text = "Depends: linux-image-6.1.0-9-amd64\nDepends: linux-image-6.1.0-56-amd64\n"
    assert packages.parse_kernel_dependency(text) == "6.1.0-56-amd64"


def test_kernel_choice_without_a_kernel_dependency_is_an_error() -> None:
    with pytest.raises(ValueError):
        packages.parse_kernel_dependency("linux-image-amd64\n  Depends: nothing-else\n")


def test_candidate_version_is_read_from_apt_policy() -> None:
    assert packages.parse_candidate_version(APT_POLICY) == "4.17.7+13-g2445b30a44-0+deb12u1"
    assert packages.parse_candidate_version("x:\n  Candidate: (none)\n") is None


# -- the initramfs -----------------------------------------------------------------------------------

MODULES_DEP = """kernel/net/9p/9pnet.ko: kernel/fs/netfs/netfs.ko
kernel/fs/netfs/netfs.ko:
kernel/fs/fscache/fscache.ko: kernel/fs/netfs/netfs.ko
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio.ko: kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci.ko: kernel/drivers/virtio/virtio_pci_modern_dev.ko kernel/drivers/virtio/virtio.ko \
kernel/drivers/virtio/virtio_ring.ko
kernel/drivers/virtio/virtio_pci_modern_dev.ko:
kernel/drivers/xen/xen-privcmd.ko:
"""


def test_modules_load_after_their_dependencies() -> None:
    tree = initramfs.ModuleTree.parse(MODULES_DEP, "kernel/drivers/xen/xenfs.ko\n")
    order = [Path(p).stem for p in tree.load_order(["virtio_pci", "9pnet", "xen_privcmd", "xenfs"])]
    assert order.index("virtio_ring") < order.index("virtio") < order.index("virtio_pci")
    assert order.index("virtio_pci_modern_dev") < order.index("virtio_pci")
    assert order.index("netfs") < order.index("9pnet")
    assert "xen-privcmd" in order  # found by its name with '_' or '-'
    assert "xenfs" not in order  # built in
    assert len(order) == len(set(order))


def test_a_module_the_kernel_lacks_is_named() -> None:
    tree = initramfs.ModuleTree.parse(MODULES_DEP)
    with pytest.raises(KeyError, match="nope"):
        tree.load_order(["nope"])


def test_dom0_module_list_includes_what_lab_notes_and_the_agent_need() -> None:
    for name in ("virtio_ring", "9pnet_virtio", "9p", "overlay", "xen-privcmd", "xen-evtchn", "xen-gntdev",
                 "xen-gntalloc", "xenfs", "xen-blkback", "xen-netback", "virtio_console"):
        assert name in initramfs.DOM0_MODULES
    assert initramfs.DOM0_MODULES.index("virtio_ring") < initramfs.DOM0_MODULES.index("virtio")


def fake_module_tree(root: Path) -> Path:
    mods = root / "lib" / "modules" / "6.1.0-1-amd64"
    for line in MODULES_DEP.splitlines():
        path = mods / line.split(":")[0]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x7fELF module " + path.name.encode())
    (mods / "modules.dep").write_text(MODULES_DEP)
    return mods


def test_initramfs_holds_init_busybox_console_and_modules_in_order(tmp_path: Path) -> None:
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"\x7fELF busybox")
    entries = initramfs.contents(busybox, fake_module_tree(tmp_path), ("virtio_pci", "xen-privcmd"))
    by_path = {e.path: e for e in entries}
    assert stat.S_ISCHR(by_path["dev/console"].mode) and by_path["dev/console"].rdev == (5, 1)
    assert by_path["init"].data.startswith(b"#!/bin/busybox sh")
    assert by_path["init"].mode & 0o111
    assert by_path["bin/busybox"].data == b"\x7fELF busybox"
    order = by_path["modules.order"].data.decode().split()
    assert sorted(order) == sorted(["virtio_ring.ko", "virtio.ko", "virtio_pci_modern_dev.ko", "virtio_pci.ko",
                                    "xen-privcmd.ko"])
    assert order.index("virtio_ring.ko") < order.index("virtio.ko") < order.index("virtio_pci.ko")
    assert all(f"modules/{m}" in by_path for m in order)


def test_init_starts_xenstored_then_xen_init_dom0_then_the_agent() -> None:
    script = initramfs.INIT_SCRIPT
    xenstored = script.index("bin/xenstored")
    init_dom0 = script.index("bin/xen-init-dom0")
    agent = script.index('"$AGENT"')
    assert xenstored < init_dom0 < agent
    assert "xenconsoled" in script and 'if [ "$XENCONSOLED" = 1 ]' in script
    assert "tmpfs $R/tmp" not in script  # host /tmp must stay visible in dom0


@pytest.mark.skipif(not os.access("/usr/bin/cpio", os.X_OK), reason="needs cpio")
def test_newc_archive_is_readable_by_cpio(tmp_path: Path) -> None:
    entries = [initramfs.Entry("bin", stat.S_IFDIR | 0o755), initramfs.Entry("bin/x", stat.S_IFREG | 0o755, b"abc"),
               initramfs.Entry("dev/console", stat.S_IFCHR | 0o600, rdev=(5, 1))]
    listing = subprocess.run(["cpio", "-itv"], input=initramfs.newc_archive(entries), capture_output=True, check=True)
    lines = listing.stdout.decode().splitlines()
    assert [line.split()[-1] for line in lines] == ["bin", "bin/x", "dev/console"]
    assert lines[2].startswith("crw")


# -- QEMU's command line -----------------------------------------------------------------------------


def argv_for(opts: LabOptions, tmp_path: Path) -> list[str]:
    files = qemu.BootFiles(Path("/c/xen"), Path("/c/vmlinuz"), Path("/c/initrd.gz"), Path("/src/agent.py"))
    return qemu.qemu_argv("t1", files, opts, qemu.LabPaths(tmp_path))


def test_qemu_argv_follows_the_options(tmp_path: Path) -> None:
    argv = argv_for(LabOptions(memory_mib=4096, vcpus=3, dom0_memory_mib=1500, xenconsoled=True,
                               shares=("/srv/share",)), tmp_path)
    joined = " ".join(argv)
    assert argv[argv.index("-m") + 1] == "4096" and argv[argv.index("-smp") + 1] == "3"
    assert argv[argv.index("-machine") + 1] == "q35,accel=tcg"
    assert argv[argv.index("-cpu") + 1] == qemu.TCG_CPU
    assert "dom0_mem=1500M,max:1500M" in argv[argv.index("-append") + 1]
    initrd = argv[argv.index("-initrd") + 1]
    assert initrd.startswith("/c/vmlinuz console=hvc0") and initrd.endswith(",/c/initrd.gz")
    assert "xentool.agent=/src/agent.py" in initrd and "xentool.xenconsoled=1" in initrd
    assert "xentool.share=/srv/share" in initrd
    assert "path=/,security_model=none,readonly=on" in joined
    assert "path=/srv/share,security_model=none,multidevs=remap" in joined
    assert f"file:{tmp_path}/serial.log" in argv
    assert "-daemonize" in argv and argv[argv.index("-pidfile") + 1] == f"{tmp_path}/qemu.pid"
    assert "xentool-lab-t1,process=xentool-lab-t1" in argv


def test_qemu_argv_listens_on_nothing_but_unix_sockets(tmp_path: Path) -> None:
    argv = argv_for(LabOptions(), tmp_path)
    chardevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-chardev"]
    assert len(chardevs) == qemu.AGENT_PORTS
    assert all(c.startswith("socket,") and f"path={tmp_path}/agent-" in c for c in chardevs)
    assert argv[argv.index("-nic") + 1] == "none"
    assert not any("tcp" in a or "host=" in a or "port=" in a for a in argv)


def test_the_link_to_the_other_host_is_a_pair_of_unix_sockets(tmp_path: Path) -> None:
    """Host 2's end of the lab's link: a datagram network between its socket and host 1's, a NIC
    with host 2's MAC (dom0's init finds it by that), and its number and the ssh keys on dom0's line."""
    here, there = tmp_path / "host2" / "link.sock", tmp_path / "link.sock"
    argv = argv_for(LabOptions(host=2, link_socket=str(here), peer_socket=str(there), ssh_dir=str(tmp_path / "ssh")), tmp_path)
    netdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-netdev"]
    assert netdevs == [f"dgram,id=link,local.type=unix,local.path={here},remote.type=unix,remote.path={there}"]
    assert f"virtio-net-pci,netdev=link,mac={link.link_mac(2)}" in argv and "-nic" not in argv
    assert "xentool.host=2" in argv[argv.index("-initrd") + 1] and f"xentool.ssh={tmp_path}/ssh" in argv[argv.index("-initrd") + 1]
    script = initramfs.init_script()
    assert "@" not in "".join(line for line in script.splitlines() if "nic_with_mac" in line or "NETWORK" in line)
    assert f"{link.NETWORK}.$HOST/24" in script and "ListenAddress" in script


def test_the_labs_ssh_keys_are_its_own_and_name_both_hosts(tmp_path: Path) -> None:
    fake = packages.OpenSsh(Path("/x/sshd"), Path("/x/sftp-server"), "/x/lib")
    ssh = link.ensure_keys(tmp_path / "ssh", fake)
    assert link.ensure_keys(tmp_path / "ssh", fake) == ssh  # made once
    known = (ssh / "known_hosts").read_text().splitlines()
    assert [line.split()[0] for line in known] == ["xen1,192.168.127.1", "xen2,192.168.127.2"]
    assert (ssh / "authorized_keys").read_text().split()[:2] == (ssh / "client" / "id_ed25519.pub").read_text().split()[:2]
    assert oct((ssh / "host1" / "ssh_host_ed25519_key").stat().st_mode & 0o777) == "0o600"
    assert "SSHD=/x/sshd" in (ssh / "sshd.env").read_text()


def test_kvm_uses_the_host_cpu(tmp_path: Path) -> None:
    argv = argv_for(LabOptions(accel="kvm"), tmp_path)
    assert argv[argv.index("-machine") + 1] == "q35,accel=kvm" and argv[argv.index("-cpu") + 1] == "host"


@pytest.mark.parametrize("opts, word", [
    (LabOptions(accel="hvf"), "--accel"),
    (LabOptions(vcpus=0), "--vcpus"),
    (LabOptions(memory_mib=1024, dom0_memory_mib=1024), "--memory"),
    (LabOptions(shares=("relative/dir",)), "share"),
    (LabOptions(shares=("/a,b",)), "share"),
])
def test_bad_options_are_usage_errors_naming_the_option(opts: LabOptions, word: str) -> None:
    with pytest.raises(UsageError, match=word):
        opts.validate()


# -- errors and state --------------------------------------------------------------------------------


def test_lab_errors_exit_with_8_and_say_what_to_do() -> None:
    missing = MissingTool("qemu", "/usr/bin/qemu-system-x86_64", "qemu-system-x86")
    assert isinstance(missing, XentoolError) and missing.exit_code == 8
    assert "qemu-system-x86" in str(missing) and "apt-get install" in str(missing)
    assert "12 MiB are free" in str(NoDiskSpace("/x", 600, 12))
    boot = BootFailed("t", "dom0 was not ready within 5 s", ["(XEN) a", "", "Linux b"])
    assert "\n" not in str(boot) and "(XEN) a | Linux b" in str(boot)
    assert "lab up --name t" in str(LabNotRunning("t"))
    assert "uid 4242" in str(LabOwnedByOtherUser("t", "/x", 4242))


def test_missing_host_tools_name_their_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(packages.HOST_TOOLS, "qemu", ("/nonexistent/qemu-system-x86_64", "qemu-system-x86"))
    with pytest.raises(MissingTool, match="qemu-system-x86"):
        packages.check_host_tools()


def test_state_dirs_are_per_name_under_the_runtime_dir(tmp_path: Path) -> None:
    a, b = Lab("a"), Lab("b")
    assert a.state == tmp_path / "run" / "xentool" / "labs" / "a"
    assert a.state != b.state and a.share_dir == a.state / "share"
    with pytest.raises(UsageError):
        Lab("../escape")


def test_a_lab_that_is_not_running(tmp_path: Path) -> None:
    lab = Lab("idle")
    assert not lab.is_running()
    assert lab.status().running is False
    with pytest.raises(LabNotRunning):
        lab.exec(["true"])
    assert lab.down() is False
    assert not any(p.name in ("lock", "qemu.pid") or p.name.startswith("agent-") for p in lab.state.iterdir())


def test_a_stale_pid_file_is_not_a_running_lab(tmp_path: Path) -> None:
    lab = Lab("stale")
    lab.state.mkdir(parents=True)
    lab.paths.pidfile.write_text(f"{os.getpid()}\n")  # a live process, but not this lab's QEMU
    assert not lab.is_running()


def test_another_users_lab_is_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    lab = Lab("theirs")
    lab.state.mkdir(parents=True)
    monkeypatch.setattr(os, "geteuid", lambda: os.stat(lab.state).st_uid + 1)
    with pytest.raises(LabOwnedByOtherUser, match="belongs to user"):
        lab.up()


def test_run_in_lab_runs_this_xentool_without_xentool_connect(monkeypatch: pytest.MonkeyPatch) -> None:
    from xentool.cli import lab as cli_lab

    calls = []

    class FakeResult:
        returncode = 5

    monkeypatch.setattr(Lab, "is_running", lambda self: True)
    monkeypatch.setattr(Lab, "exec", lambda self, argv, **kw: calls.append((argv, kw)) or FakeResult())
    monkeypatch.setenv("XENTOOL_CONNECT", "lab")
    assert cli_lab.run_in_lab(["host", "info"]) == 5
    argv, kw = calls[0]
    assert argv[-2:] == ["host", "info"] and argv[0].endswith("xentool")
    assert "XENTOOL_CONNECT" not in kw["env"]


@pytest.mark.parametrize("second_host", [False, True])
def test_status_json_has_one_shape_with_or_without_a_second_host(second_host: bool,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """CI failed once on `status["running"]` when a two-host test had left host 2's state behind."""
    import json

    from xentool.cli import lab as cli_lab

    lab = Lab("shape")
    lab.state.mkdir(parents=True)
    if second_host:
        (lab.state / "host2").mkdir()
    with pytest.raises(SystemExit):
        cli_lab.status(name="shape", as_json=True)
    status = json.loads(capsys.readouterr().out)
    assert status["running"] is False and status["name"] == "shape"
    assert [one["host"] for one in status["hosts"]] == ([1, 2] if second_host else [1])


def test_lab_up_shows_each_hosts_steps_as_a_bar_on_a_terminal_and_as_lines_elsewhere(monkeypatch):
    """Issue 17, progress: `lab up`'s steps (the preparation's, then the boot's serial markers) are
    counted against every step there is; each host gets its own bar, and off a terminal a line each."""
    import io

    from rich.console import Console

    from xentool.cli import lab as lab_cli
    from xentool.lab.lab import UP_STEPS

    class FakeLab:
        name, label = "t", "lab t"

        def up(self, options, timeout, progress):
            for step in UP_STEPS:
                progress(step)
            return "status"

    from rich.progress import Progress

    seen: list[str] = []
    terminal = Console(file=io.StringIO(), force_terminal=True, width=120)
    monkeypatch.setattr(lab_cli, "err", lambda: terminal)
    real_update = Progress.update

    def update(self, task, **fields):
        seen.append(f"{fields.get('completed')}/{self.tasks[task].total} {fields.get('description')}")
        return real_update(self, task, **fields)

    monkeypatch.setattr(Progress, "update", update)
    assert lab_cli._up_with_progress(FakeLab(), None, 10.0) == "status"
    assert seen[0] == f"0/{len(UP_STEPS)} lab t: checking host tools"
    assert seen[-1] == f"{len(UP_STEPS) - 1}/{len(UP_STEPS)} lab t: asking the agent"

    lines = io.StringIO()
    monkeypatch.setattr(lab_cli, "err", lambda: Console(file=lines, force_terminal=False, width=200))
    lab_cli._up_with_progress(FakeLab(), None, 10.0)
    said = lines.getvalue().splitlines()
    assert len(said) == len(UP_STEPS) and said[0].startswith("lab t: checking host tools (")
