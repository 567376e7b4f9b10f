"""Loading YAML configs: the examples, and every kind of mistake pointed at by file:line:col: key."""

from __future__ import annotations

from pathlib import Path

import pytest

from hypercalls.interface import GuestType
from xentool.config import config_from_dict, load_config, load_config_text
from xentool.config.model import Access, Action, DevType
from xentool.errors import ConfigError

EXAMPLES = sorted((Path(__file__).parents[2] / "configs" / "examples").glob("*.yaml"))
PV = "name: web\ntype: pv\nkernel: /k\n"


def issues(text: str, overrides: tuple[str, ...] = ()) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, "g.yaml", overrides)
    return [str(i) for i in caught.value.issues]


def one_issue(text: str, overrides: tuple[str, ...] = ()) -> str:
    found = issues(text, overrides)
    assert len(found) == 1, found
    return found[0]


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_every_example_loads_and_names_its_source(path):
    config = load_config(path)
    assert config.source == str(path)
    assert path.read_text().startswith("#"), "each example starts with a comment saying what it is"


def test_examples_cover_every_guest_type():
    types = {load_config(p).type for p in EXAMPLES}
    assert types == {GuestType.PV, GuestType.PVH, GuestType.HVM}


def test_defaults_follow_xl():
    config = load_config_text(PV, "g.yaml")
    assert (config.type, config.memory, config.maxmem, config.vcpus, config.max_vcpus) == (GuestType.PV, 128, 128, 1, 1)
    assert (config.on_poweroff, config.on_reboot, config.on_crash) == (Action.DESTROY, Action.RESTART, Action.DESTROY)
    assert config.memory_kib == 128 * 1024 and config.hvm is None


def test_hvm_guest_always_has_hvm_options():
    config = load_config_text("name: h\ntype: hvm\n", "g.yaml")
    assert config.hvm is not None and config.hvm.acpi and config.hvm.videoram == 8


def test_xl_spellings_of_disks_vifs_and_cpus():
    config = load_config_text(
        PV
        + "cpus: 0-2,5\n"
        + "disks:\n  - /img/a.raw,raw,xvda,rw\n  - phy:/dev/vg/b,xvdb,r\n  - format=raw,vdev=hdc:cdrom,target=/x.iso\n"
        + "vifs: ['bridge=xenbr1,mac=00:16:3E:00:00:01,model=e1000']\n",
        "g.yaml",
    )
    assert config.cpus == [0, 1, 2, 5]
    a, b, cd = config.disks
    assert (a.target, a.vdev, a.access) == ("/img/a.raw", "xvda", Access.RW)
    assert (b.target, b.backendtype.value, b.access) == ("/dev/vg/b", "phy", Access.RO)
    assert (cd.devtype, cd.access, cd.target) == (DevType.CDROM, Access.RO, "/x.iso")
    assert (config.vifs[0].bridge, config.vifs[0].mac, config.vifs[0].model) == ("xenbr1", "00:16:3e:00:00:01", "e1000")


def test_bad_size_points_at_the_value():
    assert one_issue(PV + "memory: lots\n") == 'g.yaml:4:9: memory: "lots" is not a size; use MiB or a size like 512M or 2G'


def test_unknown_key_suggests_the_close_one():
    assert one_issue(PV + "memroy: 128\n") == 'g.yaml:4:1: memroy: unknown key; did you mean "memory"?'


def test_xl_key_names_say_where_the_setting_lives():
    assert one_issue(PV + "extra: quiet\n") == 'g.yaml:4:1: extra: unknown key; xl\'s extra is "cmdline" here'


def test_missing_kernel_for_pv_points_at_the_mapping():
    message = one_issue("name: web\ntype: pv\n")
    assert message.startswith("g.yaml:1:1: kernel: missing; a pv guest")


def test_missing_name():
    assert one_issue("kernel: /k\n").startswith("g.yaml:1:1: name: missing")


def test_wrong_type_says_what_was_expected():
    assert one_issue(PV + "vcpus: two\n") == 'g.yaml:4:8: vcpus: "two" is not a whole number; write one like 2'
    assert one_issue(PV + "cmdline: [a]\n").startswith("g.yaml:4:10: cmdline: expected text")


def test_yaml_booleans_in_text_fields_get_a_quoting_hint():
    assert 'quote it: "yes"' in one_issue(PV + "cmdline: yes\n")


def test_bad_enum_lists_what_is_accepted():
    assert one_issue("name: web\ntype: xen\n") == 'g.yaml:2:7: type: "xen" is not accepted here; use pv, pvh or hvm'
    assert "destroy, restart, preserve" in one_issue(PV + "on_crash: explode\n")


def test_maxmem_below_memory():
    message = one_issue(PV + "memory: 512\nmaxmem: 256\n")
    assert message.startswith("g.yaml:5:9: maxmem: 256 MiB is less than memory (512 MiB)")


def test_maxvcpus_below_vcpus():
    assert one_issue(PV + "vcpus: 4\nmaxvcpus: 2\n").startswith("g.yaml:5:11: maxvcpus: 2 is less than vcpus (4)")


def test_bad_vdev():
    message = one_issue(PV + "disks:\n  - {target: /a, vdev: xvd1}\n")
    assert message.startswith("g.yaml:5:24: disks[0].vdev: 'xvd1' is not a virtual disk name")


def test_duplicate_vdev_points_at_the_second():
    message = one_issue(PV + "disks:\n  - {target: /a, vdev: xvda}\n  - {target: /b, vdev: xvda}\n")
    assert message == 'g.yaml:6:24: disks[1].vdev: "xvda" is already used by disks[0]; every disk needs its own vdev'


def test_disk_without_target_unless_empty_cdrom():
    assert one_issue(PV + "disks:\n  - vdev: xvda\n").startswith("g.yaml:5:5: disks[0].target: missing")
    config = load_config_text("name: h\ntype: hvm\ndisks: [{vdev: hdc, devtype: cdrom}]\n", "g.yaml")
    assert config.disks[0].target == "" and config.disks[0].access == Access.RO


def test_bad_mac():
    assert "is not a MAC address" in one_issue(PV + "vifs: [{mac: '00:16:3e:zz:00:01'}]\n")
    assert "multicast" in one_issue(PV + "vifs: [{mac: '01:16:3e:00:00:01'}]\n")


def test_hvm_section_on_a_pv_guest_names_the_key():
    message = one_issue(PV + "hvm:\n  boot: [cdrom]\n")
    assert message.startswith("g.yaml:5:3: hvm: only hvm guests have hvm; this is a pv guest")


def test_yaml_syntax_error_is_one_issue_with_its_position():
    message = one_issue("name: web\nkernel: [/k\nmemory: 3\n")
    assert message.startswith("g.yaml:3:7: not valid YAML:")


def test_tabs_get_a_hint():
    assert "not tabs" in one_issue("name: web\n\tkernel: /k\n")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("", "g.yaml: the config is empty"),
        ("- a\n", "g.yaml:1:1: a guest config is a mapping"),
        ("42\n", "g.yaml:1:1: a guest config is a mapping"),
    ],
)
def test_document_that_is_not_a_mapping(text, expected):
    assert one_issue(text).startswith(expected)


def test_duplicate_key_is_an_error():
    assert one_issue("name: a\nname: b\nkernel: /k\n") == "g.yaml:2:1: name: set twice; it was first set on line 1; keep one"


def test_every_error_is_reported_at_once_in_file_order():
    found = issues("name: 12\ntype: pv\nkernel: /k\nmemory: lots\nvcpus: 0\nmemroy: 1\nvifs: [{mac: nope}]\n")
    assert [i.split(": ")[0] for i in found] == ["g.yaml:1:7", "g.yaml:4:9", "g.yaml:5:8", "g.yaml:6:1", "g.yaml:7:14"]


def test_missing_and_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(tmp_path)
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(binary)


def test_issue_names_the_file_as_given(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntype: pv\nkernel: /k\nmemory: lots\n")
    with pytest.raises(ConfigError) as caught:
        load_config(bad)
    assert str(caught.value).startswith(f"{bad}:4:9: memory:")


def test_overrides_change_the_file(tmp_path):
    path = tmp_path / "g.yaml"
    path.write_text(PV + "memory: 256\n")
    config = load_config(path, ["memory=1024", "name=web2", "vcpus=2", "cmdline=console=hvc0 quiet"])
    assert (config.memory, config.maxmem, config.name, config.vcpus, config.cmdline) == (1024, 1024, "web2", 2, "console=hvc0 quiet")


def test_nested_overrides():
    config = load_config_text("name: h\ntype: hvm\ndisks: [{target: /a, vdev: hda}]\n", "g.yaml", ["hvm.boot=dc", "disks[0].target=/b"])
    assert [d.value for d in config.hvm.boot] == ["cdrom", "disk"] and config.disks[0].target == "/b"


def test_bad_overrides_are_command_line_issues():
    found = issues(PV, ("memory=lots", "bogus", "disks[3].vdev=xvda", "kernel.x=1"))
    assert "<command line>: 'bogus' is not an override; write KEY=VALUE, like memory=1024" in found
    assert '<command line>: memory: "lots" is not a size; use MiB or a size like 512M or 2G' in found
    assert "<command line>: disks[3].vdev: there is no disks[3] to change" in found
    assert any(i.startswith("<command line>: kernel.x:") for i in found)


def test_dict_configs_report_keys_without_lines():
    with pytest.raises(ConfigError) as caught:
        config_from_dict({"name": "web", "kernel": "/k", "memory": "lots"})
    assert str(caught.value) == '<dict>: memory: "lots" is not a size; use MiB or a size like 512M or 2G'
    with pytest.raises(ConfigError, match="a guest config is a mapping"):
        config_from_dict([1, 2])  # type: ignore[arg-type]


def test_yaml_does_not_turn_macs_into_numbers():
    config = load_config_text(PV + "vifs: [{mac: 10:20:30:40:50:52}]\n", "g.yaml")
    assert config.vifs[0].mac == "10:20:30:40:50:52"


def test_alias_cycles_and_bombs_are_issues():
    assert "circular" in one_issue("name: &a [*a]\n") or "nested" in one_issue("name: &a [*a]\n")
    bomb = "a: &a [x,x,x,x,x,x,x,x,x,x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]\n" for i in range(6)
    )
    assert "more than" in one_issue(bomb)


def test_hap_is_for_hvm_and_pvh_guests():
    assert one_issue(PV + "hap: false\n").startswith("g.yaml:4:6: hap: a pv guest has no paging mode to choose")
    assert load_config_text("name: h\ntype: pvh\nkernel: /k\nhap: false\n", "g.yaml").hap is False


def test_a_huge_or_deeply_nested_file_is_one_line_and_never_parsed_whole(tmp_path):
    """Issue 18, bad files: 10 MB of config (a 10 MB command line) is refused from its size, before
    it is read; 100000 levels of brackets are refused by the YAML reader's own depth limit."""
    big = tmp_path / "big.yaml"
    big.write_text("name: big\ntype: pv\nkernel: /k\ncmdline: \"" + "x" * (10 << 20) + "\"\n")
    with pytest.raises(ConfigError) as caught:
        load_config(big)
    assert str(caught.value) == f"{big}: 10.0 MiB is too large for a guest config (at most 1 MiB; one is a few KiB): is it the right file?"
    with pytest.raises(ConfigError, match="too large for a guest config"):
        load_config_text("x" * ((1 << 20) + 1), "typed.yaml")
    deep = "name: deep\ntype: pv\nkernel: /k\nextra: " + "[" * 100000 + "]" * 100000 + "\n"
    assert one_issue(deep).startswith("g.yaml:4:") and "nesting depth" in one_issue(deep)
