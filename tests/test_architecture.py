"""The package layout is a map of the pipeline: every import points down it, and no package imports in a circle.

Layers, from the bottom: ``flow`` / ``config`` / ``io`` / ``toy_scene`` / ``media`` / ``prompts`` (neutral: no other
lvg module), then ``models``, ``sampling``, ``training``, and on top ``callbacks`` / ``plan`` / ``cli``. ``data`` and
``metrics`` sit beside the stages and import none of them (``data`` may use the models' encoders; ``metrics`` judge
outputs only). The walk reads every ``import`` in ``lvg/`` with ``ast``, function-level ones included (a lazy
import is still a dependency); ``if TYPE_CHECKING:`` imports are annotations only and are skipped.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "lvg"
NEUTRAL = {"flow", "config", "io", "toy_scene", "media", "prompts", "__init__"}

FORBIDDEN: dict[str, set[str]] = {
    # what each part of lvg must not import (besides the rule that neutral modules import no other part)
    "models": {"data", "sampling", "training", "metrics", "callbacks", "plan", "cli"},
    "sampling": {"data", "training", "metrics", "callbacks", "plan", "cli"},
    "data": {"sampling", "training", "metrics", "callbacks", "plan", "cli"},
    "metrics": {"models", "data", "sampling", "training", "callbacks", "plan", "cli"},
    "training": {"metrics", "callbacks", "plan", "cli"},
    "callbacks": {"plan", "cli"},
    "plan": {"cli", "callbacks"},
}


def _part(module: str) -> str:
    """``lvg.models.dit`` -> ``models``; ``lvg.flow`` -> ``flow``."""
    return module.split(".")[1] if module.count(".") >= 1 else module


def _module_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1] + (["__init__"] if len(parts) == 1 else [])
    return ".".join(parts) if parts != ["lvg"] else "lvg.__init__"


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped |= {id(n) for child in node.body for n in ast.walk(child)}
    return skipped


def lvg_imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module)`` of every lvg module ``path`` imports (``from lvg.x import y`` counts ``lvg.x.y`` when
    that is a module, else ``lvg.x``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skipped, found = _type_checking_nodes(tree), []
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.split(".")[0] == "lvg"]
        elif (isinstance(node, ast.ImportFrom) and node.module and node.level == 0
              and node.module.split(".")[0] == "lvg"):
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                is_module = (PACKAGE.parent / Path(*sub.split("."))).with_suffix(".py").exists() or (
                    PACKAGE.parent / Path(*sub.split("."))).is_dir()
                found.append((node.lineno, sub if is_module else node.module))
    return found


def sources() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def test_every_import_points_down_the_pipeline():
    wrong = []
    for path in sources():
        name = _module_name(path)
        part = _part(name)
        for line, target in lvg_imports(path):
            to = _part(target)
            if to == part or target == "lvg":
                continue
            if part in NEUTRAL and to not in NEUTRAL - {"__init__"}:
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} -> {target} "
                             "(a neutral module imports a stage)")
            elif to in FORBIDDEN.get(part, set()):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} -> {target} ({part} must not import {to})")
    assert not wrong, "imports that point up or sideways:\n" + "\n".join(wrong)


@pytest.mark.parametrize("package", sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists()))
def test_no_import_circles_inside_a_package(package):
    graph: dict[str, set[str]] = {}
    for path in sorted((PACKAGE / package).glob("*.py")):
        name = _module_name(path)
        graph[name] = {t for _, t in lvg_imports(path) if t.startswith(f"lvg.{package}.") and t != name}
    cycles = []

    def visit(node: str, stack: list[str]) -> None:
        if node in stack:
            cycles.append(" -> ".join(stack[stack.index(node):] + [node]))
            return
        for nxt in sorted(graph.get(node, ())):
            visit(nxt, stack + [node])

    for start in graph:
        visit(start, [])
    assert not cycles, f"import circles in lvg.{package}:\n" + "\n".join(sorted(set(cycles)))


def test_the_walk_sees_imports_it_must_refuse(tmp_path):
    """The checker itself can fail: a function-level upward import is found, a TYPE_CHECKING one is not."""
    source = tmp_path / "probe.py"
    source.write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from lvg.training.base import StageModule\n"
        "def f():\n    from lvg.training import parallel\n    import lvg.cli\n"
    )
    assert lvg_imports(source) == [(5, "lvg.training.parallel"), (6, "lvg.cli")]


def _ruff(*args: str):
    import subprocess

    from ruff.__main__ import find_ruff_bin

    return subprocess.run([find_ruff_bin(), *args], cwd=Path(__file__).parents[1], capture_output=True, text=True,
                          check=False)


def test_ruff_finds_nothing():
    """The repo's ruff rules (pyproject.toml [tool.ruff.lint]) hold for lvg/, tests/ and benchmarks/."""
    result = _ruff("check", "--no-cache", "lvg", "tests", "benchmarks")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_ruff_would_fail_on_a_finding(tmp_path):
    """The lint test can fail: an unused import and a 121-character line are findings under the repo's config."""
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nx = '" + "a" * 115 + "'\n")
    result = _ruff("check", "--no-cache", "--config", str(Path(__file__).parents[1] / "pyproject.toml"), str(probe))
    assert result.returncode == 1 and "F401" in result.stdout and "E501" in result.stdout
