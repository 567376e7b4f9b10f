"""What the hot commands import.  In the lab's dom0, Python runs under QEMU TCG about 50 times slower
than here, and imports were half of a `xentool create`: each module a command loads without using
it costs it time there.  Each case runs in a fresh interpreter and lists what it loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

# Never needed by create, destroy or list: the lab, the xl.cfg importer, the bindings' build script.
NEVER = ("xentool.lab", "xentool.config.xlcfg", "xentool.config.schema", "hypercalls.xen._ffi_build")
PROBE = (
    "import json, os, sys\n"
    "from xentool.cli.main import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit as e:\n"
    "    assert not e.code, e.code\n"
    "print(json.dumps({'modules': sorted(sys.modules), 'plugins': os.environ.get('PYDANTIC_DISABLE_PLUGINS')}),"
    " file=sys.stderr)\n"
)


def loaded_by(*argv: str, env: dict[str, str] | None = None) -> tuple[set[str], str | None]:
    """The modules a fresh `xentool *argv` has loaded when it finishes, and PYDANTIC_DISABLE_PLUGINS then."""
    result = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stderr.strip().splitlines()[-1])
    return set(report["modules"]), report["plugins"]


def packages(modules: set[str], *names: str) -> set[str]:
    return {m for m in modules for name in names if m == name or m.startswith(name + ".")}


@pytest.fixture
def guest_file(tmp_path: Path, kernel: Path) -> Path:
    path = tmp_path / "guest.yaml"
    path.write_text(f"name: hello\ntype: pv\nmemory: 128\nkernel: {kernel}\n")
    return path


def test_importing_the_cli_loads_neither_the_toolstack_nor_rich_nor_pydantic():
    result = subprocess.run(
        [sys.executable, "-c", "import sys, xentool.cli.main; print('\\n'.join(sys.modules))"],
        capture_output=True, text=True, check=True,
    )
    modules = set(result.stdout.split())
    assert not packages(modules, *NEVER, "rich", "pydantic", "yaml", "importlib.metadata", "xentool.config",
                        "xentool.create", "xentool.api", "hypercalls.interface")


def test_create_dry_run_loads_only_the_config_and_the_plan(guest_file):
    modules, plugins = loaded_by("create", str(guest_file), "--dry-run")
    assert {"xentool.config.model", "xentool.create.plan"} <= modules
    assert not packages(modules, *NEVER, "rich", "xentool.api", "hypercalls.sim", "hypercalls.xen")
    assert plugins == "__all__"  # pydantic did not scan every distribution's entry points for plugins


def test_create_destroy_and_list_json_do_not_load_rich_or_the_lab(guest_file, sim_url):
    created, _ = loaded_by("--connect", sim_url, "create", str(guest_file))
    listed, _ = loaded_by("--connect", sim_url, "list", "--json")
    destroyed, _ = loaded_by("--connect", sim_url, "destroy", "hello")
    for modules in (created, listed, destroyed):
        assert not packages(modules, *NEVER, "rich", "hypercalls.xen")
    # Neither needs the config model nor the creation steps.
    assert not packages(listed | destroyed, "xentool.config", "xentool.create")


def test_a_users_own_pydantic_plugin_setting_is_kept(guest_file):
    _, plugins = loaded_by("create", str(guest_file), "--dry-run", env={"PYDANTIC_DISABLE_PLUGINS": "logfire"})
    assert plugins == "logfire"
