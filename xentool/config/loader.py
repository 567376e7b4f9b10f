"""Reading a guest config: YAML text (with positions) plus command-line overrides -> GuestConfig.

The YAML is composed into nodes rather than loaded straight to Python values, so that every value
and every key keeps the line and column it was written at; when the model rejects something, the
issue points there.  Every problem in the input is reported at once, as a ConfigError whose issues
read ``file:line:col: key.path: what is wrong; what is accepted``.  Nothing else escapes: whatever
the input, the result is a GuestConfig or a ConfigError.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from xentool.config.model import FieldProblems, GuestConfig
from xentool.errors import ConfigError, ConfigIssue

CMDLINE = "<command line>"
KeyPath = tuple[str | int, ...]

MAX_DEPTH = 32
MAX_NODES = 20000  # far beyond any real config; stops alias bombs ("billion laughs")
# A guest config is a few KiB.  Anything past this is the wrong file (or a hostile one): refused
# before it is read, as parsing 10 MB of YAML costs seconds and half a GiB.
MAX_CONFIG_BYTES = 1 << 20

# xl.cfg names people will type out of habit, and where the setting lives here.
XL_NAMES = {
    "extra": "cmdline",
    "root": "cmdline",
    "builder": "type",
    "disk": "disks",
    "vif": "vifs",
    "boot": "hvm.boot",
    "acpi": "hvm.acpi",
    "viridian": "hvm.viridian",
    "stdvga": "hvm.stdvga",
    "videoram": "hvm.videoram",
    "bios": "hvm.firmware",
    "firmware": "hvm.firmware",
    "usb": "hvm.usb_tablet",
    "usbdevice": "hvm.usb_tablet",
    "vnclisten": "vnc.listen",
    "vncdisplay": "vnc.display",
    "vncpasswd": "vnc.password",
    "device_model_override": "device_model.path",
    "device_model_args": "device_model.args",
    "device_model_user": "device_model.user",
    "initrd": "ramdisk",
    "maxcpus": "maxvcpus",
    "cpu": "cpus",
}


def key_path_text(path: Iterable[str | int]) -> str:
    """("disks", 1, "vdev") -> "disks[1].vdev"."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


@dataclass(frozen=True)
class _Where:
    source: str
    line: int | None = None
    column: int | None = None


@dataclass
class _Positions:
    """Where each value (and each mapping key) of the document was written."""

    source: str
    values: dict[KeyPath, _Where] = field(default_factory=dict)
    keys: dict[KeyPath, _Where] = field(default_factory=dict)
    raw: dict[KeyPath, str] = field(default_factory=dict)  # scalars' text as written, for hints

    def value(self, path: KeyPath) -> _Where:
        """The value at ``path``, or the nearest enclosing one written (a missing key's mapping)."""
        for end in range(len(path), -1, -1):
            where = self.values.get(tuple(path[:end]))
            if where is not None:
                return where
        return _Where(self.source)

    def key(self, path: KeyPath) -> _Where:
        return self.keys.get(tuple(path)) or self.value(path)

    def overridden(self, path: KeyPath) -> None:
        """From here down the value came from the command line, not the file."""
        for table in (self.values, self.keys, self.raw):
            for known in [p for p in table if p[: len(path)] == path]:
                del table[known]
        self.values[path] = self.keys[path] = _Where(CMDLINE)

    def issue(self, where: _Where, path: KeyPath, message: str) -> ConfigIssue:
        return ConfigIssue(where.source, where.line, where.column, key_path_text(path), message)


def _mark(source: str, mark: Any) -> _Where:
    if mark is None:
        return _Where(source)
    return _Where(source, mark.line + 1, mark.column + 1)


# -- YAML with positions ------------------------------------------------------------------------

_PLAIN_TAGS = ("tag:yaml.org,2002:timestamp",)
_NUMBER_TAGS = ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")


class _TooBig(Exception):
    def __init__(self, mark: Any, message: str) -> None:
        self.mark = mark
        self.message = message


class _Builder:
    """Turns composed YAML nodes into plain Python data, recording positions and soft issues."""

    def __init__(self, loader: yaml.SafeLoader | yaml.CSafeLoader, positions: _Positions) -> None:
        self.loader = loader
        self.positions = positions
        self.issues: list[ConfigIssue] = []
        self.nodes = 0
        self.ancestors: set[int] = set()

    def build(self, node: yaml.Node, path: KeyPath) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooBig(node.start_mark, f"the document has more than {MAX_NODES} values; a guest config is far smaller")
        if len(path) > MAX_DEPTH:
            raise _TooBig(node.start_mark, f"nested more than {MAX_DEPTH} levels deep; a guest config is far flatter")
        self.positions.values[path] = _mark(self.positions.source, node.start_mark)
        if isinstance(node, yaml.ScalarNode):
            self.positions.raw[path] = node.value
            return self._scalar(node)
        if id(node) in self.ancestors:
            raise _TooBig(node.start_mark, "an alias refers to a value that contains it; a config cannot be circular")
        self.ancestors.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, path + (index,)) for index, item in enumerate(node.value)]
            assert isinstance(node, yaml.MappingNode)  # YAML's third kind of node, after scalars and sequences
            return self._mapping(node, path)
        finally:
            self.ancestors.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode) -> Any:
        # YAML 1.1 reads 10:20:30 as a base-60 number and 2024-01-02 as a date; in a guest config
        # such text is a MAC, a time or a name, so it stays text.
        if node.tag in _PLAIN_TAGS or (node.tag in _NUMBER_TAGS and ":" in node.value):
            return node.value
        try:
            return self.loader.construct_object(node, deep=True)
        except Exception:  # noqa: BLE001 - a value PyYAML cannot build (odd tag, huge number): keep the text
            return node.value

    def _mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        source = self.positions.source
        try:
            self.loader.flatten_mapping(node)  # resolves "<<" merge keys
        except yaml.MarkedYAMLError as e:
            raise _TooBig(e.problem_mark, _yaml_problem(e)) from None
        result: dict[str, Any] = {}
        first_seen: dict[str, _Where] = {}
        for key_node, value_node in node.value:
            where = _mark(source, key_node.start_mark)
            if not isinstance(key_node, yaml.ScalarNode):
                self.issues.append(self.positions.issue(where, path, "a key must be a plain name, not a list or mapping"))
                continue
            # The key as written: "yes" stays "yes" rather than becoming True.
            key = key_node.value
            if key in first_seen:
                self.issues.append(
                    self.positions.issue(where, path + (key,), f"set twice; it was first set on line {first_seen[key].line}; keep one")
                )
            first_seen[key] = where
            self.positions.keys[path + (key,)] = where
            result[key] = self.build(value_node, path + (key,))
        return result


def _yaml_problem(e: yaml.YAMLError) -> str:
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    context = getattr(e, "context", None)
    text = f"{context}, {problem}" if context else problem
    if "\t" in text or "'\\t'" in text or "tab character" in text:
        text += " (YAML indents with spaces, not tabs)"
    return f"not valid YAML: {text}"


# libyaml's parser where PyYAML has it: the pure-Python one costs a second per config in the lab's
# dom0.  Both give the same nodes and marks.
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _parse_yaml(text: str, source: str, positions: _Positions) -> tuple[Any, list[ConfigIssue]]:
    """The document's data and any soft issues; ConfigError when there is no usable document."""
    loader = None
    try:
        loader = _SafeLoader(text)  # reads ahead: may already raise a ReaderError
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(
                [ConfigIssue(source, None, None, "", "the config is empty; a guest config is a mapping of keys, like name: web")]
            )
        builder = _Builder(loader, positions)
        data = builder.build(node, ())
        return data, builder.issues
    except yaml.YAMLError as e:
        where = _mark(source, getattr(e, "problem_mark", None) or getattr(e, "context_mark", None))
        if isinstance(e, yaml.reader.ReaderError):
            where = _line_of(source, text, e.position)
        raise ConfigError([ConfigIssue(source, where.line, where.column, "", _yaml_problem(e))]) from None
    except _TooBig as e:
        where = _mark(source, e.mark)
        raise ConfigError([ConfigIssue(source, where.line, where.column, "", e.message)]) from None
    except RecursionError:
        raise ConfigError(
            [ConfigIssue(source, None, None, "", f"nested too deeply; a guest config is at most {MAX_DEPTH} levels deep")]
        ) from None
    finally:
        if loader is not None:
            loader.dispose()


def _line_of(source: str, text: str, position: int) -> _Where:
    before = text[:position]
    return _Where(source, before.count("\n") + 1, position - (before.rfind("\n") + 1) + 1)


# -- overrides ----------------------------------------------------------------------------------

_OVERRIDE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*|\[\d{1,4}\])*$")
_KEY_PART = re.compile(r"\.?([A-Za-z_][A-Za-z0-9_]*)|\[(\d+)\]")


def _override_value(text: str) -> Any:
    """The value of KEY=VALUE read as a YAML value (so memory=1024 is a number), else as text."""
    try:
        data, issues = _parse_yaml(text, CMDLINE, _Positions(CMDLINE))
    except ConfigError:
        return text.strip() or None
    return text if issues else data


def _apply_overrides(data: dict[str, Any], overrides: Iterable[str], positions: _Positions) -> list[ConfigIssue]:
    """Set each xl-style KEY=VALUE in ``data`` (in place); issues for those that cannot be."""
    issues: list[ConfigIssue] = []
    here = _Where(CMDLINE)
    for text in overrides:
        if not isinstance(text, str) or "=" not in text:
            issues.append(positions.issue(here, (), f"{text!r} is not an override; write KEY=VALUE, like memory=1024"))
            continue
        key, _, value_text = text.partition("=")
        key = key.strip()
        if not _OVERRIDE_KEY.match(key):
            issues.append(
                ConfigIssue(CMDLINE, None, None, key, "not a key; write a key like memory, hvm.boot or disks[0].vdev before the =")
            )
            continue
        path: KeyPath = tuple(name if name else int(index) for name, index in _KEY_PART.findall(key))
        container: Any = data
        problem = None
        for depth, part in enumerate(path[:-1]):
            nxt = path[depth + 1]
            if isinstance(part, int):
                if not isinstance(container, list) or part >= len(container):
                    problem = f"there is no {key_path_text(path[: depth + 1])} to change"
                    break
                if not isinstance(container[part], (dict, list)):
                    problem = f"{key_path_text(path[: depth + 1])} is {_shown(container[part])}, not a mapping; set it whole instead"
                    break
                container = container[part]
            else:
                if not isinstance(container, dict):
                    problem = f"{key_path_text(path[:depth])} is not a mapping, so it has no {part}"
                    break
                if container.get(part) is not None and not isinstance(container[part], (dict, list)):
                    problem = (
                        f"{key_path_text(path[: depth + 1])} is {_shown(container[part])}, "
                        f"not a mapping, so it has no {key_path_text(path[depth + 1 :])}"
                    )
                    break
                if not isinstance(container.get(part), (dict, list)):
                    if isinstance(nxt, int):
                        problem = f"there is no {key_path_text(path[: depth + 2])} to change"
                        break
                    container[part] = {}
                container = container[part]
        last = path[-1]
        if problem is None:
            if isinstance(last, int):
                if not isinstance(container, list) or last >= len(container):
                    problem = f"there is no {key_path_text(path)} to change"
                else:
                    container[last] = _override_value(value_text)
            elif isinstance(container, dict):
                container[last] = _override_value(value_text)
            else:
                problem = f"{key_path_text(path[:-1])} is not a mapping, so it has no {last}"
        if problem:
            issues.append(ConfigIssue(CMDLINE, None, None, key_path_text(path), problem))
        else:
            positions.overridden(path)
    return issues


# -- pydantic's errors, for people --------------------------------------------------------------


def _shown(value: Any) -> str:
    if isinstance(value, str):
        return '"' + (value if len(value) <= 60 else value[:57] + "...") + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nothing"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    origin = get_origin(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if origin is Annotated:
        return _inner_model(get_args(annotation)[0])
    for arg in get_args(annotation):
        model = _inner_model(arg)
        if model is not None:
            return model
    return None


def _model_at(path: KeyPath) -> type[BaseModel] | None:
    model: type[BaseModel] | None = GuestConfig
    for part in path:
        if isinstance(part, int):
            continue
        info = model.model_fields.get(part) if model else None
        if info is None:
            return None
        model = _inner_model(info.annotation)
    return model


_REQUIRED_HINTS: dict[KeyPath, str] = {
    ("name",): "missing; every guest needs a name, like name: web",
    ("vdev",): "missing; a disk needs a vdev, the name the guest sees (like xvda or hdc)",
}


def _unknown_key(path: KeyPath) -> str:
    key = str(path[-1])
    model = _model_at(path[:-1])
    known = list(model.model_fields) if model else []
    if len(path) == 1 and key in XL_NAMES and XL_NAMES[key] != key:
        return f'unknown key; xl\'s {key} is "{XL_NAMES[key]}" here'
    close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    if close:
        return f'unknown key; did you mean "{close[0]}"?'
    return f"unknown key; the keys here are {', '.join(known)}" if known else "unknown key"


def _message(error: Mapping[str, Any], model: type[BaseModel] | None, raw: str | None = None) -> str:
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    shown = _shown(value)
    if kind in ("value_error", "assertion_error") and "error" in ctx:
        return str(ctx["error"])
    if kind in ("int_type", "int_parsing", "int_from_float", "int_parsing_size"):
        return f"{shown} is not a whole number; write one like 2"
    if kind in ("float_type", "float_parsing"):
        return f"{shown} is not a number"
    if kind in ("bool_type", "bool_parsing"):
        return f"{shown} is not true or false"
    if kind == "string_type":
        if isinstance(value, bool) and raw is not None:
            return f'expected text, not {shown}: YAML reads a bare {raw} as {shown}; to mean the text, quote it: "{raw}"'
        return f"expected text, not {shown}"
    if kind in ("list_type", "tuple_type", "set_type"):
        return f"expected a list (one item per line, each starting with '- '), not {shown}"
    if kind in ("model_type", "model_attributes_type", "dict_type", "dataclass_type"):
        what = f" ({', '.join(model.model_fields)})" if model else ""
        return f"expected a mapping of keys{what}, not {shown}"
    if kind in ("enum", "literal_error"):
        expected = str(ctx.get("expected", "")).replace("'", "")
        return f"{shown} is not accepted here; use {expected}"
    if kind in ("uuid_type", "uuid_parsing", "uuid_version"):
        return f"{shown} is not a uuid; write one like 6a3e0e0c-1f5b-4c5e-9a57-0e2f8d3c4b21"
    if kind in ("greater_than_equal", "greater_than"):
        return f"{shown} is too small; the least allowed is {ctx.get('ge', ctx.get('gt'))}"
    if kind in ("less_than_equal", "less_than"):
        return f"{shown} is too big; the most allowed is {ctx.get('le', ctx.get('lt'))}"
    if kind == "too_short":
        return f"needs at least {ctx.get('min_length')} item(s)"
    if kind == "too_long":
        return f"has too many items; at most {ctx.get('max_length')}"
    if kind == "string_unicode":
        return "not valid UTF-8 text"
    message = str(error.get("msg", "not valid"))
    return message[:1].lower() + message[1:]


def _issues_from(error: ValidationError, positions: _Positions) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for item in error.errors(include_url=False):
        loc: KeyPath = tuple(p for p in item["loc"] if isinstance(p, (str, int)))
        kind = item["type"]
        ctx = item.get("ctx") or {}
        if kind == "value_error" and isinstance(ctx.get("error"), FieldProblems):
            for sub, message in ctx["error"].problems:
                path = loc + tuple(sub)
                issues.append(
                    positions.issue(positions.key(path) if path not in positions.values else positions.value(path), path, message)
                )
        elif kind == "extra_forbidden":
            issues.append(positions.issue(positions.key(loc), loc, _unknown_key(loc)))
        elif kind == "missing":
            message = _REQUIRED_HINTS.get(loc[-1:], "missing; this key is required")
            issues.append(positions.issue(positions.value(loc[:-1]), loc, message))
        else:
            issues.append(positions.issue(positions.value(loc), loc, _message(item, _model_at(loc), positions.raw.get(loc))))
    return issues


def _order(issues: list[ConfigIssue]) -> list[ConfigIssue]:
    unique = list(dict.fromkeys(issues))
    return sorted(unique, key=lambda i: (i.source == CMDLINE, i.line is None, i.line or 0, i.column or 0))


def _validate(data: Any, positions: _Positions, issues: list[ConfigIssue]) -> GuestConfig:
    config = None
    if not isinstance(data, dict):
        where = positions.value(())
        issues.append(positions.issue(where, (), f"a guest config is a mapping of keys (like name: web), not {_shown(data)}"))
    else:
        try:
            config = GuestConfig.model_validate(data)
        except ValidationError as e:
            issues += _issues_from(e, positions)
    if issues or config is None:
        raise ConfigError(_order(issues))
    config._source = positions.source
    return config


# -- the public entry points --------------------------------------------------------------------


def load_config_text(text: str, source: str = "<text>", overrides: Iterable[str] = ()) -> GuestConfig:
    """A GuestConfig from YAML ``text`` (``source`` names it in issues), with KEY=VALUE overrides."""
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as e:
            raise ConfigError([ConfigIssue(source, None, None, "", f"not UTF-8 text (byte {e.start})")]) from None
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError([ConfigIssue(source, None, None, "", _too_large(len(text)))])
    positions = _Positions(source)
    data, issues = _parse_yaml(text, source, positions)
    overrides = list(overrides)
    if overrides:
        if isinstance(data, dict):
            issues += _apply_overrides(data, overrides, positions)
    return _validate(data, positions, issues)


def load_config(path: str | Path, overrides: Iterable[str] = ()) -> GuestConfig:
    """A GuestConfig from the YAML file at ``path``, with xl-style KEY=VALUE overrides applied."""
    source = str(path)
    try:
        size = Path(path).stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError([ConfigIssue(source, None, None, "", _too_large(size))])
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([ConfigIssue(source, None, None, "", "no such file")]) from None
    except IsADirectoryError:
        raise ConfigError([ConfigIssue(source, None, None, "", "is a directory, not a config file")]) from None
    except UnicodeDecodeError as e:
        raise ConfigError([ConfigIssue(source, None, None, "", f"not UTF-8 text (byte {e.start}); is this a config file?")]) from None
    except OSError as e:
        raise ConfigError([ConfigIssue(source, None, None, "", f"cannot be read: {e.strerror or e}")]) from None
    return load_config_text(text, source, overrides)


def _too_large(size: int) -> str:
    return (f"{size / (1 << 20):.1f} MiB is too large for a guest config (at most {MAX_CONFIG_BYTES >> 20} MiB; "
            "one is a few KiB): is it the right file?")


def config_from_dict(data: Mapping[str, Any], source: str = "<dict>") -> GuestConfig:
    """A GuestConfig from Python data (a record, an API call); issues name keys but no lines."""
    positions = _Positions(source)
    if isinstance(data, Mapping):
        data = dict(data)
    return _validate(data, positions, [])
