"""Whatever the input, loading gives a GuestConfig or a ConfigError, never anything else."""

from __future__ import annotations

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from xentool.config import config_from_dict, load_config_text
from xentool.config.model import GuestConfig
from xentool.config.xlcfg import xl_config
from xentool.errors import ConfigError

KEYS = list(GuestConfig.model_fields) + ["memroy", "disk", "vdev", "target", "boot", "mac", "1", "yes"]
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
    st.text(max_size=20), st.sampled_from(["pv", "hvm", "xvda", "512M", "0-3", "00:16:3e:00:00:01", "cdrom", "rw", "/k"]),
)
values = st.recursive(
    scalars, lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)), max_leaves=20
)
configs = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)


def outcome(load):
    try:
        return load()
    except ConfigError as e:
        assert e.issues and all(str(i) for i in e.issues)
        return None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_any_text(text):
    outcome(lambda: load_config_text(text, "f.yaml"))


@settings(max_examples=300, deadline=None)
@given(configs)
def test_any_dict(data):
    outcome(lambda: config_from_dict(data))


@settings(max_examples=300, deadline=None)
@given(configs)
def test_any_yaml_document_and_overrides(data):
    text = yaml.safe_dump(data)
    overrides = [f"{k}={v}" for k, v in list(data.items())[:2] if not isinstance(v, (dict, list))]
    config = outcome(lambda: load_config_text(text, "f.yaml", overrides))
    if config is not None:
        again = config_from_dict(config.model_dump(mode="json", exclude_none=True))
        assert again == config


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abn =[],'\"#;\n0123+", max_size=80))
def test_any_xl_cfg(text):
    outcome(lambda: xl_config(text))
