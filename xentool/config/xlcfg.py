"""Importing xl.cfg files: xl's ``key = value`` syntax, mapped onto xentool's YAML config.

xl.cfg (docs/man/xl.cfg.5) is a list of ``KEY = VALUE`` settings, one per line or separated by
``;``, where a value is a "string" or 'string', a number, or a [list, of, values] that may span
lines; ``#`` starts a comment and ``KEY += VALUE`` appends.  Settings xentool has no equivalent
for are left out with a warning each, so nothing is dropped silently; a file that is not xl.cfg
syntax is a ConfigError with line numbers.
"""

from __future__ import annotations

import re
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

_DIRECT = ("name", "uuid", "kernel", "ramdisk", "memory", "maxmem", "vcpus", "maxvcpus", "on_poweroff", "on_reboot", "on_crash", "on_watchdog")
_RENAMED = {"initrd": "ramdisk", "maxcpus": "maxvcpus"}
_IGNORED = {
    "pae": "PAE is always on for 64-bit HVM guests",
    "apic": "the APIC is always there",
    "hap": "Xen picks HAP when the host has it",
    "nx": "NX is always on",
    "localtime": "the guest's clock is UTC",
    "vncunused": "xentool picks a free display unless vnc.display is set",
    "device_model_version": "xentool runs upstream QEMU (qemu-xen)",
    "xen_platform_pci": "the Xen platform device is always there",
    "hpet": "left at Xen's default",
    "keymap": "left at QEMU's default",
    "sdl": "xentool shows HVM displays over VNC only",
    "opengl": "xentool shows HVM displays over VNC only",
}
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


def _xl_to_data(settings: list[XlSetting]) -> tuple[dict[str, Any], list[str], dict[str, int]]:
    data: dict[str, Any] = {}
    warnings: list[str] = []
    origin: dict[str, int] = {}
    seen = {s.key: s for s in settings}  # the last setting of a key wins, as in xl
    hvm: dict[str, Any] = {}
    vnc: dict[str, Any] = {}
    device_model: dict[str, Any] = {}

    def put(target: dict[str, Any], key: str, value: Any, line: int, top: str) -> None:
        target[key] = value
        origin.setdefault(top, line)

    for setting in seen.values():
        key, value, line = setting.key, setting.value, setting.line
        if key in _DIRECT or key in _RENAMED:
            put(data, _RENAMED.get(key, key), value, line, _RENAMED.get(key, key))
        elif key == "type":
            put(data, "type", value, line, "type")
        elif key == "builder":
            if "type" not in seen:
                put(data, "type", "hvm" if value == "hvm" else "pv", line, "type")
        elif key in ("cmdline", "extra", "root"):
            continue  # joined below, in libxl's order
        elif key == "cpus":
            if isinstance(value, list):
                if len(value) > 1:
                    warnings.append(f"line {line}: per-vcpu cpus lists are not supported; every vcpu may run on any cpu listed")
                value = ",".join(str(v) for v in value)
            put(data, "cpus", value, line, "cpus")
        elif key == "disk":
            put(data, "disks", value if isinstance(value, list) else [value], line, "disks")
        elif key == "vif":
            specs = value if isinstance(value, list) else [value]
            put(data, "vifs", [_vif_spec(s, warnings, line) for s in specs], line, "vifs")
        elif key == "serial":
            if isinstance(value, list):
                if len(value) > 1:
                    warnings.append(f"line {line}: only the first serial port is supported; {value[1:]} left out")
                value = value[0] if value else None
            if value is not None:
                put(data, "serial", value, line, "serial")
        elif key == "vnc":
            put(vnc, "enabled", _flag(value), line, "vnc")
        elif key in ("vnclisten", "vncdisplay", "vncpasswd"):
            put(vnc, {"vnclisten": "listen", "vncdisplay": "display", "vncpasswd": "password"}[key], value, line, "vnc")
        elif key == "boot":
            put(hvm, "boot", value, line, "hvm")
        elif key in ("acpi", "stdvga", "viridian"):
            put(hvm, key, _flag(value), line, "hvm")
        elif key == "videoram":
            put(hvm, "videoram", value, line, "hvm")
        elif key in ("firmware", "bios"):
            firmware = _FIRMWARE.get(str(value).lower())
            if firmware is None:
                warnings.append(f"line {line}: {key}={value!r} is not supported (use bios or uefi); left out")
            else:
                if str(value).lower() == "rombios":
                    warnings.append(f"line {line}: rombios is replaced by SeaBIOS (hvm.firmware: bios)")
                put(hvm, "firmware", firmware, line, "hvm")
        elif key == "usb":
            if _flag(value) is False:
                put(hvm, "usb_tablet", False, line, "hvm")
        elif key == "usbdevice":
            devices = value if isinstance(value, list) else [value]
            put(hvm, "usb_tablet", "tablet" in devices, line, "hvm")
            others = [d for d in devices if d != "tablet"]
            if others:
                warnings.append(f"line {line}: usb devices {others} are not supported; left out")
        elif key == "device_model_override":
            put(device_model, "path", value, line, "device_model")
        elif key in ("device_model_args", "device_model_args_hvm"):
            args = value if isinstance(value, list) else [value]
            device_model["args"] = device_model.get("args", []) + args
            origin.setdefault("device_model", line)
        elif key == "device_model_user":
            put(device_model, "user", value, line, "device_model")
        elif key == "bootloader":
            warnings.append(f"line {line}: bootloader={value!r} is not supported; set kernel (and ramdisk) to the guest's kernel files")
        elif key in _IGNORED:
            warnings.append(f"line {line}: {key} is left out: {_IGNORED[key]}")
        else:
            warnings.append(f"line {line}: {key} is not something xentool supports; left out")

    parts = []
    if "root" in seen:
        parts.append(f"root={seen['root'].value}")
    for key in ("cmdline", "extra"):
        if key in seen:
            parts.append(str(seen[key].value))
    if "cmdline" in seen and "extra" in seen:
        warnings.append(f"line {seen['extra'].line}: both cmdline and extra are set; xentool joins them")
    if parts:
        data["cmdline"] = " ".join(parts)
        origin["cmdline"] = min(seen[k].line for k in ("root", "cmdline", "extra") if k in seen)
    guest_type = str(data.get("type", "pv"))
    extras = {"hvm": hvm, "vnc": vnc, "device_model": device_model}
    for key, section in extras.items():
        if not section:
            continue
        if guest_type != "hvm":
            warnings.append(f"line {origin[key]}: {key} settings only apply to hvm guests; left out")
            continue
        data[key] = section
    return data, warnings, origin


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
