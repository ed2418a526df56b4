"""The code's shape, checked: attacks import nothing from evaluation/, no import cycles, no hidden imports of the
project's own modules, and no function over 50 lines in the three packages."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("unlearn", "attacks", "evaluation")
MAX_LINES = 50


def _modules() -> dict[str, ast.Module]:
    return {".".join(f.relative_to(ROOT).with_suffix("").parts): ast.parse(f.read_text())
            for pkg in PACKAGES for f in sorted((ROOT / pkg).glob("*.py"))}


def _is_main_block(node: ast.AST) -> bool:
    return (isinstance(node, ast.If) and isinstance(node.test, ast.Compare)
            and isinstance(node.test.left, ast.Name) and node.test.left.id == "__name__")


def _imported(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if isinstance(node, ast.ImportFrom) and node.module:
        return [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return []


def _project(names: list[str], modules) -> set[str]:
    return {n for n in names if n in modules}


def test_attacks_import_nothing_from_evaluation():
    """Every attack module imports with evaluation/ blocked (an attack never sees the judge that scores it); its
    `python -m` shell reaches the entry point only inside `if __name__ == "__main__":`."""
    mods = [m for m in _modules() if m.startswith("attacks.")]
    code = ("import importlib, sys\n"
            "class Block:\n"
            "    def find_spec(self, name, path=None, target=None):\n"
            "        if name == 'evaluation' or name.startswith('evaluation.'):\n"
            "            raise ImportError('blocked: ' + name)\n"
            "sys.meta_path.insert(0, Block())\n"
            f"for m in {mods!r}:\n"
            "    importlib.import_module(m)\n"
            "print(len([m for m in sys.modules if m.startswith('attacks.')]))\n")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert int(res.stdout.strip()) == len(mods)
    for name, tree in _modules().items():
        if name.startswith("attacks."):
            top = [n for stmt in tree.body if not _is_main_block(stmt) for n in ast.walk(stmt)]
            assert not any(i.startswith("evaluation") for n in top for i in _imported(n)), name


def test_no_import_cycles_and_no_hidden_project_imports():
    """The project's modules import each other at module level only (a function-local import hides a dependency
    and usually a cycle), and the import graph has no cycle."""
    modules = _modules()
    graph, hidden = {}, []
    for name, tree in modules.items():
        top = [n for stmt in tree.body if not _is_main_block(stmt) for n in ([stmt] if isinstance(
            stmt, (ast.Import, ast.ImportFrom)) else [])]
        graph[name] = {m for n in top for m in _project(_imported(n), modules)} - {name}
        nested = [n for stmt in tree.body
                  if not _is_main_block(stmt) and not isinstance(stmt, (ast.Import, ast.ImportFrom))
                  for n in ast.walk(stmt) if isinstance(n, (ast.Import, ast.ImportFrom))]
        hidden += [f"{name}:{n.lineno}" for n in nested if _project(_imported(n), modules)]
    assert not hidden, f"function-local imports of project modules: {hidden}"
    state: dict[str, int] = {}

    def visit(m, path):
        if state.get(m) == 1:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(m):], m]))
        if state.get(m) == 2:
            return
        state[m] = 1
        for d in sorted(graph[m]):
            visit(d, [*path, m])
        state[m] = 2

    for m in sorted(graph):
        visit(m, [])


def function_lengths() -> list[tuple[int, str]]:
    """(lines, module:function) for every function and method in the three packages, longest first."""
    out = []
    for name, tree in _modules().items():
        for n in ast.walk(tree):
            if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((n.end_lineno - n.lineno + 1, f"{name}:{n.name}"))
    return sorted(out, reverse=True)


def test_no_function_over_50_lines():
    long = [f"{f} ({n} lines)" for n, f in function_lengths() if n > MAX_LINES]
    assert not long, long


if __name__ == "__main__":  # python tests/test_structure.py: the ten longest functions
    for n, f in function_lengths()[:10]:
        print(f"{n:4d}  {f}")
