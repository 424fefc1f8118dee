"""Atomic writes, output checks and run folders (dam.io_safety, dam.run_folder)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from dam.io_safety import OutputError, atomic_path, check_outputs, leftover_temporaries, relation, write_text
from dam.run_folder import (
    RunFolderError,
    RunLock,
    content_hash,
    fingerprint,
    inside,
    open_run_folder,
    safe_name,
    write_manifest,
)


def test_atomic_write_replaces_only_when_complete(tmp_path):
    target = tmp_path / "out" / "table.csv"
    write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old" and leftover_temporaries(target.parent) == []
    with atomic_path(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".csv" and tmp.name.startswith(".table.dam-tmp-")
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_a_killed_writer_leaves_only_a_hidden_temporary(tmp_path):
    code = ("import os, signal; from dam.io_safety import atomic_path\n"
            f"with atomic_path({str(tmp_path / 'x.nc')!r}) as t:\n"
            "    t.write_text('half'); os.kill(os.getpid(), signal.SIGKILL)")  # fmt: skip
    subprocess.run([sys.executable, "-c", code])
    assert not (tmp_path / "x.nc").exists()
    assert [p.name.startswith(".x.dam-tmp-") for p in leftover_temporaries(tmp_path)] == [True]


def test_relation_and_output_checks(tmp_path):
    inp = tmp_path / "case" / "forcing.csv"
    inp.parent.mkdir()
    inp.write_text("x")
    assert relation(tmp_path / "case" / "." / "forcing.csv", inp) == "is"
    assert relation(tmp_path, inp) == "contains"
    assert relation(inp / "sub", inp) == "lies inside"
    assert relation(tmp_path / "other.csv", inp) is None
    with pytest.raises(OutputError, match="is the input"):
        check_outputs([inp], inputs=[inp], overwrite=True)
    with pytest.raises(OutputError, match="already exists; pass --overwrite"):
        check_outputs([inp])
    check_outputs([inp], overwrite=True)
    with pytest.raises(OutputError, match="unsupported extension '.txt'"):
        check_outputs([tmp_path / "a.txt"], suffixes=(".csv", ".nc"))
    with pytest.raises(OutputError, match="is a folder"):
        check_outputs([tmp_path / "case"])
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_outputs([inp / "deeper" / "o.csv"])
    assert not (inp.parent / "deeper").exists()


def test_safe_names_keep_paths_inside_the_run(tmp_path):
    assert safe_name("hyytiala_2000-2010.v2", "site") == "hyytiala_2000-2010.v2"
    for bad in ("../x", "/abs", "a/b", ".hidden", "..", "", "a b"):
        with pytest.raises(RunFolderError, match="cannot name a folder"):
            safe_name(bad, "site name")
    assert inside(tmp_path, "a", "b.nc") == tmp_path / "a" / "b.nc"
    with pytest.raises(RunFolderError):
        inside(tmp_path, "..", "x")


def test_run_folder_resolution_manifest_and_foreign_folders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder, manifest = open_run_folder("./runs/x", "experiment")
    assert folder == open_run_folder("runs/x", "experiment")[0] == tmp_path / "runs" / "x" and manifest is None
    write_manifest(folder, "experiment", "abc", {"seed": 0}, {"site": "123"})
    assert open_run_folder("runs/x/", "experiment")[1]["fingerprint"] == "abc"
    with pytest.raises(RunFolderError, match="holds a dam 'experiment' run, not a grid-run run"):
        open_run_folder("runs/x", "grid-run")
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "ch1.tex").write_text("x")
    with pytest.raises(RunFolderError, match="not empty and is not a dam experiment run folder"):
        open_run_folder("thesis", "experiment")


def test_lock_is_exclusive_and_released_by_a_dead_process(tmp_path):
    code = ("import os, signal; from dam.run_folder import RunLock\n"
            f"with RunLock({str(tmp_path)!r}):\n    print('held', flush=True); input()")  # fmt: skip
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunFolderError, match=f"in use by another dam run \\(PID {holder.pid} on "):
            with RunLock(tmp_path):
                pass
    finally:
        holder.kill()  # a killed holder: the kernel releases its lock, the stale file stays
        holder.wait()
    assert (tmp_path / ".dam.lock").exists()
    with RunLock(tmp_path):
        assert f"PID {os.getpid()}" in (tmp_path / ".dam.lock").read_text()


def test_content_fingerprints_follow_the_bytes_not_the_path(tmp_path):
    a, b = tmp_path / "a.nc", tmp_path / "sub" / "b.nc"
    b.parent.mkdir()
    a.write_bytes(b"forcing")
    b.write_bytes(b"forcing")
    assert content_hash(a) == content_hash(b)
    assert fingerprint({"x": 1}, {"f": content_hash(a)}) == fingerprint({"x": 1}, {"f": content_hash(b)})
    b.write_bytes(b"forcing, changed")
    assert content_hash(a) != content_hash(b)
    assert content_hash(tmp_path / "sub") != content_hash(a)  # a folder: names and bytes of its files
