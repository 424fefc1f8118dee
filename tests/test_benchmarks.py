"""The scaling benchmark's quick preset runs end to end and writes complete, sane JSON (slow set; no timing asserts),
and the benchmarks' presets, targets and agreement rows."""

import importlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pandas as pd
import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


# The tests of the --quick run (about 2 min of compiling) are slow; the benchmarks' logic is tested in the default set
@pytest.fixture(scope="module")
def quick_result(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scaling")
    run = tmp / "run"  # a finished experiment folder whose first stage was loaded from an earlier run
    run.mkdir()
    stages = {"site_a/physics_default": 4.0, "site_a/lstm": 6.0, "site_b/physics_default": 2.0}
    (run / "timings.json").write_text(json.dumps({"total_seconds": 8.5, "stages": stages}))
    (run / "config.yaml").write_text("name: tiny\n")
    out = tmp / "scaling.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # the benchmark's own defaults, not the tests'
    cmd = [sys.executable, str(BENCHMARKS / "scaling.py"), "--quick", "--no-progress"]
    proc = subprocess.run(
        [*cmd, "--experiment-run", str(run), "--output", str(out)], env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text()), out, proc.stdout


def _positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


@pytest.mark.slow
def test_quick_json_has_every_part(quick_result):
    result, out, stdout = quick_result
    for key in ("machine", "settings", "column_sweep", "device_scaling", "experiment", "targets"):
        assert key in result
    assert result["machine"]["backend"] == "cpu" and result["machine"]["jax"]
    assert set(result["targets"]) == {
        "forward_float32_1e6_columns_column_steps_per_s",
        "weak_scaling_efficiency",
        "gradient_over_forward",
    }
    assert out.with_suffix(".png").stat().st_size > 10_000
    assert "Column sweep" in stdout and "x Fortran" in stdout and "Targets" in stdout


@pytest.mark.slow
def test_quick_sweep_rows(quick_result):
    sweep = quick_result[0]["column_sweep"]
    forward = [r for r in sweep if r["kind"] == "forward"]
    gradient = [r for r in sweep if r["kind"] == "gradient"]
    assert [r["columns"] for r in forward] == [1, 16] == [r["columns"] for r in gradient]
    for r in forward:
        assert _positive(r["column_steps_per_s"]) and _positive(r["x_smallest"]) and _positive(r["x_fortran"])
        assert r["memory"]["argument"] > 0 and _positive(r["memory"]["total_per_column"])
    assert forward[0]["x_smallest"] == 1.0  # the smallest run is the baseline
    ran, skipped = gradient
    assert _positive(ran["column_steps_per_s"]) and _positive(ran["gradient_over_forward"])
    assert ran["memory"]["temp"] > 0
    assert skipped["seconds"] is None and "--grad-columns" in skipped["skipped"]
    ratio = quick_result[0]["targets"]["gradient_over_forward"]
    assert ratio["value"] == ran["gradient_over_forward"] and ratio["met"] is (ratio["value"] <= 4.0)
    per_step = [r for r in sweep if r["kind"] == "gradient_per_step"]
    assert [r["columns"] for r in per_step] == [1, 16] and _positive(per_step[0]["gradient_over_forward"])
    assert ratio["per_dtype"]["float32"]["ratio_per_step_checkpoints"] == per_step[0]["gradient_over_forward"]
    (chunked,) = [r for r in sweep if r["kind"] == "forward_chunked"]  # only above the chunk of 8 columns
    assert chunked["columns"] == 16 and chunked["column_chunk"] == 8 and _positive(chunked["x_unchunked"])


@pytest.mark.slow
def test_quick_device_rows(quick_result):
    scaling = quick_result[0]["device_scaling"]
    assert scaling["emulated"] and "emulated" in scaling["note"]
    rows = {(r["mode"], r["devices"]): r for r in scaling["rows"]}
    assert set(rows) == {("weak", 1), ("weak", 2), ("strong", 1), ("strong", 2)}
    assert rows["weak", 2]["columns"] == 2 * rows["weak", 1]["columns"]
    assert rows["strong", 2]["columns"] == rows["strong", 1]["columns"]
    assert rows["weak", 1]["efficiency"] == 1.0 == rows["strong", 1]["efficiency"]
    for r in rows.values():
        assert _positive(r["column_steps_per_s"]) and _positive(r["efficiency"]) and _positive(r["run_sharded_s"])
    assert quick_result[0]["targets"]["weak_scaling_efficiency"]["met"] is None  # emulated: not a real figure


@pytest.mark.slow
def test_experiment_timings_from_run_folder(quick_result):
    ex = quick_result[0]["experiment"]
    assert ex["config_name"] == "tiny" and ex["total_seconds"] == 8.5 and ex["wall_seconds"] is None
    assert ex["per_model_seconds"] == {"physics_default": 6.0, "lstm": 6.0}
    assert ex["sum_of_stage_seconds"] == 12.0 and ex["resumed"]


def _benchmark_module(name: str = "scaling"):
    """A benchmark script imported as a module (the scripts import ``_common`` from their folder)."""
    if str(BENCHMARKS) not in sys.path:
        sys.path.insert(0, str(BENCHMARKS))
    return importlib.import_module(name)


def test_quick_preset_yields_to_explicit_options():
    args = _benchmark_module().parse_args(["--quick", "--columns", "1", "4"])
    assert args.columns == [1, 4] and args.devices == [1, 2] and args.grad_columns == [1]


def test_targets_from_rows():
    scaling = _benchmark_module()
    sweep = [
        {"kind": "forward", "dtype": "float32", "columns": 10**6, "seconds": 1.0, "column_steps_per_s": 2e9},
        {"kind": "gradient", "dtype": "float32", "columns": 10**4, "seconds": 3.0, "gradient_over_forward": 3.0},
        {"kind": "gradient", "dtype": "float32", "columns": 10**6, "seconds": None, "skipped": "memory"},
        {"kind": "gradient", "dtype": "float64", "columns": 100, "seconds": 5.0, "gradient_over_forward": 5.0},
    ]
    weak = [{"mode": "weak", "devices": d, "efficiency": e} for d, e in ((1, 1.0), (2, 0.9), (4, 0.85))]
    real = scaling.check_targets(sweep, {"emulated": False, "rows": weak})
    forward = real["forward_float32_1e6_columns_column_steps_per_s"]
    assert forward["value"] == 2e9  # judged only on a GPU (the target is for one H100): None on a CPU
    assert forward["met"] is (True if jax.default_backend() == "gpu" else None)
    assert real["weak_scaling_efficiency"]["value"] == 0.85 and real["weak_scaling_efficiency"]["met"] is True
    grad = real["gradient_over_forward"]
    assert grad["value"] == 5.0 and grad["met"] is False and grad["per_dtype"]["float32"]["columns"] == 10**4
    emulated = scaling.check_targets(sweep[1:], {"emulated": True, "rows": weak})
    assert emulated["weak_scaling_efficiency"]["met"] is None
    assert emulated["forward_float32_1e6_columns_column_steps_per_s"]["met"] is None


def test_interrupted_run_keeps_finished_configurations(tmp_path, monkeypatch):
    """A run stopped by SIGINT (Ctrl-C, ``timeout -s INT``) writes what it finished, and a kill any earlier
    would still find every finished row."""
    scaling = _benchmark_module()

    out = tmp_path / "scaling.json"

    def measure(kind, fn, data, n, steps, dtype, args, per_column):
        if n > 1 and kind != "forward":  # the second configuration is cut off after its forward
            written = json.loads(out.read_text())  # what a hard kill here would leave: every finished row
            assert "partial" in written and len(written["column_sweep"]) == 4
            raise KeyboardInterrupt
        return {"kind": kind, "dtype": dtype, "columns": n, "steps": steps, "seconds": 0.5, "skipped": None,
                "column_steps_per_s": n * steps / 0.5}  # fmt: skip

    monkeypatch.setattr(scaling, "_measure", measure)
    assert scaling.main(["--quick", "--no-progress", "--output", str(out)]) == 0
    result = json.loads(out.read_text())
    assert "interrupted" in result and "partial" not in result and result["device_scaling"] is None
    kinds = {(r["columns"], r["kind"]) for r in result["column_sweep"]}
    assert kinds == {(1, "forward"), (1, "gradient"), (1, "gradient_per_step"), (16, "forward")}
    assert result["targets"]["gradient_over_forward"]["value"] == 1.0
    assert out.with_suffix(".png").exists()


def test_backend_agreement_rows():
    """The accelerator-vs-CPU check: on a CPU-only machine both runs are the CPU and must agree exactly."""
    row = _benchmark_module("backend_agreement").compare(8, 3, "float64", repeats=1)
    assert row["all_finite_on_accelerator"] and set(row["forward_seconds"]) == {"accelerator", "cpu"}
    assert {"final_t", "final_smc", "grad_bexp", "grad_tbot"} <= set(row["max_abs_difference"])
    tolerance = 0.0 if jax.default_backend() == "cpu" else 1e-8
    assert max(row["max_relative_difference"].values()) <= tolerance


def _quadratic(truth):
    """A batched objective of latent vectors (pop, n) with its minimum, 0, at ``truth``."""
    return lambda vecs: np.sum((np.atleast_2d(vecs) - truth) ** 2, axis=1)


def test_gradient_free_opponents_find_a_known_minimum_within_their_budget():
    """The calibration benchmark's CMA-ES (cma), SCE-UA (spotpy) and LHS wrappers, on a cheap objective."""
    from dam.coupling.calibration import make_specs

    cal = _benchmark_module("calibration")
    truth, z0 = np.array([0.5, -1.0, 1.5, 0.2]), np.zeros(4)
    specs = make_specs(list(cal.FIELDS))
    template = {s.name: np.float64(0.0) for s in specs}
    start = float(_quadratic(truth)(z0)[0])
    for name, trace in [("cmaes", cal.run_cmaes(_quadratic(truth), z0, 300, seed=0)),
                        ("sceua", cal.run_sceua(_quadratic(truth), 4, 300, seed=0)),
                        ("lhs", cal.run_lhs(_quadratic(truth), template, specs, 50, seed=0))]:  # fmt: skip
        assert 0 < len(trace.losses) <= (300 if name != "lhs" else 50) + cal.LHS_BATCH, name
        assert np.all(np.diff(trace.seconds) >= 0), name
        best, latent = trace.best(len(trace.losses))
        assert best == pytest.approx(float(_quadratic(truth)(latent)[0]), rel=1e-12), name
        assert best < (1e-4 if name == "cmaes" else 0.5 * start), (name, best)  # the searches do search
        assert trace.best(1)[0] >= best and trace.evaluations_within(trace.seconds[-1]) == len(trace.losses)
    assert cal.run_lhs(_quadratic(truth), template, specs, 5, seed=0).latents[0] == pytest.approx(z0)


def test_gradient_free_opponents_stop_once_the_rows_have_what_they_need():
    """Past the gradient run's seconds (here 0) and its number of evaluations the searches stop (their budget was
    200x the gradient's evaluations: hours of search whose results no row reads)."""
    from dam.coupling.calibration import make_specs

    cal = _benchmark_module("calibration")
    truth, z0 = np.array([0.5, -1.0, 1.5, 0.2]), np.zeros(4)
    specs = make_specs(list(cal.FIELDS))
    template = {s.name: np.float64(0.0) for s in specs}
    stop = {"limit_s": 0.0, "min_evaluations": 5}
    counts = {"cmaes": len(cal.run_cmaes(_quadratic(truth), z0, 300, seed=0, **stop).losses),
              "sceua": len(cal.run_sceua(_quadratic(truth), 4, 300, seed=0, **stop).losses),
              "lhs": len(cal.run_lhs(_quadratic(truth), template, specs, 300, seed=0, **stop).losses)}  # fmt: skip
    # one population of 8, five evaluations one by one, one batch of LHS_BATCH
    assert counts == {"cmaes": cal._popsize(4), "sceua": 5, "lhs": cal.LHS_BATCH}, counts


def test_calibration_benchmark_targets():
    cal = _benchmark_module("calibration")
    rows = []
    for site, grad, cma in (("a", 0.01, 0.02), ("b", 0.03, 0.02), ("c", 0.01, 0.05)):
        for seed in range(2):
            base = {"site": site, "seed": seed}
            rows += [{**base, "kind": "real", "n_params": 16, "method": "gradient", "test_rmse": grad},
                     {**base, "kind": "real", "n_params": 16, "method": "cmaes@equal_time", "test_rmse": cma},
                     {**base, "kind": "real", "n_params": 4, "method": "gradient", "test_rmse": 1.0},
                     {**base, "kind": "synthetic", "n_params": 16, "method": "gradient", "test_rmse": 0.0,
                      "recovery_error": 0.03 + 0.01 * seed}]  # fmt: skip
    goals = cal.targets(rows)
    assert goals["gradient_wins_real_16plus"] == {"by_parameters": {16: {"wins": 2, "sites": 3}},
                                                  "target": ">= 2 of 3 sites", "rule": "lowest_training_loss",
                                                  "met": True}  # fmt: skip
    assert "gradient_wins_real_16plus_recent_window" not in goals  # no +recent rows
    # counted per parameter count: losing at two of the three sites with 64 parameters misses the target
    rows += [{"site": site, "seed": 0, "kind": "real", "n_params": 64, "method": m, "test_rmse": v}
             for site, grad in (("a", 0.03), ("b", 0.03), ("c", 0.01))
             for m, v in (("gradient", grad), ("cmaes@equal_time", 0.02))]  # fmt: skip
    wins = cal.targets(rows)["gradient_wins_real_16plus"]
    assert wins["by_parameters"][64] == {"wins": 1, "sites": 3} and wins["met"] is False
    assert goals["synthetic_recovery_16_params"]["median_error"] == pytest.approx(0.035)
    assert goals["synthetic_recovery_16_params"]["met"] is True
    # the recent-window rule compares "+recent" rows only: the gradient's choice against the searches' choices
    rows += [{"site": site, "seed": 0, "kind": "real", "n_params": 16, "method": m, "test_rmse": v}
             for site, grad in (("a", 0.01), ("b", 0.01), ("c", 0.03))
             for m, v in (("gradient+recent", grad), ("cmaes+recent@equal_time", 0.02),
                          ("lhs+recent@equal_time", 0.025))]  # fmt: skip
    both = cal.targets(rows)
    assert both["gradient_wins_real_16plus_recent_window"]["by_parameters"] == {16: {"wins": 2, "sites": 3}}
    assert both["gradient_wins_real_16plus"]["by_parameters"][16] == {"wins": 2, "sites": 3}  # unchanged


def test_recent_window_rule_scores_each_improvement():
    """Every evaluation that lowered the best training loss so far is a candidate; the one that fits the recent
    window best is chosen, among the first n evaluations only."""
    cal = _benchmark_module("calibration")
    trace = cal.Trace()
    trace.losses = [3.0, 2.0, 2.5, 1.0, 1.5]
    trace.latents = [np.array([float(k)]) for k in range(5)]
    recent = lambda vecs: (np.asarray(vecs)[:, 0] - 1.0) ** 2  # noqa: E731  (evaluation 1 fits the window)
    assert cal.recent_choice(trace, 5, recent) == (1, 3)  # candidates: evaluations 0, 1 and 3
    assert cal.recent_choice(trace, 1, recent) == (0, 1)
    trace.latents = []  # a multi-start gradient's trace keeps no latents
    assert cal.recent_choice(trace, 5, recent) == (None, 0)


def test_calibration_benchmark_resume_keeps_finished_problems(tmp_path):
    """--resume reads the finished problems back from the results file and refuses a file of other settings."""
    import argparse
    import json

    cal = _benchmark_module("calibration")
    args = argparse.Namespace(sites=["x"], params=[16], kinds=["real"], seeds=1, steps=60, starts=1,
                              learning_rate=0.1, truncation=240, optimizer="adam", recent=None, quick=False,
                              output=str(tmp_path / "r.json"), resume=True)  # fmt: skip
    out = tmp_path / "r.json"
    assert cal._resumed(out, args) == ([], {}, set(), 0.0)  # nothing written yet
    rows = [{"site": "x", "n_params": 16, "kind": "real", "seed": 0, "method": "gradient", "test_rmse": 0.1}]
    traces = {"x, real, 16 parameters": {"gradient": {"seconds": [1.0], "losses": [0.1]}}}
    out.write_text(json.dumps({"settings": {**vars(args), "sites": ["y"]}, "rows": rows, "traces": traces,
                               "benchmark_seconds": 12.5}))  # fmt: skip
    assert cal._resumed(out, args) == (rows, traces, {("x", 16, "real", 0)}, 12.5)
    older = {k: v for k, v in vars(args).items() if k != "recent"}  # written before --recent existed: its default
    out.write_text(json.dumps({"settings": older, "rows": rows, "traces": traces, "benchmark_seconds": 12.5}))
    assert cal._resumed(out, args)[2] == {("x", 16, "real", 0)}
    # a run whose problems are all done computes nothing and still writes its figure and table
    cal.main(["--sites", "x", "--params", "16", "--kinds", "real", "--seeds", "1", "--truncation", "240",
              "--output", str(out), "--resume"])  # fmt: skip
    assert out.with_suffix(".png").is_file()
    args.learning_rate = 0.3
    with pytest.raises(SystemExit, match="other settings"):
        cal._resumed(out, args)
    with pytest.raises(SystemExit):  # L-BFGS's line search needs the exact gradient
        cal.main(["--optimizer", "lbfgs", "--truncation", "240", "--output", str(out)])


def test_calibration_benchmark_resumes_after_the_last_finished_seed(tmp_path, monkeypatch):
    """A run killed after its first seed keeps that seed's rows; --resume runs only the other seeds, reusing the real
    problem's gradient rows (the gradient is not run again, so every seed's searches get the same seconds). The model
    is replaced by a quadratic: this tests the bookkeeping, not the methods."""
    from dam.io_safety import leftover_temporaries

    cal = _benchmark_module("calibration")
    times = pd.date_range("2000-01-01", periods=50, freq="D")
    z0 = np.zeros(16)
    objective = lambda vecs: np.sum((np.atleast_2d(vecs) - 0.5) ** 2, axis=1)  # noqa: E731
    monkeypatch.setattr(cal, "_setup", lambda site, n: (SimpleNamespace(times=times), [], times[39]))
    monkeypatch.setattr(cal, "_search_programs", lambda *a: (objective, z0, None, objective, 0.5))
    monkeypatch.setattr(cal, "_values", lambda latent, setup, specs: {"x": float(objective(latent)[0])})
    monkeypatch.setattr(cal, "_score", lambda setup, obs, specs, values, *a: {"test_rmse": values["x"]})
    gradient_runs, kill_at = [], [1]

    def run_gradient(setup, obs, specs, train_end, steps, *rest):
        gradient_runs.append(steps)
        trace = cal.Trace()
        trace.seconds, trace.losses, trace.latents = [0.01, 0.02], [4.0, 3.5], [z0, z0 + 0.1]
        return trace, {"x": 3.5}, 2

    def searches(objective, z0, template, specs, budget, seed, **stop):
        if seed in kill_at:
            raise KeyboardInterrupt
        trace = cal.Trace(budget, **stop)
        for x in np.random.default_rng(seed).uniform(size=(4, z0.size)):
            trace.add(objective(x)[0], x)
        yield "cmaes", trace

    monkeypatch.setattr(cal, "run_gradient", run_gradient)
    monkeypatch.setattr(cal, "_searches", searches)
    out = tmp_path / "r.json"
    argv = ["--sites", "x", "--params", "16", "--kinds", "real", "--seeds", "3", "--steps", "2", "--recent", "0.2",
            "--output", str(out)]  # fmt: skip
    with pytest.raises(KeyboardInterrupt):
        cal.main(argv)
    first = json.loads(out.read_text())
    assert {r["seed"] for r in first["rows"]} == {0} and gradient_runs == [1, 2]  # compiled, then run once
    kill_at.clear()
    cal.main([*argv, "--resume"])
    result = json.loads(out.read_text())
    assert gradient_runs == [1, 2]  # the resumed seeds took the gradient's rows from seed 0's
    assert result["rows"][: len(first["rows"])] == first["rows"]
    by_seed = {s: {r["method"]: r for r in result["rows"] if r["seed"] == s} for s in range(3)}
    for s in (1, 2):
        assert set(by_seed[s]) == set(by_seed[0])
        for method in ("gradient", "gradient+recent"):
            assert by_seed[s][method] == {**by_seed[0][method], "seed": s}
    assert set(result["traces"]["x, real, 16 parameters"]) == {"gradient", "cmaes"}  # seed 0's, for the figure
    assert leftover_temporaries(tmp_path) == []  # the results file is written atomically


@pytest.mark.slow
def test_cores_benchmark_splits_the_same_columns_over_pinned_processes(tmp_path):
    """``benchmarks/cores.py`` on a tiny workload: every configuration runs all columns, each process on its own
    cores, and the JSON has the ratios to one core and the target (about 40 s of starting and compiling)."""
    out = tmp_path / "cores.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, str(BENCHMARKS / "cores.py"), "--columns", "33", "--steps", "4", "--repeats", "2"]
    proc = subprocess.run([*cmd, "--isa", "native", "--output", str(out)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    cores = result["machine"]["affinity"]
    rows = {r["config"]: r for r in result["rows"]}
    assert list(rows) == ["1 core", "1 process", f"{len(cores)} processes"]
    assert rows["1 core"]["cores"] == [cores[:1]] and rows["1 process"]["cores"] == [cores]
    assert sorted(c for group in rows[f"{len(cores)} processes"]["cores"] for c in group) == cores
    assert all(
        r["columns"] == 33 and len(r["repeats_s"]) == 2 and _positive(r["column_steps_per_s"]) for r in rows.values()
    )
    assert rows["1 core"]["x_one_core"] == 1.0
    assert set(result["target"]["measured"]) == {"native"} and out.with_suffix(".png").exists()


@pytest.mark.slow
def test_pow_ceiling_benchmark_rows(tmp_path):
    """``benchmarks/pow_ceiling.py`` on a tiny workload: the model as it is, the exp-log pow (close to it, not
    equal) and the free pow, each in a process pinned to one core, with the pow cost the target would allow."""
    out = tmp_path / "pow.json"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    cmd = [sys.executable, str(BENCHMARKS / "pow_ceiling.py"), "--columns", "16", "--steps", "4", "--repeats", "1"]
    proc = subprocess.run([*cmd, "--output", str(out)], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {r["variant"]: r for r in result["rows"]}
    assert list(rows) == ["libm", "exp_log", "free"] and rows["libm"]["x_libm"] == 1.0
    assert all(_positive(r["seconds"]) and _positive(r["column_steps_per_s"]) for r in rows.values())
    assert rows["libm"]["final_smc_max_abs_diff"] == 0.0
    assert rows["exp_log"]["final_smc_max_abs_diff"] < 1e-10  # another pow, not another model
    assert rows["free"]["final_smc_max_abs_diff"] > 1e-6
    assert all(_positive(t) for t in result["element_seconds"].values()) and len(result["machine"]["affinity"]) == 1
    assert _positive(result["target"]["speedup_needed"]) and math.isfinite(result["target"]["pow_seconds_allowed"])


@pytest.mark.slow  # compiles the soil column's forward and three gradients (about a minute on 2 cores)
def test_gradient_cost_benchmark_rows(tmp_path):
    """``benchmarks/gradient_cost.py`` on a tiny workload: the forward and the rematerialisation settings (the
    step's own derivative and its twin's), each timed against the forward of the same run, the parts of one step,
    and the machine recorded."""
    out = tmp_path / "cost.json"
    cmd = [sys.executable, str(BENCHMARKS / "gradient_cost.py"), "--columns", "8", "--steps", "4", "--dtypes",
           "float64", "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["machine"]["cpu_count"] >= 1
    rows = {r["function"]: r for r in result["rows"]}
    assert list(rows) == ["forward", "gradient_stored", "gradient_per_step", "gradient_segments_8",
                          "gradient_per_step_twin", "gradient_segments_8_twin"]  # fmt: skip
    assert rows["forward"]["over_forward"] == 1.0
    assert all(_positive(r["seconds"]) and r["over_forward"] > 0 and r["temp_mib"] >= 0 for r in rows.values())
    parts = {r["part"]: r for r in result["parts"]}
    assert len(parts) == 6 and {"whole step", "whole step, exp_log twin"} <= set(parts)
    assert all(_positive(r["forward_s"]) and _positive(r["gradient_s"]) for r in parts.values())


def test_gradient_profile_groups_the_kernels_by_pass_and_line(tmp_path):
    """``benchmarks/gradient_profile.py`` on a tiny workload: a profile of the forward and of the gradient, whose
    kernels are attributed to the gradient's backward pass and to lines of the physics."""
    out = tmp_path / "profile.json"
    cmd = [sys.executable, str(BENCHMARKS / "gradient_profile.py"), "--columns", "8", "--steps", "2", "--runs", "1",
           "--derivative-pow", "libm", "--json", str(out)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    profiles = json.loads(out.read_text())["profiles"]
    forward, gradient = profiles["forward"], profiles["gradient"]
    assert 0 < forward["kernels_per_step"] < gradient["kernels_per_step"]
    assert "backward" not in forward["by_pass_ms"] and gradient["by_pass_ms"]["backward"] > 0
    assert any(key.startswith("backward soil_water.py:") for key in gradient["by_line_ms"])


def test_sensor_level_ceilings(tmp_path):
    """``benchmarks/sensor_level.py``: the leave-one-out level regression recovers an exact linear relation, the
    shifted RMSE is the ubRMSE when the shift is the bias, and the counts follow the metrics table they read."""
    sys.path.insert(0, str(BENCHMARKS))
    import sensor_level as SL

    x = np.linspace(0.0, 1.0, 6)[:, None]
    assert np.allclose(SL.loo_predictions(0.1 - 0.2 * x[:, 0], x, ridge=0.0), 0.1 - 0.2 * x[:, 0])
    assert np.allclose(SL.loo_predictions(np.r_[1.0, 2.0, 3.0], np.zeros((3, 0))), [2.5, 2.0, 1.5])  # the others' mean

    names = ["bondville_1998", "hyytiala_2000_2010", "tanggula_forcing_only"]
    rows = []
    bias = np.array([0.05, 0.0, -0.05])  # the physics' level error at each site, of either sign
    for i, site in enumerate(names):  # two sensors per site
        for depth in (0.05, 0.2):
            rows.append((site, "physics_default", depth, bias[i], 0.04))
            rows.append((site, "net", depth, 0.1, 0.03 if i < 2 else 0.05))  # better timing at two sites
    metrics = pd.DataFrame(rows, columns=["site", "model", "depth_m", "bias", "ubrmse"]).assign(reliable=True)
    metrics["rmse"] = np.hypot(metrics["bias"], metrics["ubrmse"])
    shifted = SL.shifted_rmse(metrics[metrics.model == "physics_default"], pd.Series(bias, names))
    assert np.allclose(shifted, 0.04)
    run = tmp_path / "run"
    run.mkdir()
    metrics.to_csv(run / "metrics.csv", index=False)
    (run / "config.yaml").write_text(f"sites: {names}\n")
    r = SL.analyse(run, tmp_path)
    assert r["sites"] == names and r["timing_with_physics_level"] == {"net": 2}
    # the others' mean (-0.025, 0, 0.025) moves the outer sites' level further off and leaves the middle one
    assert r["level_mean_shift"]["sites_lower"] == 0 and r["subsets_tried"] == 129
    assert set(r["attributes"]["bondville_1998"]) == set(SL.ATTRIBUTES)
    assert "| net | 2 of 3 |" in SL.report(r)


def test_identifiability_summary_counts_the_values_a_fit_cannot_pin_down():
    """``benchmarks/identifiability.py``: per site, the median profile RMSE of each value over the seeds, the values
    (median over seeds) below each threshold, and, with an L-BFGS fit, how many values it missed by more than the
    examined error and how many of those had a profile RMSE below the fit it reached."""
    sys.path.insert(0, str(BENCHMARKS))
    summary = importlib.import_module("identifiability").summary
    profiles = {0: [1e-3, 5e-5, 0.0], 1: [3e-3, 2e-4, 0.0]}  # seed -> profile RMSE of values a, b, c
    errors = {0: [0.01, 0.3, 2.0], 1: [-0.2, 0.04, 0.1]}  # the fit's relative error of each value
    rows = [{"site": "s", "seed": seed, "parameter": p, "relative_error": 0.05, "rmse_profile": profiles[seed][i],
             "fit_rmse": 1e-4 * (1 + seed), "fit_relative_error": errors[seed][i]}
            for seed in (0, 1) for i, p in enumerate("abc")]  # fmt: skip
    out = summary(rows, thresholds=(1e-4, 1e-3))["s"]
    assert out["median_profile_rmse"] == pytest.approx({"a": 2e-3, "b": 1.25e-4, "c": 0.0})
    assert out["values_below"] == {"0.0001": 1.5, "0.001": 2.0} and out["values"] == 3
    # missed: b and c of seed 0, a and c of seed 1; below the fit: b (5e-5 < 1e-4), c (0), c (0), not a (3e-3)
    assert out["lbfgs"]["values_missed"] == 4 and out["lbfgs"]["missed_with_profile_below_fit"] == 3
    assert out["lbfgs"]["largest_error"] == 2.0 and out["lbfgs"]["fit_rmse"] == {0: 1e-4, 1: 2e-4}
