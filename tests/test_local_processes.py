"""Local processes (``dam grid-run --local-processes N``): the cores split among them, refusals, and one failed
process stopping the others. The run itself (equal to one process bit for bit) is in tests/test_multiprocess.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from dam import local_processes
from dam.cli import main


@pytest.mark.parametrize(
    ("n", "cores", "groups"),
    [
        (1, [0, 1], [[0, 1]]),
        (2, [1, 0], [[0], [1]]),
        (4, range(6), [[0, 1], [2, 3], [4], [5]]),
        (3, [2, 5, 7], [[2], [5], [7]]),
    ],
)
def test_core_groups_split_all_cores_contiguously(n, cores, groups):
    assert local_processes.core_groups(n, cores) == groups


@pytest.mark.parametrize("n", [0, 3])
def test_core_groups_refuse_more_processes_than_cores(n):
    with pytest.raises(
        ValueError, match=rf"{n} local processes need as many CPU cores.*may use 2 \(0, 1\); use 1 to 2"
    ):
        local_processes.core_groups(n, [0, 1])


def _python(code: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code])


def test_a_failed_process_stops_the_others():
    t0 = time.monotonic()
    sleeper, failing = _python("import time; time.sleep(60)"), _python("import sys; sys.exit(3)")
    assert local_processes._wait([sleeper, failing]) == 3
    assert sleeper.returncode == -signal.SIGTERM and time.monotonic() - t0 < 30


def test_a_killed_process_is_reported_as_the_shell_does():
    sleeper = _python("import time; time.sleep(60)")
    sleeper.send_signal(signal.SIGKILL)
    assert local_processes._wait([sleeper]) == 128 + signal.SIGKILL


def test_after_ctrl_c_only_processes_still_running_get_sigint():
    # As a terminal's child would: pytest-xdist's workers start their children with SIGINT ignored.
    sleep = "import signal, time; signal.signal(signal.SIGINT, signal.default_int_handler); time.sleep({})"
    quick, slow = _python(sleep.format(0.2)), _python(sleep.format(60))
    local_processes._stop([quick, slow], signal.SIGINT, wait_first_s=5.0)
    assert quick.returncode == 0 and slow.returncode == -signal.SIGINT


def test_all_succeeded_is_zero():
    assert local_processes._wait([_python("pass"), _python("pass")]) == 0


def _grid_config(tmp_path):
    assert main(["make-grid", str(tmp_path / "grid"), "--lat", "2", "--lon", "2", "--steps", "4"]) == 0
    return str(tmp_path / "grid" / "grid_run.yaml")


def test_cli_refuses_local_processes_with_distributed_options(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(local_processes, "launch", lambda *a: pytest.fail("nothing may start"))
    argv = ["grid-run", _grid_config(tmp_path), "--local-processes", "2", "--process-id", "0"]
    assert main(argv) == 2
    assert "--local-processes starts the run's processes itself: drop --process-id" in capsys.readouterr().err


def test_cli_refuses_more_local_processes_than_cores(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(local_processes, "available_cores", lambda: [0])
    monkeypatch.setattr(local_processes.subprocess, "Popen", lambda *a, **k: pytest.fail("nothing may start"))
    assert main(["grid-run", _grid_config(tmp_path), "--local-processes", "2"]) == 2
    assert "--local-processes: 2 local processes need as many CPU cores" in capsys.readouterr().err
