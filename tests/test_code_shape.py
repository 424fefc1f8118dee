"""Code shape limits (issue 15 targets): short modules and short functions, so each thing has one readable place.

No module in dam/ or coupling/ is over MAX_MODULE_LINES lines; no function or method in dam/, coupling/,
surrogates/ or physics/ is over MAX_FUNCTION_LINES lines, except in the Noah-MP process modules of physics/
(ports of long Fortran routines, kept in the order of the original so they can be compared line by line).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 100
MODULE_DIRS = ("dam", "coupling")
FUNCTION_DIRS = ("dam", "coupling", "surrogates", "physics")
PROCESS_MODULES_DIR = "physics"  # Noah-MP process modules: exempt from the function limit


def _modules(root: Path, dirs):
    for d in dirs:
        yield from sorted((root / d).rglob("*.py"))


def long_modules(root: Path = ROOT) -> list[str]:
    """``path: n lines`` of every module over the limit."""
    out = []
    for path in _modules(root, MODULE_DIRS):
        n = len(path.read_text().splitlines())
        if n > MAX_MODULE_LINES:
            out.append(f"{path.relative_to(root)}: {n} lines")
    return out


def long_functions(root: Path = ROOT) -> list[str]:
    """``path:line name: n lines`` of every function (or method) over the limit, outside the process modules."""
    out = []
    for path in _modules(root, FUNCTION_DIRS):
        rel = path.relative_to(root)
        if rel.parts[0] == PROCESS_MODULES_DIR:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    return out


def test_no_long_modules():
    assert long_modules() == []


def test_no_long_functions():
    assert long_functions() == []


def test_the_checks_can_fail(tmp_path):
    """The checks see a long module and a long function (a check that cannot fail checks nothing)."""
    pkg = tmp_path / "dam"
    pkg.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES + 1))
    (pkg / "big.py").write_text("def f():\n" + body + "\n" + "\n" * MAX_MODULE_LINES)
    (tmp_path / "physics").mkdir()
    (tmp_path / "physics" / "process.py").write_text("def g():\n" + body + "\n")  # exempt
    assert long_modules(tmp_path) == [f"dam/big.py: {MAX_FUNCTION_LINES + 2 + MAX_MODULE_LINES} lines"]
    assert long_functions(tmp_path) == [f"dam/big.py:1 f: {MAX_FUNCTION_LINES + 2} lines"]  # def + body
