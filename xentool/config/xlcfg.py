"""Importing xl.cfg files: xl's ``key = value`` syntax, mapped onto xentool's YAML config.

xl.cfg (docs/man/xl.cfg.5) is a list of ``KEY = VALUE`` settings, one per line or separated by
``;``, where a value is a "string" or 'string', a number, or a [list, of, values] that may span
lines; ``#`` starts a comment and ``KEY += VALUE`` appends.  Settings xentool has no equivalent
for are left out with a warning each, so nothing is dropped silently; a file that is not xl.cfg
syntax is a ConfigError with line numbers.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from xentool.config.loader import config_from_dict
from xentool.config.model import GuestConfig
from xentool.config.xlspec import VIF_KEYS, VIF_SCRIPTS
from xentool.errors import ConfigError, ConfigIssue


@dataclass(frozen=True)
class XlSetting:
    key: str
    value: Any  # str, int, or a list of them
    line: int


_TOKEN = re.compile(
    r"""
    (?P<space>[ \t\r]+|\\\n)
  | (?P<comment>\#[^\n]*)
  | (?P<newline>\n)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>[0-9][0-9A-Za-z_.]*)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.-]*)
  | (?P<op>\+=|=|\[|\]|,|;)
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}


def _tokens(text: str, source: str) -> tuple[list[tuple[str, str, int, int]], list[ConfigIssue]]:
    tokens: list[tuple[str, str, int, int]] = []
    issues: list[ConfigIssue] = []
    pos, line, line_start = 0, 1, 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        column = pos - line_start + 1
        if not match:
            char = text[pos]
            what = "an unterminated string" if char in "\"'" else f"{char!r}, which xl.cfg syntax has no use for"
            issues.append(ConfigIssue(source, line, column, "", f"not xl.cfg syntax: {what}"))
            end = text.find("\n", pos)
            pos = len(text) if end < 0 else end
            continue
        kind = match.lastgroup or ""
        if kind not in ("space", "comment"):
            tokens.append((kind, match.group(), line, column))
        if "\n" in match.group():
            line += match.group().count("\n")
            line_start = match.end()
        pos = match.end()
    tokens.append(("newline", "\n", line, 1))
    return tokens, issues


def _unquote(token: str) -> str:
    body = token[1:-1]
    return re.sub(r"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), body)


def _number(token: str) -> int | str:
    try:
        return int(token, 0)
    except ValueError:
        return token  # "1.5" or "512M": left as text for the model to judge


class _Parser:
    def __init__(self, tokens: list[tuple[str, str, int, int]], source: str) -> None:
        self.tokens = tokens
        self.source = source
        self.pos = 0

    def peek(self) -> tuple[str, str, int, int]:
        return self.tokens[min(self.pos, len(self.tokens) - 1)]

    def take(self) -> tuple[str, str, int, int]:
        token = self.peek()
        self.pos += 1
        return token

    def error(self, token: tuple[str, str, int, int], message: str, key: str = "") -> ConfigIssue:
        return ConfigIssue(self.source, token[2], token[3], key, f"not xl.cfg syntax: {message}")

    def skip_newlines(self) -> None:
        while self.peek()[0] == "newline" and self.pos < len(self.tokens) - 1:
            self.pos += 1

    def value(self, key: str, depth: int = 0) -> Any:
        token = self.take()
        kind, text = token[0], token[1]
        if kind == "string":
            return _unquote(text)
        if kind == "number":
            return _number(text)
        if text == "[" and depth < 8:
            items: list[Any] = []
            self.skip_newlines()
            while self.peek()[1] != "]":
                items.append(self.value(key, depth + 1))
                self.skip_newlines()
                if self.peek()[1] == ",":
                    self.take()
                    self.skip_newlines()
                elif self.peek()[1] != "]":
                    raise _Syntax(self.error(self.peek(), f"expected , or ] in the list, found {self.peek()[1]!r}", key))
            self.take()
            return items
        if kind == "ident":
            raise _Syntax(self.error(token, f'{text} is not a value; quote text, like "{text}"', key))
        found = "the end of the line" if kind == "newline" else repr(text)
        raise _Syntax(self.error(token, f"expected a value (a \"string\", a number or a [list]), found {found}", key))


class _Syntax(Exception):
    def __init__(self, issue: ConfigIssue) -> None:
        self.issue = issue


def parse_xl_cfg(text: str, source: str = "<xl.cfg>") -> list[XlSetting]:
    """The settings of an xl.cfg file, in order; ConfigError listing every syntax error."""
    tokens, issues = _tokens(text, source)
    parser = _Parser(tokens, source)
    settings: list[XlSetting] = []
    while parser.pos < len(tokens) - 1:
        token = parser.take()
        if token[0] == "newline" or token[1] == ";":
            continue
        try:
            if token[0] != "ident":
                raise _Syntax(parser.error(token, f"expected a setting name, found {token[1]!r}"))
            key = token[1]
            op = parser.take()
            if op[1] not in ("=", "+="):
                raise _Syntax(parser.error(op, f"expected = after {key}", key))
            value = parser.value(key)
            end = parser.peek()
            if end[0] != "newline" and end[1] != ";":
                raise _Syntax(parser.error(end, f"expected the end of the line after {key}'s value, found {end[1]!r}", key))
            if op[1] == "+=":
                previous = next((s for s in reversed(settings) if s.key == key), None)
                if previous is not None:
                    value = _appended(previous.value, value)
            settings.append(XlSetting(key, value, token[2]))
        except _Syntax as e:
            if e.issue.line not in {i.line for i in issues}:  # one issue a line: the first says it
                issues.append(e.issue)
            while parser.peek()[0] != "newline" and parser.pos < len(tokens) - 1:
                parser.pos += 1
    if issues:
        raise ConfigError(sorted(issues, key=lambda i: (i.line or 0, i.column or 0)))
    return settings


def _appended(old: Any, new: Any) -> Any:
    if isinstance(old, list):
        return old + (new if isinstance(new, list) else [new])
    return f"{old}{new}"


# -- mapping onto the model ---------------------------------------------------------------------

_FIRMWARE = {"bios": "bios", "seabios": "bios", "rombios": "bios", "uefi": "uefi", "ovmf": "uefi"}
_VIF_DROPPED = ("rate", "accel", "powerto", "devid", "mtu")


def _flag(value: Any) -> Any:
    """xl's 0/1 (or "0"/"1") as a bool; anything else is left for the model to reject."""
    if value in (0, 1, "0", "1"):
        return bool(int(value))
    return value


def _vif_spec(spec: Any, warnings: list[str], line: int) -> Any:
    if not isinstance(spec, str):
        return spec
    kept = []
    for item in spec.split(","):
        key = item.partition("=")[0].strip()
        if key in _VIF_DROPPED or (key == "script" and item.partition("=")[2].strip() not in VIF_SCRIPTS):
            warnings.append(f"line {line}: vif option {item.strip()!r} is not supported; left out")
            continue
        if key and key not in VIF_KEYS:
            warnings.append(f"line {line}: vif option {item.strip()!r} is not supported; left out")
            continue
        kept.append(item)
    return ",".join(kept)


class _Mapped:
    """The config data being built: the top level, and the sections that apply to HVM guests only."""

    def __init__(self, seen: dict[str, XlSetting]) -> None:
        self.seen = seen
        self.data: dict[str, Any] = {}
        self.sections: dict[str, dict[str, Any]] = {"hvm": {}, "vnc": {}, "device_model": {}}
        self.warnings: list[str] = []
        self.origin: dict[str, int] = {}  # top-level key -> the xl line it first came from

    def put(self, section: str, key: str, value: Any, line: int) -> None:
        """``section`` "" is the top level."""
        (self.sections[section] if section else self.data)[key] = value
        self.origin.setdefault(section or key, line)

    def warn(self, line: int, message: str) -> None:
        self.warnings.append(f"line {line}: {message}")


@dataclass(frozen=True)
class _To:
    """An xl key that is one of ours, perhaps under another name or in a section, its value converted if need be."""

    section: str  # "" for the top level
    key: str
    convert: Callable[[Any], Any] = lambda value: value

    def __call__(self, out: _Mapped, setting: XlSetting) -> None:
        out.put(self.section, self.key, self.convert(setting.value), setting.line)


@dataclass(frozen=True)
class _LeftOut:
    """An xl key whose job xentool does some other way (or not at all): a warning saying which."""

    reason: str

    def __call__(self, out: _Mapped, setting: XlSetting) -> None:
        out.warn(setting.line, f"{setting.key} is left out: {self.reason}")


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _builder(out: _Mapped, setting: XlSetting) -> None:
    # builder= is xl's deprecated spelling of type=; a type= setting wins over it.
    if "type" not in out.seen:
        out.put("", "type", "hvm" if setting.value == "hvm" else "pv", setting.line)


def _joined_later(out: _Mapped, setting: XlSetting) -> None:
    """root, cmdline and extra make one command line, in libxl's order, once all are read."""


def _cpus(out: _Mapped, setting: XlSetting) -> None:
    value = setting.value
    if isinstance(value, list):
        if len(value) > 1:
            out.warn(setting.line, f"per-vcpu {setting.key} lists are not supported; every vcpu gets every cpu listed")
        value = ",".join(str(v) for v in value)
    out.put("", setting.key, value, setting.line)


def _sched(key: str) -> Callable[[_Mapped, XlSetting], None]:
    """cpu_weight= and cap= go into the sched section, which every guest type has."""

    def put(out: _Mapped, setting: XlSetting) -> None:
        out.data.setdefault("sched", {})[key] = setting.value
        out.origin.setdefault("sched", setting.line)

    return put


def _vifs(out: _Mapped, setting: XlSetting) -> None:
    out.put("", "vifs", [_vif_spec(s, out.warnings, setting.line) for s in _as_list(setting.value)], setting.line)


def _serial(out: _Mapped, setting: XlSetting) -> None:
    value = setting.value
    if isinstance(value, list):
        if len(value) > 1:
            out.warn(setting.line, f"only the first serial port is supported; {value[1:]} left out")
        value = value[0] if value else None
    if value is not None:
        out.put("", "serial", value, setting.line)


def _firmware(out: _Mapped, setting: XlSetting) -> None:
    firmware = _FIRMWARE.get(str(setting.value).lower())
    if firmware is None:
        out.warn(setting.line, f"{setting.key}={setting.value!r} is not supported (use bios or uefi); left out")
        return
    if str(setting.value).lower() == "rombios":
        out.warn(setting.line, "rombios is replaced by SeaBIOS (hvm.firmware: bios)")
    out.put("hvm", "firmware", firmware, setting.line)


def _usb(out: _Mapped, setting: XlSetting) -> None:
    # The tablet is on unless asked otherwise, so only usb=0 (no USB controller, so no tablet) changes anything.
    if _flag(setting.value) is False:
        out.put("hvm", "usb_tablet", False, setting.line)


def _usbdevice(out: _Mapped, setting: XlSetting) -> None:
    devices = _as_list(setting.value)
    out.put("hvm", "usb_tablet", "tablet" in devices, setting.line)
    others = [d for d in devices if d != "tablet"]
    if others:
        out.warn(setting.line, f"usb devices {others} are not supported; left out")


def _device_model_args(out: _Mapped, setting: XlSetting) -> None:
    # xl passes both device_model_args and device_model_args_hvm to an HVM guest's QEMU: they add up.
    section = out.sections["device_model"]
    section["args"] = section.get("args", []) + _as_list(setting.value)
    out.origin.setdefault("device_model", setting.line)


def _bootloader_args(value: Any) -> list[Any]:
    # A string is xl's deprecated form, which libxl splits at spaces.
    return value.split() if isinstance(value, str) else _as_list(value)


_Handler = Callable[[_Mapped, XlSetting], None]

# Each xl.cfg key xentool knows, and what it becomes; a key not here is warned about and left out.
_KEYS: dict[str, _Handler] = {
    **{key: _To("", key) for key in ("name", "uuid", "type", "kernel", "ramdisk", "memory", "maxmem", "vcpus", "maxvcpus")},
    **{key: _To("", key) for key in ("on_poweroff", "on_reboot", "on_crash", "on_watchdog")},
    "initrd": _To("", "ramdisk"),
    "maxcpus": _To("", "maxvcpus"),
    "builder": _builder,
    "cmdline": _joined_later,
    "extra": _joined_later,
    "root": _joined_later,
    "cpus": _cpus,
    "cpus_soft": _cpus,
    "pool": _To("", "pool"),
    "cpu_weight": _sched("weight"),
    "cap": _sched("cap"),
    "disk": _To("", "disks", _as_list),
    "vif": _vifs,
    "serial": _serial,
    "vnc": _To("vnc", "enabled", _flag),
    "vnclisten": _To("vnc", "listen"),
    "vncdisplay": _To("vnc", "display"),
    "vncpasswd": _To("vnc", "password"),
    "boot": _To("hvm", "boot"),
    "acpi": _To("hvm", "acpi", _flag),
    "hap": _To("", "hap", _flag),
    "stdvga": _To("hvm", "stdvga", _flag),
    "hdtype": _To("hvm", "hdtype"),
    "viridian": _To("hvm", "viridian", _flag),
    "videoram": _To("hvm", "videoram"),
    "firmware": _firmware,
    "bios": _firmware,
    "usb": _usb,
    "usbdevice": _usbdevice,
    "device_model_override": _To("device_model", "path"),
    "device_model_args": _device_model_args,
    "device_model_args_hvm": _device_model_args,
    "device_model_user": _To("device_model", "user"),
    "bootloader": _To("", "bootloader"),  # "/usr/bin/pygrub" and Xen's own path mean pygrub
    "bootloader_args": _To("", "bootloader_args", _bootloader_args),
    "pae": _LeftOut("PAE is always on for 64-bit HVM guests"),
    "apic": _LeftOut("the APIC is always there"),
    "nx": _LeftOut("NX is always on"),
    "localtime": _LeftOut("the guest's clock is UTC"),
    "vncunused": _LeftOut("xentool picks a free display unless vnc.display is set"),
    "device_model_version": _LeftOut("xentool runs upstream QEMU (qemu-xen)"),
    "xen_platform_pci": _LeftOut("the Xen platform device is always there"),
    "hpet": _LeftOut("left at Xen's default"),
    "keymap": _LeftOut("left at QEMU's default"),
    "sdl": _LeftOut("xentool shows HVM displays over VNC only"),
    "opengl": _LeftOut("xentool shows HVM displays over VNC only"),
}


def _xl_to_data(settings: list[XlSetting]) -> tuple[dict[str, Any], list[str], dict[str, int]]:
    seen = {s.key: s for s in settings}  # the last setting of a key wins, as in xl
    out = _Mapped(seen)
    for setting in seen.values():
        handler = _KEYS.get(setting.key)
        if handler is None:
            out.warn(setting.line, f"{setting.key} is not something xentool supports; left out")
        else:
            handler(out, setting)
    _join_cmdline(out)
    _hvm_sections(out)
    return out.data, out.warnings, out.origin


def _join_cmdline(out: _Mapped) -> None:
    seen = out.seen
    parts = []
    if "root" in seen:
        parts.append(f"root={seen['root'].value}")
    for key in ("cmdline", "extra"):
        if key in seen:
            parts.append(str(seen[key].value))
    if "cmdline" in seen and "extra" in seen:
        out.warn(seen["extra"].line, "both cmdline and extra are set; xentool joins them")
    if parts:
        out.data["cmdline"] = " ".join(parts)
        out.origin["cmdline"] = min(seen[k].line for k in ("root", "cmdline", "extra") if k in seen)


def _hvm_sections(out: _Mapped) -> None:
    guest_type = str(out.data.get("type", "pv"))
    for key, section in out.sections.items():
        if not section:
            continue
        if guest_type != "hvm":
            out.warn(out.origin[key], f"{key} settings only apply to hvm guests; left out")
            continue
        out.data[key] = section
    if guest_type == "pv" and "hap" in out.data:  # xl ignores hap for a PV guest
        out.warn(out.origin["hap"], "hap only applies to hvm and pvh guests; left out")
        del out.data["hap"]


def _read(text_or_path: str | Path) -> tuple[str, str]:
    if isinstance(text_or_path, Path) or ("\n" not in text_or_path and "=" not in text_or_path):
        source = str(text_or_path)
        try:
            return Path(text_or_path).read_text(encoding="utf-8"), source
        except FileNotFoundError:
            raise ConfigError([ConfigIssue(source, None, None, "", "no such file")]) from None
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError([ConfigIssue(source, None, None, "", f"cannot be read: {e}")]) from None
    return text_or_path, "<xl.cfg>"


def import_xl_cfg(text_or_path: str | Path, source: str | None = None) -> tuple[dict[str, Any], list[str]]:
    """The config data an xl.cfg (text, or the path of a file) amounts to, and a warning per thing left out."""
    data, warnings, _ = _import(text_or_path, source)
    return data, warnings


def _import(text_or_path: str | Path, source: str | None) -> tuple[dict[str, Any], list[str], dict[str, int]]:
    text, default_source = _read(text_or_path)
    return _xl_to_data(parse_xl_cfg(text, source or default_source))


def xl_config(text_or_path: str | Path, source: str | None = None) -> tuple[GuestConfig, list[str]]:
    """The validated GuestConfig of an xl.cfg, and the warnings; issues point at the xl.cfg's lines."""
    text, default_source = _read(text_or_path)
    source = source or default_source
    data, warnings, origin = _xl_to_data(parse_xl_cfg(text, source))
    try:
        return config_from_dict(data, source=source), warnings
    except ConfigError as e:
        issues = [
            ConfigIssue(source, origin.get(_top_key(i.key_path)), None, i.key_path, i.message)
            for i in e.issues
        ]
        raise ConfigError(issues) from None


def _top_key(key_path: str) -> str:
    return re.split(r"[.\[]", key_path, maxsplit=1)[0]


def config_to_yaml(config: GuestConfig, header: str = "") -> str:
    """``config`` as readable YAML: keys in the model's order, defaults left out; loads back equal."""
    full = config.model_dump(mode="json", exclude_none=True)
    short = config.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
    out: dict[str, Any] = {}
    for key in GuestConfig.model_fields:
        if key in ("name", "type"):
            out[key] = full[key]
        elif key in short and short[key] not in ({}, []):
            out[key] = short[key]
    if out.get("maxmem") == full["memory"]:
        del out["maxmem"]
    if out.get("maxvcpus") == full["vcpus"]:
        del out["maxvcpus"]
    body = yaml.safe_dump(out, sort_keys=False, default_flow_style=False, allow_unicode=True, width=100)
    return header + body


def xl_cfg_to_yaml(path: str | Path) -> tuple[str, list[str]]:
    """An xl.cfg file as xentool YAML (with a header naming where it came from), and the warnings."""
    config, warnings = xl_config(Path(path), source=str(path))
    header = f"# converted from {path} by xentool config import\n"
    header += "".join(f"# warning: {w}\n" for w in warnings)
    return config_to_yaml(config, header), warnings
