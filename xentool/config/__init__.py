"""Guest configs: the typed model, the YAML loader with positioned errors, and xl.cfg import.

Data flows one way: YAML text (or a dict, or an xl.cfg file) -> :class:`GuestConfig`, validated in
one place (``model``), with every problem reported at once as a :class:`~xentool.errors.ConfigError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xentool.config.loader import config_from_dict, load_config, load_config_text
from xentool.config.model import GuestConfig, validate_domain_name
from xentool.config.sizes import parse_size_mib

if TYPE_CHECKING:
    from xentool.config.xlcfg import import_xl_cfg, parse_xl_cfg, xl_cfg_to_yaml

# xl.cfg import is imported on first use: `xentool create` and the API never need it.
_XL_CFG_EXPORTS = ("import_xl_cfg", "parse_xl_cfg", "xl_cfg_to_yaml")


def __getattr__(name: str) -> Any:
    if name in _XL_CFG_EXPORTS:
        from xentool.config import xlcfg

        return getattr(xlcfg, name)
    raise AttributeError(f"module 'xentool.config' has no attribute {name!r}")


def guest_json_schema() -> dict:
    """The JSON Schema of a guest config (see ``xentool.config.schema``)."""
    # Imported here so ``python -m xentool.config.schema`` does not find itself already imported.
    from xentool.config.schema import guest_json_schema as schema

    return schema()


__all__ = [
    "GuestConfig",
    "config_from_dict",
    "guest_json_schema",
    "import_xl_cfg",
    "load_config",
    "load_config_text",
    "parse_size_mib",
    "parse_xl_cfg",
    "validate_domain_name",
    "xl_cfg_to_yaml",
]
