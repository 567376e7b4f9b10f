"""The JSON Schema of a guest config, generated from the model, for editors and other tools.

configs/guest.schema.json is this module's output, committed; a test fails when it is stale.
Regenerate it with ``python -m xentool.config.schema`` (or ``... -`` to print it instead).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from xentool.config.model import GuestConfig

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "configs" / "guest.schema.json"


def guest_json_schema() -> dict[str, Any]:
    """A JSON Schema (draft 2020-12) accepting the YAML configs xentool's model accepts."""
    schema = GuestConfig.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "xentool guest config",
        **{k: v for k, v in schema.items() if k != "title"},
    }


def schema_text() -> str:
    return json.dumps(guest_json_schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = args[0] if args else str(SCHEMA_PATH)
    if target == "-":
        sys.stdout.write(schema_text())
    else:
        Path(target).write_text(schema_text())
        print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
