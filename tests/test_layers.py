"""The package's layers, as README.md's "Layout" table lists them: no module imports one of a higher layer, and
no imports go round in a circle. Imports are read from the source (ast), lazy ones inside functions included,
so the layout stays true without anyone checking it by hand.

    python tests/test_layers.py      # prints the import graph's size, its circles and its upward imports
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "vit_feature_viz"


def modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name, for its __init__.py)."""
    found = {}
    for path in sorted((ROOT / PACKAGE).rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(mods: dict[str, Path]) -> dict[str, set[str]]:
    """Which package modules each module imports. `from pkg import mod` counts as importing `mod`; a module's
    own parent packages, which Python imports before any submodule, are no dependency of it."""
    graph = {}
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
        targets = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    full = ".".join(base + ([node.module] if node.module else []))
                else:
                    full = node.module or ""
                subs = [f"{full}.{a.name}" for a in node.names if f"{full}.{a.name}" in mods]
                if len(subs) < len(node.names) and full in mods:
                    targets.add(full)
                targets.update(subs)
            elif isinstance(node, ast.Import):
                targets.update(a.name for a in node.names if a.name in mods)
        graph[name] = targets - ancestors - {name}
    return graph


def readme_layers() -> list[list[str]]:
    """The layers of README.md's Layout table, lowest first: each a list of module names (`store/` is a folder)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if re.match(r"^\|\s*\d+\s*\|", line)]
    return [re.findall(r"`([\w/]+)`", row.split("|")[3]) for row in rows]


def layer_of(module: str, layers: list[list[str]]) -> int | None:
    """The layer listing `module` (by its file, or a folder holding it); the package's own __init__ is the floor."""
    if module == PACKAGE:
        return 0
    relative = module[len(PACKAGE) + 1:].replace(".", "/")
    for number, names in enumerate(layers):
        for entry in names:
            if relative == entry.rstrip("/") or (entry.endswith("/") and relative.startswith(entry)):
                return number
    return None


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def upward(graph: dict[str, set[str]], layers: list[list[str]]) -> list[str]:
    """Each import of a module from a higher layer than its own (modules in no layer are left to the test above)."""
    found = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            low, high = layer_of(a, layers), layer_of(b, layers)
            if low is not None and high is not None and high > low:
                found.append(f"{a} (layer {low}) imports {b} (layer {high})")
    return found


def test_readme_lists_every_module_in_a_layer():
    layers = readme_layers()
    assert len(layers) >= 5, "README.md's Layout section has lost its layer table"
    assert [m for m in modules() if layer_of(m, layers) is None] == []


def test_readme_layers_name_only_modules_that_exist():
    mods = modules()
    for entry in [e for names in readme_layers() for e in names]:
        dotted = f"{PACKAGE}.{entry.rstrip('/').replace('/', '.')}"
        assert dotted in mods, f"README.md's Layout names {entry}, which is not in {PACKAGE}/"


def test_no_import_climbs_to_a_higher_layer():
    assert upward(imports(modules()), readme_layers()) == []


def test_no_import_circles():
    assert circles(imports(modules())) == []


def private_uses(mods: dict[str, Path]) -> list[str]:
    """Private names (`_x`) one module takes from another: imported by name, or read off an imported module."""
    found = []
    for name, path in mods.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(), str(path))
        module_names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith(PACKAGE)):
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)] if node.level else []
                full = ".".join(base + ([node.module] if node.module else [])) if node.level else node.module
                for alias in node.names:
                    if f"{full}.{alias.name}" in mods:
                        module_names.add(alias.asname or alias.name)
                    elif alias.name.startswith("_") and not alias.name.startswith("__"):
                        found.append(f"{name} imports {full}.{alias.name}")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in module_names
                    and node.attr.startswith("_") and not node.attr.startswith("__")):
                found.append(f"{name} reads {node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names():
    assert private_uses(modules()) == []


def test_the_checker_sees_lazy_relative_and_package_imports(tmp_path):
    """The checks above would pass on a graph they cannot read; these edges are known to exist."""
    graph = imports(modules())
    assert f"{PACKAGE}.store.hub" in graph[f"{PACKAGE}.store.sources"]  # lazy, inside HubSource
    assert f"{PACKAGE}.core.transforms" in graph[f"{PACKAGE}.core.recipes"]  # from . import transforms as T
    assert f"{PACKAGE}.models" in graph[f"{PACKAGE}.core.render"]  # from ..models import load_model
    layers = readme_layers()
    assert upward({f"{PACKAGE}.errors": {f"{PACKAGE}.cli"}}, layers)
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


if __name__ == "__main__":
    mods, layers = modules(), readme_layers()
    graph = imports(mods)
    print(f"{len(mods)} modules, {sum(map(len, graph.values()))} imports, {len(circles(graph))} circles, "
          f"{len(upward(graph, layers))} upward imports")
    for group in circles(graph):
        print("circle:", " -> ".join(group))
    for line in upward(graph, layers):
        print("upward:", line)
