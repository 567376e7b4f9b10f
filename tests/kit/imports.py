"""The import graph of xentool, hypercalls and pvdrivers, read from the source (nothing imported).

``python -m tests.kit.imports`` prints it: each component (a package of xentool, or one of its
top-level modules) with what it imports, the cycles, the imports that go up a layer, and every
import made inside a function.  tests/test_layers.py fails on a cycle or an upward import.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("xentool", "hypercalls", "pvdrivers")

# Lower numbers sit lower; a module may import its own layer's components and lower ones.  The
# order the code's shape issue (13) asks for: cli -> api -> lifecycle/create/saving ->
# devicemodel/hotplug/console -> config, records -> hypercalls, pvdrivers.
LAYERS: dict[str, int] = {
    "hypercalls": 0,
    "pvdrivers": 0,
    "xentool.errors": 1,
    "xentool.config": 1,
    "xentool.records": 1,
    "xentool.definitions": 1,
    "xentool.daemon": 1,
    "xentool.savefile": 1,
    "xentool.obituaries": 1,
    "xentool.domains": 1,
    "xentool.host": 1,
    "xentool.wire": 1,
    "xentool.events": 1,
    "xentool.daemon_client": 2,
    "xentool.console.paths": 1,
    "xentool.devicemodel.paths": 1,
    "xentool.devices": 2,
    "xentool.bootloader": 2,
    "xentool.placement": 2,
    "xentool.cpupools": 2,
    "xentool.stats": 2,
    "xentool.devicemodel": 2,
    "xentool.hotplug": 2,
    "xentool.console": 2,
    "xentool.lifecycle": 3,
    "xentool.create": 3,
    "xentool.saving": 3,
    "xentool.shutdown_actions": 3,
    "xentool.live_devices": 3,
    "xentool.supervisor": 3,
    "xentool.migration": 3,
    "xentool.api": 4,
    "xentool.lab": 5,
    "xentool.xentoold": 5,
    "xentool.desired": 5,
    "xentool.guest_state": 5,
    "xentool.remote": 5,
    "xentool.cli": 6,
    "xentool": 7,  # the package's own __init__: `import xentool` gives the API
    "xentool.__main__": 7,
}


@dataclass(frozen=True)
class Import:
    importer: str  # module name
    imported: str  # module name (the longest one that exists)
    line: int
    local: bool  # inside a function
    type_checking: bool  # under `if TYPE_CHECKING:`


def module_files() -> dict[str, Path]:
    files = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join(parts)] = path
    return files


def _resolve(name: str, modules: set[str]) -> str | None:
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(module: str, path: Path, modules: set[str]) -> list[Import]:
    tree = ast.parse(path.read_text(), str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, local: bool, type_checking: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Import):
                for alias in child.names:
                    target = _resolve(alias.name, modules)
                    if target:
                        found.append(Import(module, target, child.lineno, local, type_checking))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.split(".")
                    anchor = anchor[: len(anchor) - child.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in child.names:
                    target = _resolve(f"{base}.{alias.name}", modules) or _resolve(base, modules)
                    if target and target != module:
                        found.append(Import(module, target, child.lineno, local, type_checking))
            elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                visit(child, True, type_checking)
            elif isinstance(child, ast.If) and _is_type_checking(child.test):
                visit(child, local, True)
            else:
                visit(child, local, type_checking)

    visit(tree, False, False)
    return found


def all_imports() -> list[Import]:
    files = module_files()
    names = set(files)
    return [imp for module, path in files.items() for imp in imports_of(module, path, names)]


def component(module: str) -> str:
    """The unit the layers and cycles are reckoned in: xentool's subpackages and top-level modules,
    hypercalls and pvdrivers whole, and the leaf modules LAYERS names on their own (paths that
    lower layers share)."""
    if module in LAYERS:
        return module
    parts = module.split(".")
    if parts[0] != "xentool":
        return parts[0]
    return ".".join(parts[:2])


def layer(module: str) -> int:
    comp = component(module)
    if comp not in LAYERS:
        raise KeyError(f"{comp} has no layer in tests/kit/imports.py LAYERS; give it one")
    return LAYERS[comp]


def upward(imports: list[Import]) -> list[Import]:
    return [i for i in imports if layer(i.imported) > layer(i.importer)]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    result: list[list[str]] = []
    counter = [0]

    def connect(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges.get(node, ())):
            if nxt not in index:
                connect(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                result.append(sorted(group))

    sys.setrecursionlimit(10000)
    for node in sorted(edges):
        if node not in index:
            connect(node)
    return result


def component_edges(imports: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for i in imports:
        a, b = component(i.importer), component(i.imported)
        if a != b:
            edges[a].add(b)
    return edges


def module_edges(imports: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for i in imports:
        if not i.type_checking:
            edges[i.importer].add(i.imported)
    return edges


def main() -> None:
    imports = all_imports()
    print("components and what they import (layer in brackets):")
    for comp, targets in sorted(component_edges(imports).items()):
        print(f"  [{LAYERS.get(comp, '?')}] {comp} -> {', '.join(sorted(targets))}")
    print("cycles between components:")
    for group in cycles(component_edges(imports)):
        print("  " + " <-> ".join(group))
    print("cycles between modules (TYPE_CHECKING imports left out):")
    for group in cycles(module_edges(imports)):
        print("  " + " <-> ".join(group))
    print("imports that go up a layer:")
    for i in upward(imports):
        print(f"  {i.importer}:{i.line} -> {i.imported}")
    local = [i for i in imports if i.local]
    print(f"imports inside functions: {len(local)}")
    by_module: dict[str, list[Import]] = defaultdict(list)
    for i in local:
        by_module[i.importer].append(i)
    for module, items in sorted(by_module.items()):
        print(f"  {module}: " + ", ".join(f"{i.imported}:{i.line}" for i in items))


if __name__ == "__main__":
    main()
