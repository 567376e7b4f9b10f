"""`xentool apply` on real Xen: a folder of guest files made real, a live change Xen reports, and a
second apply that does nothing."""

from __future__ import annotations

import json

import pytest

from kit.lab import domains_json, wait_for_console, xentool

pytestmark = pytest.mark.lab


def test_apply_makes_a_folder_real_changes_memory_live_and_then_has_nothing_to_do(lab, guests):
    folder = lab.share_dir / "applied"
    folder.mkdir(exist_ok=True)

    def write(memory: int) -> None:
        (folder / "applied-web.yaml").write_text(
            f"name: applied-web\ntype: pv\nkernel: {guests.kernel}\nramdisk: {guests.initrd}\n"
            f'cmdline: "console=hvc0 xentool.marker=applied-web xentool.then=wait"\nmemory: {memory}\nmaxmem: 256\n')

    write(192)
    try:
        planned = xentool(lab, "apply", "--dry-run", str(folder))
        assert planned.returncode == 10 and planned.out.splitlines() == ["applied-web: define (new)", "applied-web: start"]
        applied = xentool(lab, "apply", str(folder))
        assert applied.returncode == 0 and "applied-web: as the files say" in applied.out, applied.err
        before = domains_json(lab)["applied-web"]
        wait_for_console(lab, "applied-web", "xentool-guest: marker=applied-web")
        write(160)
        changed = xentool(lab, "apply", str(folder))
        assert "applied-web: change live: memory 192 -> 160 MiB" in changed.out, changed.out + changed.err
        info = json.loads(xentool(lab, "info", "--json", "applied-web").out)
        assert info["target_memory_mib"] == 160 and info["domid"] == before["domid"]  # the same domain, live
        xl = lab.exec(["xenstore-read", f"/local/domain/{before['domid']}/memory/target"], capture=True).out.strip()
        assert int(xl) == 160 * 1024  # the balloon target the guest sees, in KiB
        again = xentool(lab, "apply", str(folder))
        assert (again.returncode, again.out) == (0, "no changes\n")
    finally:
        xentool(lab, "destroy", "applied-web")
        xentool(lab, "undefine", "applied-web")
