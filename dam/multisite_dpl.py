"""dPL regionalisation in a multi-site run (model ``physics_dpl``).

For every fold one network maps the static site attributes (:data:`dam.multisite.ATTRIBUTES`) to the changes of
the calibrated parameters (``calibration.parameters``, squashed into their bounds) from each site's own table
values, trained through the physics at all the fold's training sites together
(:func:`dam.calibration_dpl.calibrate_dpl` with ``residual=True``: before training every site has its table
parameters, i.e. ``physics_default``). Each site is scored on its calibration window (the last
``calibration.window_steps`` steps of its training period after ``calibration.warmup_steps``, as
``physics_calibrated``; the unbiased RMSE of its sensors, or their RMSE with ``calibration.dpl_metric: rmse``), for
``calibration.steps`` Adam steps of ``calibration.dpl_learning_rate`` (with ``calibration.dpl_loss: relative`` on the
sites' losses relative to their table parameters' losses). The fold's test sites then run the physics over their
record with the parameters the network gives for their attributes: a site's parameters come from sites it never
saw. Under the chronological split the one network is trained at all sites.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from . import io_safety
from .calibration import NoObservationsError, prepare_observations
from .calibration_dpl import DPLResult, calibrate_dpl
from .coupling.losses import PhysicsLoss
from .experiment_config import CalibrationConfig
from .experiment_data import SiteData
from .experiment_training import calibration_window, physics_daily
from .multisite import held_out
from .multisite_inputs import site_attributes
from .physics.guards import PlausibilityError
from .predictions import Prediction, load_prediction, save_prediction, stage_key
from .run_folder import inside

MODEL = "physics_dpl"


def train_dpl(train: list[SiteData], c: CalibrationConfig, *, seed: int, progress: bool = False,
              checkpoint_dir: Path | None = None, memo: dict | None = None) -> DPLResult:  # fmt: skip
    """The dPL network of the ``train`` sites (see the module docs); ``c.dpl_validation_sites`` of them (a
    permutation drawn with ``seed``) are held out to choose its step (``memo``:
    :func:`dam.experiment_training.calibration_window`'s)."""
    windows = [calibration_window(d, c, memo) for d in train]
    held = held_out(len(train), c.dpl_validation_sites, seed, "calibration.dpl_validation_sites")
    setups = [s.with_phase_change_gradient(c.phase_change_gradient) for s, _ in windows]
    return calibrate_dpl(
        setups, None, np.stack([site_attributes(d) for d in train]), c.parameters, seed=seed, steps=c.steps,
        windows=[(first, None) for _, first in windows], learning_rate=c.dpl_learning_rate,
        checkpoint_every=c.checkpoint_every, residual=True, relative=c.dpl_loss == "relative", validation=held,
        loss=PhysicsLoss(data=c.dpl_metric),
        progress=progress, checkpoint_dir=checkpoint_dir,
    )  # fmt: skip


def _scored(data: SiteData, c: CalibrationConfig, memo: dict | None) -> bool:
    """Whether the site's calibration window holds an observation to score the physics against (none on its
    training days: :func:`dam.experiment_training.calibration_window` moves back to the last observed day)."""
    short, first = calibration_window(data, c, memo)
    try:
        prepare_observations(short, start=first)
    except NoObservationsError:
        return False
    return True


def predict_dpl(result: DPLResult, data: SiteData) -> Prediction:
    """The physics over the site's record with the parameters the network gives for its attributes."""
    from .coupling.calibration import apply_parameters

    values = result.predict(site_attributes(data)[None], [data.setup.params])[0]
    pred = physics_daily(data, params=apply_parameters(data.setup.params, result.specs, values))[0]
    info = {"values": {k: np.asarray(v).tolist() for k, v in values.items()}}
    return dataclasses.replace(pred, model=MODEL, info=info)


def dpl_folds(run_dir: Path, cfg, sites: dict[str, SiteData], fold_of: dict[str, int], keys: dict, preds: dict,
              timings: dict, failures: list[dict], memo: dict | None = None) -> None:  # fmt: skip
    """Train (or read back) the network of every fold and predict its test sites into ``preds``; the network's
    values at the training sites and its loss history go to ``models/physics_dpl/fold<k>.json``. A test site
    whose physics a guard stops is reported in ``failures`` and scored as missing (retried on resume); ``memo``
    keeps the sites' calibration windows between folds (:func:`dam.experiment_training.calibration_window`)."""
    unscorable = {n for n in fold_of if not _scored(sites[n], cfg.calibration, memo)}  # once, not per fold
    for fold in sorted(set(fold_of.values())):
        test = sorted(n for n, f in fold_of.items() if f == fold)
        train = sorted(n for n, f in fold_of.items() if f != fold) if cfg.split == "leave_sites_out" else test
        unscored = [n for n in train if n in unscorable]
        if unscored:  # their loss would be 0 whatever the network gives them: they would only dilute the others'
            print(f"[{MODEL} fold{fold}] not trained at {', '.join(unscored)}: no training observation to score",
                  flush=True)  # fmt: skip
            train = [n for n in train if n not in unscored]
        key = stage_key(MODEL, {"train": train, "test": test}, {n: keys[n] for n in (*train, *test)})
        got = {n: load_prediction(run_dir, sites[n], MODEL, key) for n in test}
        if all(p is not None for p in got.values()):
            print(f"[{MODEL} fold{fold}] read back ({len(test)} test sites)", flush=True)
        else:
            t0 = time.perf_counter()
            result = train_dpl(
                [sites[n] for n in train],
                cfg.calibration,
                seed=cfg.seed,
                progress=cfg.progress,
                checkpoint_dir=inside(run_dir, "checkpoints", "multisite", MODEL, f"fold{fold}", key),
                memo=memo,
            )
            seconds = time.perf_counter() - t0
            loss = [float(v) for v in result.history["loss"]]
            for n in test:
                try:
                    got[n] = predict_dpl(result, sites[n])
                except PlausibilityError as err:
                    failures.append({"site": n, "model": MODEL, "error": str(err)})
                    got[n] = Prediction(MODEL, np.full(sites[n].observed.shape, np.nan), 0.0, {"failed": str(err)})
                    continue
                got[n].seconds = seconds / len(test)
                got[n].info.update(fold=fold, train_sites=train, train_loss=loss)
                save_prediction(run_dir, sites[n], got[n], key)
            trained = {n: {k: np.asarray(v).tolist() for k, v in vals.items()}
                       for n, vals in zip(train, result.values, strict=True)}  # fmt: skip
            held = [train[i] for i in result.validation]
            val = [result.history.attrs["initial_val_loss"], *result.history["val_loss"]] if held else []
            io_safety.write_text(inside(run_dir, "models", MODEL, f"fold{fold}.json"), json.dumps(
                {"fold": fold, "key": key, "train_sites": train, "unscored_sites": unscored, "test_sites": test,
                 "train_loss": loss, "validation_sites": held, "validation_loss": [float(v) for v in val],
                 "best_step": result.best_step, "train_values": trained, "seconds": seconds}, indent=1))  # fmt: skip
            step = result.best_step
            returned = ("the last step" if step is None else f"step {step} (best at the validation sites)" if step >= 0
                        else "the table parameters (no step helped the validation sites)")  # fmt: skip
            print(f"[{MODEL} fold{fold}] trained at {len(train)} sites in {seconds:.1f} s (loss {loss[0]:.4f} -> "
                  f"{min(loss):.4f}); returned {returned}", flush=True)  # fmt: skip
        for n in test:
            preds[n][MODEL] = got[n]
            timings[f"{n}/{MODEL}"] = got[n].seconds
