"""Dumps load back equal; the committed schema and reference are what the model generates."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xentool.config import config_from_dict, guest_json_schema, load_config
from xentool.config.reference import reference_text
from xentool.config.schema import schema_text

CONFIGS = Path(__file__).parents[2] / "configs"


@pytest.mark.parametrize("path", sorted((CONFIGS / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_dump_loads_back_equal(path):
    config = load_config(path)
    again = config_from_dict(config.model_dump(mode="json", exclude_none=True, exclude={"source"}))
    assert again == config
    assert "source" not in config.model_dump()


def test_committed_schema_is_up_to_date():
    assert (CONFIGS / "guest.schema.json").read_text() == schema_text(), "run: python -m xentool.config.schema"


def test_committed_reference_is_up_to_date():
    assert (CONFIGS / "REFERENCE.md").read_text() == reference_text(), "run: python -m xentool.config.reference > configs/REFERENCE.md"


def test_schema_forbids_unknown_keys_and_documents_fields():
    schema = guest_json_schema()
    assert schema["additionalProperties"] is False
    assert schema["required"] == ["name"]
    assert schema["properties"]["memory"]["description"]
    json.dumps(schema)


def test_reference_covers_every_field():
    text = reference_text()
    from xentool.config.reference import SECTIONS

    for _, model in SECTIONS:
        for name in model.model_fields:
            assert f"| `{name}` |" in text
