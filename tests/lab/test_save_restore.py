"""Save and restore on real Xen: a PV guest that counts on its console is checkpointed (and goes
on), saved (and is gone), restored (and counts on from where it was, without booting again); a cut
save file is refused before anything is created.  An HVM guest's save and restore (with its device
model's state) is part of tests/lab/test_hvm.py's CD-ROM guest, to spare an HVM boot.
"""

from __future__ import annotations

import pytest

from kit.lab import (
    SAVE_DIR,
    counts,
    domains_json,
    host_state,
    wait_for_console,
    wait_for_count_above,
    write_config,
    xentool,
)

pytestmark = pytest.mark.lab


def test_save_checkpoint_restore_and_a_cut_file(lab, guests):
    assert lab.exec(["mkdir", "-p", SAVE_DIR], capture=True).returncode == 0
    created = xentool(lab, "create", str(write_config(lab, guests, "counter", then="count")))
    assert created.returncode == 0, created.err
    try:
        wait_for_console(lab, "counter", "xentool-guest: count=3")
        first = domains_json(lab)["counter"]
        uuid = first["uuid"]

        checkpoint = xentool(lab, "save", "-c", "counter", f"{SAVE_DIR}/checkpoint.save")
        assert checkpoint.returncode == 0, checkpoint.err
        assert "still running" in checkpoint.out
        after_checkpoint = counts(lab, uuid)[-1]
        wait_for_count_above(lab, uuid, after_checkpoint)  # it goes on counting
        assert domains_json(lab)["counter"]["domid"] == first["domid"]

        saved = xentool(lab, "save", "counter", f"{SAVE_DIR}/counter.save")
        assert saved.returncode == 0, saved.err
        assert "counter" not in domains_json(lab)
        last = counts(lab, uuid)[-1]
        boots = lab.exec(["grep", "-c", "marker=counter", f"/var/log/xentool/console/{uuid}.log"], capture=True).out

        before = host_state(lab)
        cut = f"{SAVE_DIR}/cut.save"
        assert lab.exec(["sh", "-c", f"head -c 50000000 {SAVE_DIR}/counter.save > {cut}"], capture=True).returncode == 0
        refused = xentool(lab, "restore", cut)
        assert refused.returncode == 2
        assert f"{cut}: it has no end marker" in refused.err and len(refused.err.strip().splitlines()) == 1, refused.err
        assert host_state(lab) == before

        restored = xentool(lab, "restore", f"{SAVE_DIR}/counter.save")
        assert restored.returncode == 0, restored.err
        said = restored.err.splitlines()  # not a terminal: a line per phase, with the MiB in all
        assert said[0].startswith("restoring counter.save: checking the file (") and said[0].endswith(" MiB)"), said
        assert said[1].startswith("restoring counter.save: loading the guest's memory ("), said
        again = domains_json(lab)["counter"]
        assert again["uuid"] == uuid
        resumed_at = wait_for_count_above(lab, uuid, last)
        assert resumed_at <= last + 60  # it went on from where it was, not from 0
        log_after = lab.exec(["grep", "-c", "marker=counter", f"/var/log/xentool/console/{uuid}.log"], capture=True).out
        assert log_after == boots  # and it did not boot again
    finally:
        xentool(lab, "destroy", "counter")
        lab.exec(["rm", "-rf", SAVE_DIR], capture=True)

