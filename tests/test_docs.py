"""Every code block of README.md and docs/*.md runs as written.

The ```python and ```bash blocks of one document run in document order in a fresh Python process, in a fresh
working folder that links the repository's benchmarks/, dam/ and docs/ (so paths relative to the repository
resolve while outputs stay out of the checkout): the python blocks share one namespace (as in one interactive
session) and each bash block runs in ``bash -e -o pipefail`` with this environment's ``dam`` and ``python``
first on PATH. ```yaml blocks must
parse. A block is marked by an HTML comment on the line before its fence:

- ``<!-- not-run: REASON -->``: never run (it installs software, needs a GPU or a cluster, is the test run itself);
- ``<!-- slow: REASON -->``: run only in the slow set (``pytest -m slow``), which runs the whole document.

``<!-- slow-document: REASON -->`` on a line of its own marks every block of the document slow. Documents whose
runnable blocks are all slow have only the slow test.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUNNABLE = ("python", "bash")
FENCE = re.compile(r"^```(\S*)\s*$")
TAG = re.compile(r"^<!--\s*(not-run|slow)\s*:\s*(\S.*?)\s*-->$")
SLOW_DOCUMENT = re.compile(r"^<!--\s*slow-document\s*:\s*(\S.*?)\s*-->$", re.MULTILINE)
TIMEOUT_S = {"default": 900, "slow": 3600}


@dataclass(frozen=True)
class Block:
    where: str  # "docs/x.md:12" (the fence line)
    lang: str
    code: str
    tag: str | None  # "not-run", "slow" or None
    reason: str | None


def blocks(path: Path) -> list[Block]:
    """The fenced code blocks of a Markdown file with the tag on the line before each fence."""
    text = path.read_text()
    slow_document = SLOW_DOCUMENT.search(text)
    lines = text.splitlines()
    found, i = [], 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[k].strip() for k in range(i - 1, -1, -1) if lines[k].strip()), "")
        tag = TAG.match(before)
        if before.startswith("<!--") and tag is None and not SLOW_DOCUMENT.match(before):
            raise ValueError(f"{path.name}:{i + 1}: unknown block tag {before!r} (use not-run: or slow:)")
        kind, reason = (tag.group(1), tag.group(2)) if tag else (None, None)
        if slow_document and kind is None:
            kind, reason = "slow", slow_document.group(1)
        where = f"{path.relative_to(ROOT)}:{i + 1}"
        found.append(Block(where, m.group(1), "\n".join(lines[i + 1 : end]) + "\n", kind, reason))
        i = end + 1
    return found


# The program one document becomes: blocks in order, python ones in one namespace.
DRIVER = textwrap.dedent(
    """
    import json, subprocess, sys

    namespace = {"__name__": "__main__"}
    for block in json.load(open(sys.argv[1])):
        print(f"--- {block['where']} ({block['lang']})", flush=True)
        if block["lang"] == "python":
            exec(compile(block["code"], block["where"], "exec"), namespace)
        elif subprocess.run(["bash", "-e", "-o", "pipefail", "-c", block["code"]]).returncode != 0:
            sys.exit(f"bash block {block['where']} failed")
    """
)


def _run_document(path: Path, selected: list[Block], tmp_path: Path, timeout_s: int) -> None:
    (tmp_path / "blocks.json").write_text(json.dumps([asdict(b) for b in selected]))
    (tmp_path / "driver.py").write_text(DRIVER)
    work = tmp_path / "work"  # the documents' commands run "from the repository folder": its entries are linked
    work.mkdir()
    for name in ("benchmarks", "dam", "docs", "pyproject.toml", "tests"):
        (work / name).symlink_to(ROOT / name)
    bin_dir = str(Path(sys.executable).parent)  # this environment's `dam` and `python`
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "MPLBACKEND": "Agg"}
    env.pop("XLA_FLAGS", None)  # the documents start JAX as a user would (the tests emulate 8 devices)
    env["DAM_COMPILE_CACHE"] = str(tmp_path / "xla")  # the CLI's cache is on for users: a first reader's, empty
    proc = subprocess.run(
        [sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "blocks.json")],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert proc.returncode == 0, f"{path.name} failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-6000:]}"


def _cases(slow: bool) -> list:
    cases = []
    for path in DOCUMENTS:
        runnable = [b for b in blocks(path) if b.lang in RUNNABLE and b.tag != "not-run"]
        has_fast = any(b.tag is None for b in runnable)
        has_slow = any(b.tag == "slow" for b in runnable)
        if (has_slow if slow else has_fast) and runnable:
            cases.append(pytest.param(path, id=str(path.relative_to(ROOT))))
    return cases


@pytest.mark.parametrize("path", _cases(slow=False))
def test_document_runs(path: Path, tmp_path: Path) -> None:
    """The document's untagged python and bash blocks run in order without error."""
    selected = [b for b in blocks(path) if b.lang in RUNNABLE and b.tag is None]
    _run_document(path, selected, tmp_path, TIMEOUT_S["default"])


@pytest.mark.slow
@pytest.mark.parametrize("path", _cases(slow=True))
def test_document_runs_with_slow_blocks(path: Path, tmp_path: Path) -> None:
    """The whole document (all blocks but the not-run ones) runs in order without error."""
    selected = [b for b in blocks(path) if b.lang in RUNNABLE and b.tag != "not-run"]
    _run_document(path, selected, tmp_path, TIMEOUT_S["slow"])


@pytest.mark.parametrize("path", DOCUMENTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_document_blocks_are_tagged_and_parse(path: Path) -> None:
    """Every block has a language, yaml blocks parse, and a block that is not run says why."""
    for b in blocks(path):
        assert b.lang, f"{b.where}: a code block needs a language (```python, ```bash, ```yaml, ```text)"
        if b.tag is not None:
            assert len(b.reason) >= 10, f"{b.where}: say why the block is {b.tag}"
        if b.lang == "yaml" and b.tag != "not-run":
            yaml.safe_load(b.code)
