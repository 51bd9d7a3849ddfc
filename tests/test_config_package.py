"""The config package's shape: no import cycle (function-level imports included), a map of every module, one rule once.

The loader once reached monitoring through checks and stack, and monitoring
reached back into the loader with a function-level import of file_sha256; the
pinned-file model stood three times. These read the package's source with
ast, so a new cycle or an unmapped module fails here rather than on a
reviewer's desk.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import components.config as config

pytestmark = pytest.mark.unit

PKG = Path(config.__file__).parent
MODULES = sorted(p.stem for p in PKG.glob("*.py") if p.stem != "__init__")


def _imports(module: str) -> set[str]:
    """Sibling modules ``module`` imports anywhere (top level or inside a function)."""
    tree = ast.parse((PKG / f"{module}.py").read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 and node.module:
                out.add(node.module.split(".")[0])
            elif node.level == 1:
                out.update(a.name for a in node.names)
            elif node.module and node.module.startswith("components.config."):
                out.add(node.module.split(".")[2])
    return out & set(MODULES)


def test_no_import_cycle_in_the_config_package():
    graph = {m: _imports(m) for m in MODULES}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = path[path.index(n):] + [n]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        path.pop()
        state[m] = 2

    for m in MODULES:
        if m not in state:
            visit(m)


def test_the_package_map_lists_every_module():
    doc = config.__doc__ or ""
    mapped = set(re.findall(r"^    ([a-z0-9_]+)\s{2,}", doc, re.M))
    assert mapped == set(MODULES), f"not in the map: {sorted(set(MODULES) - mapped)}; mapped but absent: {sorted(mapped - set(MODULES))}"


def test_one_pinned_file_model():
    """Every model with a local path and its sha256 is a PinnedFile; only artifacts hashes files."""
    models = [obj for m in MODULES for obj in vars(__import__(f"components.config.{m}", fromlist=["_"])).values()
              if isinstance(obj, type) and issubclass(obj, config.base._Model) and obj.__module__.startswith("components.config")]
    pinned = [m for m in models if {"path", "sha256"} <= set(m.model_fields)]
    assert {config.CorednsBinary, config.NodeExporterBinary, config.K3sArtifact} <= set(pinned)
    assert all(issubclass(m, config.PinnedFile) for m in pinned), [m.__name__ for m in pinned if not issubclass(m, config.PinnedFile)]
    hashing = [m for m in MODULES if "def file_sha256" in (PKG / f"{m}.py").read_text()]
    assert hashing == ["artifacts"], hashing
