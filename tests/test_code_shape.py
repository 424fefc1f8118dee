"""Code shape limits (issue 15 targets): short modules and short functions, so each thing has one readable place.

No module in dam/ or coupling/ is over MAX_MODULE_LINES lines; no function or method in dam/, coupling/,
surrogates/ or physics/ is over MAX_FUNCTION_LINES lines, except in the Noah-MP process modules of physics/
(ports of long Fortran routines, kept in the order of the original so they can be compared line by line).
Files are written through :mod:`dam.io_safety` (atomically), also by the benchmarks.
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
WRITE_DIRS = ("dam", "coupling", "surrogates", "physics", "benchmarks")
# File writers that replace a whole file (zarr stores are written chunk by chunk, and grid runs track finished
# blocks themselves).
WRITERS = {"write_text", "write_bytes", "savefig", "to_netcdf", "to_csv"}


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


def _write_target(node: ast.AST) -> ast.AST | None:
    """The file a call writes (the path expression), or None if it writes no file."""
    if not isinstance(node, ast.Call):
        return None
    f = node.func
    if isinstance(f, ast.Attribute) and f.attr in WRITERS:
        if isinstance(f.value, ast.Name) and f.value.id == "io_safety":
            return None
        return f.value if f.attr.startswith("write_") else (node.args[0] if node.args else f)
    if isinstance(f, ast.Name) and f.id == "open":
        modes = [k.value for k in node.keywords if k.arg == "mode"] + node.args[1:2]
        if modes and isinstance(modes[0], ast.Constant) and set(str(modes[0].value)) & set("wax"):
            return node.args[0]
    return None


def raw_writes(root: Path = ROOT) -> list[str]:
    """``path:line call`` of every file written in place rather than through :mod:`dam.io_safety` (whose writers
    write a temporary and rename it, so a crash never leaves a half-written result): a writer whose target does not
    name a temporary (``tmp``)."""
    out = []
    for path in _modules(root, WRITE_DIRS):
        rel = path.relative_to(root)
        if rel.as_posix() == "dam/io_safety.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            target = _write_target(node)
            if target is not None and "tmp" not in ast.unparse(target):
                out.append(f"{rel}:{node.lineno} {ast.unparse(node)[:100]}")
    return out


def test_no_long_modules():
    assert long_modules() == []


def test_no_long_functions():
    assert long_functions() == []


def test_files_are_written_atomically():
    assert raw_writes() == []


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
    (pkg / "writes.py").write_text(
        "def h(fig, out, tmp):\n    fig.savefig(out / 'a.png')\n    open(out, 'w')\n    open(tmp, 'wb')\n"
        "    (tmp / 'b.json').write_text('{}')\n    io_safety.write_text(out, '')\n    open(out)\n"
    )
    assert raw_writes(tmp_path) == ["dam/writes.py:2 fig.savefig(out / 'a.png')", "dam/writes.py:3 open(out, 'w')"]
