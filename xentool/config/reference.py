"""configs/REFERENCE.md, the config reference, generated from the model's fields and descriptions.

Regenerate it with ``python -m xentool.config.reference > configs/REFERENCE.md``; a test fails when
the committed file is stale, so the reference cannot drift from what the loader accepts.
"""

from __future__ import annotations

import enum
import sys
import types
import uuid
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from xentool.config.model import DeviceModel, Disk, GuestConfig, HvmOptions, Vif, Vnc

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("Guest (top level)", GuestConfig),
    ("disks[]", Disk),
    ("vifs[]", Vif),
    ("vnc", Vnc),
    ("hvm", HvmOptions),
    ("device_model", DeviceModel),
]

INTRO = """\
# xentool guest config reference

<!-- Generated from xentool/config/model.py by `python -m xentool.config.reference > configs/REFERENCE.md`;
     do not edit by hand: tests/config/test_generated.py fails when this file is stale. -->

A guest config is a YAML mapping; `configs/examples/` has one for each guest type and
`configs/guest.schema.json` is its JSON Schema, for editors.  Check a file with
`xentool config check FILE`, convert an xl.cfg with `xentool config import FILE`.

- **Sizes** (memory, maxmem, videoram) are MiB, or a number with a binary unit: `512`, `512M`,
  `2G`, `2GiB`, `1048576K`, `1T`.  They must be a positive whole number of MiB.
- **Overrides**: `xentool create FILE KEY=VALUE ...` sets keys as xl does (`memory=1024`,
  `name=web2`, `hvm.boot=dc`, `disks[0].target=/img/b.raw`); the value is read as YAML.
- **xl spellings** work where xl users will reach for them: a disk may be an xl disk spec string
  (`/img/a.raw,raw,xvda,rw`, `vdev=hdc:cdrom,access=ro,target=/x.iso`), a vif an xl vif spec
  (`bridge=xenbr0,mac=00:16:3e:00:00:01`), `cpus` an xl cpu list (`0-3,5`), `hvm.boot` xl's
  letters (`dc`).
- Errors name the file, line, column and key, and say what is accepted; every error in a file is
  reported at once.
"""


def type_text(annotation: Any) -> str:
    """A short, human name for a field's type."""
    origin = get_origin(annotation)
    if origin is Annotated:
        inner, *meta = get_args(annotation)
        if any(getattr(m.func, "__name__", None) == "_size_mib" for m in meta if hasattr(m, "func")):
            return "size (MiB)"
        return type_text(inner)
    if origin in (Union, types.UnionType):
        parts = [type_text(a) for a in get_args(annotation) if a is not type(None)]
        return " or ".join(parts)
    if origin is list:
        return f"list of {type_text(get_args(annotation)[0])}"
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in get_args(annotation))
    if isinstance(annotation, type):
        if issubclass(annotation, enum.Enum):
            return " \\| ".join(f"`{m.value}`" for m in annotation)
        if issubclass(annotation, BaseModel):
            return f"mapping ([{annotation.__name__}](#{_anchor(annotation)}))"
        if annotation is uuid.UUID:
            return "uuid"
        return {str: "string", int: "integer", bool: "boolean"}.get(annotation, annotation.__name__)
    return str(annotation)


def _anchor(model: type[BaseModel]) -> str:
    for title, candidate in SECTIONS:
        if candidate is model:
            return "".join(c for c in title.lower().replace(" ", "-") if c.isalnum() or c == "-")
    return model.__name__.lower()


def _default_text(info: Any) -> str:
    if info.is_required():
        return "**required**"
    default = info.default if info.default is not PydanticUndefined else None
    if default is None:
        return "unset"
    if isinstance(default, enum.Enum):
        return f"`{default.value}`"
    if isinstance(default, bool):
        return f"`{'true' if default else 'false'}`"
    if isinstance(default, list):
        return "`[" + ", ".join(d.value if isinstance(d, enum.Enum) else str(d) for d in default) + "]`"
    if default == "":
        return '`""`'
    return f"`{default}`"


def reference_text() -> str:
    out = [INTRO]
    for title, model in SECTIONS:
        out.append(f"\n## {title}\n\n{(model.__doc__ or '').strip()}\n")
        out.append("| key | type | default | description |\n|---|---|---|---|")
        for name, info in model.model_fields.items():
            annotation = info.rebuild_annotation() if info.metadata else info.annotation
            cells = [f"`{name}`", type_text(annotation), _default_text(info), (info.description or "").replace("|", "\\|")]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def main() -> int:
    sys.stdout.write(reference_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
