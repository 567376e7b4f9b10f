"""The save file's frame: a whole file reads back; a cut, damaged or foreign one is refused with
one line naming the file, before restore creates anything."""

from __future__ import annotations

import os

import pytest

from xentool import savefile
from xentool.savefile import SaveFileError

STREAM = bytes(range(256)) * 4096  # stands in for Xen's migration stream


def write(path, stream: bytes = STREAM, guest_type: str = "pv", dm_state: bytes | None = None) -> None:  # type: ignore[no-untyped-def]
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        offset = savefile.write_header(fd, "web", "1b4e28ba-2fa1-11d2-883f-0016d3cca427", guest_type, {"name": "web"}, 1.5)
        os.write(fd, stream)
        if dm_state is not None:
            savefile.append_device_model_state(fd, dm_state)
        savefile.finish(fd, offset)
    finally:
        os.close(fd)


def test_a_whole_file_reads_back(tmp_path):
    path = tmp_path / "web.save"
    write(path)
    saved = savefile.read(path)
    assert (saved.name, saved.type, saved.config, saved.stream_length) == ("web", "pv", {"name": "web"}, len(STREAM))
    with open(path, "rb") as f:
        f.seek(saved.stream_offset)
        assert f.read(saved.stream_length) == STREAM


@pytest.mark.parametrize("damage, words", [
    (lambda data: data[: len(data) // 2], "no end marker"),
    (lambda data: data[:-1], "no end marker"),
    (lambda data: data[:200] + b"X" + data[201:], "checksum does not match"),
    (lambda data: b"NOT A SAVE FILE\n" + data, "not a xentool save file"),
    (lambda data: data[:20], "cut off"),
    (lambda data: data[:-savefile.TRAILER_SIZE] + b"more" + data[-savefile.TRAILER_SIZE:], "cut or added to"),
])
def test_a_cut_damaged_or_foreign_file_is_refused(tmp_path, damage, words):
    path = tmp_path / "web.save"
    write(path)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(SaveFileError) as caught:
        savefile.read(path)
    message = str(caught.value)
    assert str(path) in message and words in message and "nothing was restored" in message
    assert "\n" not in message


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(SaveFileError, match="cannot open it: No such file"):
        savefile.read(tmp_path / "nope.save")


def test_an_hvm_guest_s_device_model_state_follows_the_stream(tmp_path):
    path = tmp_path / "win.save"
    state = b"QEVM" + bytes(5000)
    write(path, guest_type="hvm", dm_state=state)
    saved = savefile.read(path)
    assert saved.dm_state_offset == saved.stream_offset + len(STREAM)
    with open(path, "rb") as f:
        f.seek(saved.dm_state_offset)
        assert f.read(len(state)) == state
    write(tmp_path / "web.save")
    assert savefile.read(tmp_path / "web.save").dm_state_offset is None  # a PV guest has none


def test_an_hvm_save_without_its_device_model_state_is_refused(tmp_path):
    path = tmp_path / "win.save"
    write(path, guest_type="hvm")
    with pytest.raises(SaveFileError, match="an HVM guest without its device model's state"):
        savefile.read(path)


SEED = 18  # the damage below is random but repeatable: the seed, in the test's name too


def test_100_seeded_cuts_and_bit_flips_are_each_refused_before_a_restore_creates_anything(tmp_path, sim_url):
    """Issue 18, bad files: a save file cut at, or with one bit flipped at, a random offset
    (100 cases, seeded) is refused by `xentool restore` with one line naming the file, and the
    host's domains are as they were."""
    import random

    import xentool

    path = tmp_path / "web.save"
    write(path)
    whole = path.read_bytes()
    chance = random.Random(SEED)
    refused = 0
    with xentool.connect(sim_url) as xt:
        before = [d.name for d in xt.list_domains()]
        for case in range(100):
            offset = chance.randrange(len(whole))
            if case % 2:
                damaged = whole[:offset]
            else:
                flipped = whole[offset] ^ (1 << chance.randrange(8))
                damaged = whole[:offset] + bytes([flipped]) + whole[offset + 1:]
            path.write_bytes(damaged)
            with pytest.raises(SaveFileError) as caught:
                xt.restore(path)
            assert str(path) in str(caught.value) and "\n" not in str(caught.value), (case, offset)
            refused += 1
        assert [d.name for d in xt.list_domains()] == before
    print(f"seed {SEED}: {refused} of 100 damaged save files refused, no domain made")
    assert refused == 100


def test_a_restore_says_how_far_it_is_checking_the_file_then_loading_the_memory(tmp_path, sim_url, capsys, monkeypatch):
    """Issue 17, progress: a restore reports the file's check, then libxenguest's reading of the
    stream (MiB done of MiB in all: the file descriptor's offset, read by a thread), as save and
    migrate report Xen's copy; on stderr, a line per phase when not on a terminal, nothing with
    --json.  (The simulator restores no memory: the lab test restores a real guest.)"""
    import threading
    import time

    from kit.cli import run
    from xentool.create import build
    from xentool.create.build import SaveFileSource
    from xentool.savefile import CHECKING, LOADING

    path = tmp_path / "web.save"
    write(path, stream=bytes(3 << 20))
    heard: list[tuple[str, int, int]] = []
    saved = savefile.read(path, lambda what, done, total: heard.append((what, done, total)))
    assert {what for what, _, _ in heard} == {CHECKING} and heard[-1] == (CHECKING, 3, 3)

    heard.clear()
    monkeypatch.setattr(build, "PROGRESS_SECONDS", 0.05)
    source = SaveFileSource(str(path), saved.stream_offset, length=saved.stream_length,
                            progress=lambda what, done, total: heard.append((what, done, total)))
    fd = source.open_stream()
    try:
        with source.loading(fd):
            for _ in range(3):  # as libxenguest reads the stream, a MiB at a time
                os.read(fd, 1 << 20)
                time.sleep(0.2)
    finally:
        os.close(fd)
    assert {what for what, _, _ in heard} == {LOADING} and heard[-1] == (LOADING, 3, 3)
    dones = [done for _, done, _ in heard]
    assert dones == sorted(dones) and len(set(dones)) >= 3, heard  # it moved as the reading did
    assert threading.active_count() == 1 or all(t.name != "restore-progress" for t in threading.enumerate())

    code, _, err = run(capsys, "--connect", sim_url, "restore", str(path))
    assert code != 0 and err.splitlines()[0] == f"restoring web.save: {CHECKING} (3 MiB)", err  # then its config's error
    code, _, err = run(capsys, "--connect", sim_url, "restore", str(path), "--json")
    assert code != 0 and err.startswith("{"), err  # the error alone, as JSON
