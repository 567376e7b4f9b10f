"""PV and PVH guests on real Xen, created by xentool inside the lab's dom0, side by side with xl.

The guests are the lab's own Debian kernel with a busybox initramfs (xentool.lab.guest_images) that
prints a marker line and then waits for input or a shutdown request.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import pytest

from xentool.lab import Lab
from xentool.lab.guest_images import GuestImages, install_guest_images

pytestmark = pytest.mark.lab

XENTOOL = str(Path(sys.prefix) / "bin" / "xentool")
BOOT_TIMEOUT = 240.0  # seconds; a guest kernel under TCG on a busy 2-core host


@pytest.fixture(scope="module")
def guests(lab: Lab) -> GuestImages:
    return install_guest_images(lab.artifacts.kernel, lab.artifacts.busybox, lab.share_dir / "guests")


def xentool(lab: Lab, *args: str, timeout: float = 300):
    return lab.exec([XENTOOL, *args], capture=True, timeout=timeout)


def write_config(lab: Lab, guests: GuestImages, name: str, type_: str = "pv", then: str = "wait", **extra) -> Path:
    lines = [
        f"name: {name}",
        f"type: {type_}",
        f"kernel: {guests.kernel}",
        f"ramdisk: {guests.initrd}",
        f'cmdline: "console=hvc0 xentool.marker={name} xentool.then={then}"',
        "memory: 128",
    ] + [f"{k}: {v}" for k, v in extra.items()]
    path = lab.share_dir / f"{name}-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def wait_for_console(lab: Lab, name: str, text: str, timeout: float = BOOT_TIMEOUT) -> str:
    deadline = time.monotonic() + timeout
    log = ""
    while time.monotonic() < deadline:
        result = xentool(lab, "console", "--log", name)
        log = result.out
        if text in log:
            return log
        time.sleep(3)
    pytest.fail(f"{text!r} did not appear on {name}'s console within {timeout:.0f} s; log tail:\n{log[-1500:]}")


def host_state(lab: Lab) -> dict[str, object]:
    """What must be the same before and after a failed create: domains, xenstore, free memory,
    console backend processes."""
    script = (
        "xl list | awk 'NR>1 {print $1, $2, $3}'; echo ---; "
        "xenstore-ls -f /local/domain /vm /libxl 2>/dev/null | grep -v '^/local/domain/0/memory' ; echo ---; "
        "xl info | grep -E '^free_memory'; echo ---; ls /run/xentool/console 2>/dev/null"
    )
    result = lab.exec(["sh", "-c", script], capture=True, timeout=120)
    domains, store, free, consoles = result.out.split("---\n")
    return {"domains": domains, "xenstore": store, "free": free, "consoles": consoles}


def domains_json(lab: Lab) -> dict[str, dict]:
    result = xentool(lab, "list", "--json")
    assert result.returncode == 0, result.err
    return {d["name"]: d for d in json.loads(result.out)}


@pytest.mark.parametrize("guest_type", ["pv", "pvh"])
def test_guest_boots_and_prints_its_marker_on_the_console_log(lab, guests, guest_type):
    name = f"hello-{guest_type}"
    created = xentool(lab, "create", str(write_config(lab, guests, name, guest_type)))
    assert created.returncode == 0, created.err
    try:
        log = wait_for_console(lab, name, f"xentool-guest: marker={name}")
        assert "Linux version" in log  # the log starts with the kernel's first lines
        listed = domains_json(lab)[name]
        assert listed["type"] == guest_type and listed["memory_mib"] == 128
    finally:
        xentool(lab, "destroy", name)


def test_xl_sees_xentool_guest_and_destroys_it_cleanly(lab, guests):
    before = host_state(lab)
    assert xentool(lab, "create", str(write_config(lab, guests, "for-xl", vcpus=2))).returncode == 0
    wait_for_console(lab, "for-xl", "xentool-guest: marker=for-xl")  # xl counts vcpus the guest brought up
    xl = lab.exec(["xl", "list", "for-xl"], capture=True)
    assert xl.returncode == 0, xl.err
    fields = xl.out.splitlines()[1].split()
    assert (fields[0], fields[2], fields[3]) == ("for-xl", "128", "2")
    assert lab.exec(["xl", "destroy", "for-xl"], capture=True).returncode == 0
    time.sleep(2)  # the console backend notices within a second
    assert "for-xl" not in domains_json(lab)
    after = host_state(lab)
    assert (after["domains"], after["free"]) == (before["domains"], before["free"])


def test_xentool_lists_and_destroys_a_guest_xl_created(lab, guests):
    cfg = lab.share_dir / "from-xl.cfg"
    cfg.write_text(
        f'name = "from-xl"\ntype = "pv"\nkernel = "{guests.kernel}"\nramdisk = "{guests.initrd}"\n'
        'extra = "console=hvc0 xentool.then=wait"\nmemory = 128\nvcpus = 1\n'
    )
    before = host_state(lab)
    created = lab.exec(["xl", "create", str(cfg)], capture=True, timeout=300)
    assert created.returncode == 0, created.err
    listed = domains_json(lab)["from-xl"]
    assert listed["memory_mib"] == 128 and listed["vcpus"] == 1
    assert xentool(lab, "destroy", "from-xl").returncode == 0
    assert lab.exec(["xl", "list", "from-xl"], capture=True).returncode != 0
    after = host_state(lab)
    assert (after["domains"], after["xenstore"], after["free"]) == (before["domains"], before["xenstore"], before["free"])


def test_shutdown_request_reaches_the_guest_and_on_poweroff_destroys_it(lab, guests):
    before = host_state(lab)
    assert xentool(lab, "create", str(write_config(lab, guests, "to-stop"))).returncode == 0
    wait_for_console(lab, "to-stop", "xentool-guest: marker=to-stop")
    stopped = xentool(lab, "shutdown", "-w", "to-stop", timeout=300)
    assert stopped.returncode == 0, stopped.err
    after = host_state(lab)
    assert after == before


def test_reboot_restarts_the_guest_with_the_same_uuid(lab, guests):
    assert xentool(lab, "create", str(write_config(lab, guests, "to-reboot"))).returncode == 0
    try:
        first = domains_json(lab)["to-reboot"]
        wait_for_console(lab, "to-reboot", "xentool-guest: marker=to-reboot")
        rebooted = xentool(lab, "reboot", "to-reboot", timeout=300)
        assert rebooted.returncode == 0, rebooted.err
        again = domains_json(lab)["to-reboot"]
        assert again["uuid"] == first["uuid"] and again["domid"] != first["domid"]
        log = wait_for_console(lab, "to-reboot", "rebooting")
        assert log.count("xentool-guest: marker=to-reboot") >= 1
    finally:
        xentool(lab, "destroy", "to-reboot")


def test_bad_input_on_real_xen_is_one_line_and_leaves_the_host_as_it_was(lab, guests):
    not_a_kernel = lab.share_dir / "not-a-kernel"
    not_a_kernel.write_text("this is not a kernel\n")
    cases = {
        "not a kernel": (write_config(lab, guests, "bad-kernel", kernel=str(not_a_kernel)), 5, "kernel"),
        "missing ramdisk": (write_config(lab, guests, "bad-ramdisk", ramdisk="/nonexistent/initrd.gz"), 5, "ramdisk"),
        "too much memory": (write_config(lab, guests, "too-big", memory="64G"), None, "free"),
    }
    before = host_state(lab)
    for what, (config, code, word) in cases.items():
        result = xentool(lab, "create", str(config))
        assert result.returncode != 0, what
        if code is not None:
            assert result.returncode == code, (what, result.err)
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and word in lines[0] and "Traceback" not in result.err, (what, result.err)
        assert host_state(lab) == before, what
    assert xentool(lab, "create", str(write_config(lab, guests, "twice"))).returncode == 0
    try:
        during = host_state(lab)
        again = xentool(lab, "create", str(write_config(lab, guests, "twice")))
        assert again.returncode == 4 and "already exists" in again.err
        assert host_state(lab)["domains"] == during["domains"]
    finally:
        xentool(lab, "destroy", "twice")
