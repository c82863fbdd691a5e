"""The package layout holds: layers (import-linter), no import circle, a small package root, short
functions and files.  These are the rules of the README's Development section, checked so that a
future upward import or a 200-line function fails CI instead of being noticed months later."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "sta_deploy"
MAX_FUNCTION_LINES = 80
MAX_FILE_LINES = 500


def _lint_imports() -> Path:
    found = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(found).is_file():
        pytest.fail("lint-imports is missing: pip install -e '.[test]' installs import-linter")
    return Path(found)


def test_import_linter_layers_contract_is_kept():
    done = subprocess.run([str(_lint_imports())], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def test_layers_contract_catches_an_upward_import(tmp_path):
    """The contract is not vacuous: a model module importing the CLI breaks it."""
    copy = tmp_path / "repo"
    shutil.copytree(PACKAGE, copy / "sta_deploy", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", copy / "pyproject.toml")
    schedule = copy / "sta_deploy" / "schedule.py"
    schedule.write_text(schedule.read_text() + "\nfrom .cli import app  # noqa\n")
    done = subprocess.run([str(_lint_imports())], cwd=copy, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(copy), "PATH": ""})
    assert done.returncode != 0
    assert "sta_deploy.schedule -> sta_deploy.cli" in done.stdout


def _direct_imports() -> dict[str, set[str]]:
    import grimp

    graph = grimp.build_graph("sta_deploy", include_external_packages=False)
    return {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circle_in_the_package():
    # The package face (sta_deploy/__init__.py) re-exports from below; nothing may import it back.
    edges = _direct_imports()
    assert _cycles(edges) == []
    importers_of_face = sorted(module for module, targets in edges.items() if "sta_deploy" in targets)
    assert importers_of_face == []


def test_package_root_stays_small():
    modules = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(modules) <= 10, modules


def _python_files():
    for folder in (PACKAGE, ROOT / "benchmarks"):
        yield from sorted(folder.rglob("*.py"))


def test_no_python_function_over_80_lines():
    long = []
    for path in _python_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert long == []


def _native_files():
    """The C++/CUDA sources of the plugin and the example app (not build folders)."""
    for folder in (ROOT / "plugins", ROOT / "examples"):
        for path in sorted(folder.rglob("*")):
            if path.suffix in (".cpp", ".cu", ".h", ".cuh", ".hpp") and "build" not in path.relative_to(folder).parts:
                yield path


def test_no_source_file_over_500_lines():
    sources = [*_python_files(), *_native_files()]
    assert any(p.suffix == ".cpp" for p in sources)  # the C++ sources are counted too
    long = [f"{p.relative_to(ROOT)} ({n})" for p in sources if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES]
    assert long == []
