"""Layers point one way: capture <- tools <- guardian; bench/ and support/ never import tests/.

Walks every import statement (including ones inside functions) with ast and fails on an edge that points up.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# package -> top-level packages it must never import
FORBIDDEN = {
    "capture": {"tools", "guardian", "tests", "bench", "support", "demo"},
    "tools": {"guardian", "tests", "bench", "support", "demo"},
    "guardian": {"tests", "bench", "support"},
    "support": {"tests", "bench"},
    "bench": {"tests"},
}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.lineno, node.module))
    return found


def upward_edges() -> list[str]:
    bad = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((ROOT / package).rglob("*.py")):
            for line, module in imported_modules(path):
                if module.split(".")[0] in forbidden:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


def test_layers_point_one_way():
    assert upward_edges() == []


def test_the_walk_sees_imports_inside_functions(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from guardian.window import parse\n    import tools.base\n")
    assert imported_modules(sample) == [(2, "guardian.window"), (3, "tools.base")]
