"""The code's shape, held: the layers import downwards only, nothing imports in a circle, and an
import inside a function is where start-up time was measured to need it (and says so).

The layers (tests/kit/imports.py LAYERS), lowest first: hypercalls, pvdrivers -> config, records,
errors, domains -> devices, devicemodel, hotplug, console -> create, lifecycle, saving, shutdown
actions, live devices, supervisor -> api -> lab, cli.  `python -m tests.kit.imports` prints the graph.
"""

from __future__ import annotations

import pytest

from kit.imports import all_imports, component_edges, cycles, layer, module_edges, module_files, upward

# Modules that may import inside functions, and why.  Anything else imports at its top.
DEFERRED_IMPORTS_ALLOWED = {
    "hypercalls.connect": "the backend is chosen at run time: the simulator, or real Xen's compiled bindings",
    "hypercalls.xen._lib": "the bindings' build script (cffi's compiler) only when the compiled module is missing",
    "xentool.api": "start-up: `list` and `destroy` load neither the config model (pydantic) nor the creation "
                   "steps (tests/toolstack/test_cli_imports.py)",
    "xentool.records": "start-up: a record's config becomes a GuestConfig (pydantic) only when a restart needs it",
    "xentool.config": "xl.cfg import and the JSON schema only for their own commands",
    "xentool.cli.main": "start-up: each command imports what it runs (tests/toolstack/test_cli_imports.py)",
    "xentool.cli.lab": "start-up: the lab only for lab commands",
    "xentool.cli.launch": "start-up: the launcher hands commands to the server without the CLI",
    "xentool.cli.command_server": "start-up: `xentool --help` must not load the hypervisor interface",
    "xentool.cli.daemon": "start-up: the daemon's parts only for `daemon` commands",
    "xentool.daemon": "ctypes (prctl) only in the daemon's forked children",
}


@pytest.fixture(scope="module")
def imports():
    return all_imports()


def test_every_module_has_a_layer():
    for module in module_files():
        layer(module)  # raises, naming the component, when LAYERS lacks it


def test_no_module_imports_a_higher_layer(imports):
    assert [f"{i.importer}:{i.line} -> {i.imported}" for i in upward(imports)] == []


def test_no_import_cycles_between_components(imports):
    assert cycles(component_edges(imports)) == []


def test_no_import_cycles_between_modules(imports):
    assert cycles(module_edges(imports)) == []


def test_imports_inside_functions_only_where_start_up_needs_them(imports):
    deferred = sorted({f"{i.importer}:{i.line} -> {i.imported}" for i in imports
                       if i.local and i.importer not in DEFERRED_IMPORTS_ALLOWED})
    assert deferred == []


def test_the_checks_catch_a_cycle_and_an_upward_import():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    from kit.imports import Import

    assert upward([Import("xentool.devices.disk", "xentool.create.plan", 1, False, False)])
    assert not upward([Import("xentool.create.plan", "xentool.devices.disk", 1, False, False)])
