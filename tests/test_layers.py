"""The program's layers import only downward: config -> specs -> pure renderers -> components -> __main__.

Read from the source with ast (function-level imports included), so a
renderer that starts importing Pulumi, or the config reaching into the render
layer, fails here instead of in a review. Each component module holds one
ComponentResource; planning and shell stay in specs/ and render/.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest


pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ROOT / "components"


def _module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """Absolute names of every module ``path`` imports, anywhere in it."""
    me = _module_name(path, root)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            # `from . import x`, `from ..render import k3s`: x may be a module itself.
            out.update(f"{mod}.{a.name}" for a in node.names)
    return out


def _files(sub: str) -> list[Path]:
    return sorted((COMPONENTS / sub).rglob("*.py"))


def _offenders(files: list[Path], allowed) -> list[str]:
    bad = []
    for f in files:
        for mod in sorted(_imports(f)):
            if mod.split(".")[0] in ("pulumi", "pulumi_kubernetes", "pulumi_libvirt", "pulumi_command", "pulumi_random",
                                     "pulumi_tls") and not allowed(f, mod):
                bad.append(f"{f.relative_to(ROOT)} imports {mod}")
            elif mod.startswith("components") and not allowed(f, mod):
                bad.append(f"{f.relative_to(ROOT)} imports {mod}")
    return bad


def test_renderers_import_no_pulumi_and_nothing_above_them():
    def allowed(f: Path, mod: str) -> bool:
        return mod.startswith(("components.render", "components.chart_pins", "components.k3s_flags"))

    assert _offenders(_files("render"), allowed) == []


def test_specs_read_only_the_config_and_the_renderers():
    def allowed(f: Path, mod: str) -> bool:
        return mod.startswith(("components.specs", "components.config", "components.render", "components.chart_pins", "components.k3s_flags"))

    assert _offenders(_files("specs"), allowed) == []


def test_the_config_reads_no_layer_above_it():
    def allowed(f: Path, mod: str) -> bool:
        # The loader reads the stack's Pulumi config and ends a run with one line: it alone talks to Pulumi.
        if mod.startswith("pulumi"):
            return f.name == "loader.py"
        return mod.startswith(("components.config", "components.chart_pins", "components.k3s_flags"))

    assert _offenders(_files("config"), allowed) == []


def test_each_component_module_holds_one_component_resource():
    """components/*.py other than day2 (delivery helpers, NodeAccess) and chart_pins (data): one ComponentResource
    each, and no planning functions beside it (those live in specs/)."""
    counts = {}
    for f in sorted(COMPONENTS.glob("*.py")):
        if f.name in ("__init__.py", "day2.py", "chart_pins.py", "k3s_flags.py"):
            continue
        tree = ast.parse(f.read_text())
        classes = [n.name for n in tree.body if isinstance(n, ast.ClassDef)
                   and any(ast.unparse(b).endswith("ComponentResource") for b in n.bases)]
        counts[f.name] = classes
    assert counts and all(len(c) == 1 for c in counts.values()), counts
    # A planning function takes the stack config and returns data: specs/ is its place.
    planners = [f"{f}: {n.name}" for f in counts for n in ast.parse((COMPONENTS / f).read_text()).body
                if isinstance(n, ast.FunctionDef) and n.args.args and ast.unparse(n.args.args[0].annotation or ast.Constant("")) == "StackConfig"]
    assert planners == [], planners


def test_the_import_reader_resolves_relative_imports(tmp_path):
    """The reader is not vacuous: a renderer importing pulumi and, relatively, a component is seen doing both."""
    bad = tmp_path / "components" / "render" / "bad.py"
    bad.parent.mkdir(parents=True)
    bad.write_text("import pulumi\nfrom ..day2 import NodeAccess\n\ndef f():\n    from .. import specs\n")
    got = _imports(bad, tmp_path)
    assert {"pulumi", "components.day2", "components.specs"} <= got, got
