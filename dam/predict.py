"""``dam predict``: the multi-site networks of a finished run folder at sites or periods they did not see
(optionally fine-tuned there)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .experiment_config import MULTISITE_MODELS, NetworkConfig, expand_sites
from .experiment_data import SiteData, prepare_site
from .experiment_training import physics_daily
from .multisite import INDEX, load_trained, predict_site, train_multisite, training_targets
from .predictions import Prediction
from .run_folder import RunFolderError
from .scoring import score


def finished_models(run_dir: str | Path) -> dict:
    """The index of a finished multi-site run folder (``models/index.json``).

    Raises
    ------
    RunFolderError
        The folder is not a dam experiment run, holds no multi-site networks, or its run has not finished.
    """
    from .run_folder import read_manifest, resolve

    folder = resolve(run_dir)
    manifest = read_manifest(folder)
    if manifest is None or manifest.get("kind") != "experiment":
        raise RunFolderError(f"{folder} is not a dam experiment run folder (no dam_run.json of kind experiment)")
    path = folder / "models" / INDEX
    if not path.is_file():
        raise RunFolderError(
            f"{folder}: the run has not finished (no models/{INDEX}); run its `dam experiment` to the end first"
        )
    index = json.loads(path.read_text())
    if not index.get("models"):
        raise RunFolderError(f"{folder} holds no multi-site networks (models: {', '.join(MULTISITE_MODELS)})")
    return index


def predict_run(
    run_dir: str | Path,
    sites: list[str] | tuple[str, ...],
    *,
    models: list[str] | None = None,
    start: str | None = None,
    end: str | None = None,
    finetune: int = 0,
    progress: bool = False,
) -> tuple[pd.DataFrame, dict[str, tuple[SiteData, dict[str, Prediction]]]]:
    """Predict and score soil moisture at ``sites`` (names, folders or patterns) over their records (or
    ``start`` .. ``end``) with the multi-site networks of a finished run folder.

    Each site gets the networks that never saw it: under ``leave_sites_out`` a site of the run gets its own
    fold's network, any other site the mean of all folds' networks; under ``chronological`` a site of the run
    was seen on its training days (``seen`` in the table; so was a site held out to choose a network's epoch,
    ``network.validation_sites``). With ``finetune`` > 0 every network is also trained that many more epochs on
    the site's training days (chronological split of the run's fractions), as model ``<name>+finetune`` (not at a
    site without a training observation). Scores: over ``all`` days and over the ``test`` days (the last fraction).

    Returns
    -------
    The metrics table (site, model, days, depth_m, reliable, seen, metrics) and, per site, its data and
    predictions.
    """
    folder = Path(run_dir).expanduser().resolve()
    index = finished_models(folder)
    chosen = list(index["models"]) if not models else list(models)
    unknown = [m for m in chosen if m not in index["models"]]
    if unknown:
        raise RunFolderError(f"{folder} has no trained {unknown}; it has {list(index['models'])}")
    nets = {m: [(e, *load_trained(folder / "models" / m, f"fold{e['fold']}")) for e in index["models"][m]]
            for m in chosen}  # fmt: skip
    spec0 = next(iter(nets.values()))[0][2]
    # networks that correct the physics need the physics run at the site (spun up as in the run)
    needs_physics = any(spec.get("physics") for entries in nets.values() for _, _, spec in entries)
    rows, out = [], {}
    for entry in expand_sites(tuple(sites)):
        cycles = spec0.get("spinup_cycles", 1) if needs_physics else 0
        data = prepare_site(entry, spinup_cycles=cycles, train_frac=spec0["train_frac"], val_frac=spec0["val_frac"],
                            start=start, end=end)  # fmt: skip
        physics = physics_daily(data)[0] if needs_physics else None

        def phys(spec: dict, physics=physics) -> Prediction | None:
            return physics if spec.get("physics") else None

        tune = finetune and bool(np.isfinite(training_targets(data)[data.train]).any())
        if finetune and not tune:
            print(f"[{data.name}] no soil moisture observation on its training days: not fine-tuned", flush=True)
        preds: dict[str, Prediction] = {}
        for m, entries in nets.items():
            own = [x for x in entries if data.name in x[0]["test_sites"]]
            if index["split"] == "leave_sites_out" and own:
                entries = own
            seen = any(data.name in e["train_sites"] + e.get("validation_sites", []) for e, _, _ in entries)
            daily = np.mean([predict_site(net, data, phys(spec)) for _, net, spec in entries], axis=0)
            info = {"folds": [e["fold"] for e, _, _ in entries], "seen": seen}
            preds[m] = Prediction(m, daily, 0.0, info)
            if tune:
                tuned = [(train_multisite(spec["kind"], [data], NetworkConfig(**spec["network"]), seed=spec["seed"],
                                          init=net, level=net.level, epochs=finetune, progress=progress,
                                          physics=None if phys(spec) is None else {data.name: physics})[0], spec)
                         for _, net, spec in entries]  # fmt: skip
                daily = np.mean([predict_site(net, data, phys(spec)) for net, spec in tuned], axis=0)
                preds[f"{m}+finetune"] = Prediction(f"{m}+finetune", daily, 0.0, {**info, "finetune_epochs": finetune})
        for days, span in (("all", slice(0, len(data.days))), ("test", data.test)):
            scored = score(dataclasses.replace(data, test=span), preds)
            scored.insert(2, "days", days)
            scored["seen"] = scored["model"].map({m: p.info["seen"] for m, p in preds.items()})
            if days == "all":
                scored = scored[~scored["model"].str.endswith("+finetune")]  # trained on part of these days
            rows.append(scored)
        out[data.name] = (data, preds)
    return pd.concat(rows, ignore_index=True), out
