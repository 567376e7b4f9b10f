"""What the lab's test modules share: running xentool in the lab's dom0, guest configs, waiting for
a guest's console, and the host state a test compares before and after (domains, xenstore, free
memory, console backends, device models).  The fixtures that go with them (``guests``) are in
tests/lab/conftest.py; the session's ``lab`` fixture is in tests/conftest.py.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
import uuid
from pathlib import Path

import pytest

from xentool.devicemodel.paths import device_model_log_path
from xentool.lab import Lab
from xentool.lab import guest_images as gi
from xentool.lab.guest_images import GuestImages

XENTOOL = str(Path(sys.prefix) / "bin" / "xentool")
PYTHON = str(Path(sys.prefix) / "bin" / "python3")
BOOT_TIMEOUT = 240.0  # seconds; a guest kernel under TCG on a busy 2-core host
HVM_BOOT_TIMEOUT = 420.0  # seconds: SeaBIOS, isolinux and Linux with every I/O emulated, under TCG
SAVE_DIR = "/var/tmp/xentool-test-save"  # in dom0's own memory (its overlay), not on a 9p share


def xentool(lab: Lab, *args: str, timeout: float = 300):
    return lab.exec([XENTOOL, *args], capture=True, timeout=timeout)


def ensure_xenconsoled(lab: Lab) -> None:
    """xl create waits for xenconsoled to take the guest's console; the lab starts it only when
    asked, as it is not xentool's.  Running it also shows the two console backends coexist."""
    script = "pgrep -x xenconsoled >/dev/null || /usr/lib/xen-4.17/bin/xenconsoled --pid-file=/run/xenconsoled.pid"
    assert lab.exec(["sh", "-c", script], capture=True).returncode == 0


def write_config(lab: Lab, guests: GuestImages, name: str, type_: str = "pv", then: str = "wait", **extra) -> Path:
    settings = {
        "name": name,
        "type": type_,
        "kernel": str(guests.kernel),
        "ramdisk": str(guests.initrd),
        "cmdline": f'"console=hvc0 xentool.marker={name} xentool.then={then}"',
        "memory": 128,
        **extra,
    }
    path = lab.share_dir / f"{name}-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text("".join(f"{key}: {value}\n" for key, value in settings.items()))
    return path


def wait_for_console(lab: Lab, name: str, text: str, timeout: float = BOOT_TIMEOUT) -> str:
    """Poll the guest's console log (the file: a `xentool console --log` costs seconds of Python
    start-up in the lab's dom0), then check that `console --log` shows the same.  The guest is
    found by `info`, which waits while the supervisor restarts it (a PVH guest in the lab may
    triple-fault early, which Xen reports as a reboot: docs/devices-facts.md)."""
    found = xentool(lab, "info", "--json", name)
    assert found.returncode == 0, found.err
    uuid_ = json.loads(found.out)["uuid"]
    deadline = time.monotonic() + timeout
    log = ""
    while time.monotonic() < deadline:
        log = lab.exec(["cat", f"/var/log/xentool/console/{uuid_}.log"], capture=True).out
        if text in log:
            shown = xentool(lab, "console", "--log", name)
            assert shown.returncode == 0 and text in shown.out, shown.err
            return shown.out
        time.sleep(2)
    pytest.fail(f"{text!r} did not appear on {name}'s console within {timeout:.0f} s; log tail:\n{log[-1500:]}\n"
                f"{what_the_guest_did(lab, uuid_)}")


def what_the_guest_did(lab: Lab, uuid_: str) -> str:
    """For a guest that did not say what was awaited: whether it ran at all (its CPU time in xl's
    list), what its device model last said, and Xen's last words about it (a guest that never
    printed anything, CI 2026-12-01, left nothing else to go by)."""
    script = (f"xl list -v; echo '--- device model log (tail):'; tail -n 15 {device_model_log_path(uuid_)} 2>&1; "
              "echo '--- xl dmesg (tail):'; xl dmesg | tail -n 15")
    return lab.exec(["sh", "-c", script], capture=True).out


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


def device_models(lab: Lab) -> str:
    return lab.exec(["sh", "-c", "pgrep -a xen-qemu || true"], capture=True).out


def leftovers(lab: Lab) -> dict[str, object]:
    """host_state plus what an HVM guest adds: QEMU processes, QMP sockets, device-model nodes."""
    state = host_state(lab)
    # (domid-history is xl's own record of recently used domids.)
    extra = lab.exec(["sh", "-c", "ls /var/run/xen 2>/dev/null | grep -v domid-history; echo ---; "
                      "xenstore-ls /local/domain/0/device-model 2>/dev/null; echo ---; ip -o link | grep -c emu || true"],
                     capture=True).out
    # libxl removes device-model/<domid> but leaves its parent, even when empty; xentool removes
    # an empty parent.  Either is clean.
    state["xenstore"] = state["xenstore"].replace('/local/domain/0/device-model = ""\n', "")
    return {**state, "dm": device_models(lab), "hvm": extra}


# -- a guest that counts on its console (then=count), for save and restore ---------------------------


def counts(lab: Lab, uuid: str) -> list[int]:
    log = lab.exec(["cat", f"/var/log/xentool/console/{uuid}.log"], capture=True).out
    return [int(n) for n in re.findall(r"xentool-guest: count=(\d+)", log)]


def wait_for_count_above(lab: Lab, uuid: str, floor: int, timeout: float = 120) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = counts(lab, uuid)
        if seen and seen[-1] > floor:
            return seen[-1]
        time.sleep(2)
    pytest.fail(f"the guest's count did not pass {floor} within {timeout:.0f} s (last: {counts(lab, uuid)[-3:]})")


# -- what building HVM boot media needs on the host (Debian's genisoimage, isolinux, syslinux) -------

missing_boot_media_tools = [what for what, ok in (
    ("genisoimage (package genisoimage)", shutil.which("genisoimage")),
    ("isoinfo (package genisoimage)", shutil.which("isoinfo")),
    (f"{gi.ISOLINUX_BIN} (package isolinux)", gi.ISOLINUX_BIN.is_file()),
    (f"{gi.LDLINUX_C32} (package syslinux-common)", gi.LDLINUX_C32.is_file()),
) if not ok]
needs_boot_media_tools = pytest.mark.skipif(bool(missing_boot_media_tools),
                                            reason="missing " + ", ".join(missing_boot_media_tools))
needs_isohybrid = pytest.mark.skipif(shutil.which("isohybrid") is None,
                                     reason="isohybrid missing (package syslinux-utils)")


def restart_daemon(lab: Lab) -> None:
    """Stop dom0's daemon; init starts it again (as systemd's Restart= would), and it serves."""
    assert xentool(lab, "daemon", "stop").returncode == 0
    started = xentool(lab, "daemon", "start")
    assert started.returncode == 0, started.err
