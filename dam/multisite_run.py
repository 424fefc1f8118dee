"""The run of a multi-site ``dam experiment`` (:class:`MultiSiteExperiment`): per-site physics stages, the
multi-site networks of every fold (:mod:`dam.multisite`), dPL regionalisation (:mod:`dam.multisite_dpl`), scores,
report and the trained networks' index that ``dam predict`` reads. The splits and models are described in
:mod:`dam.multisite`."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd
import yaml

from . import io_safety
from . import multisite as ms  # through the module: tests replace ms.train_multisite
from .calibration import NoObservationsError
from .experiment import Experiment, _check_resume, _core
from .experiment_config import (
    CONSTRAINED_MULTISITE_MODELS,
    DPL_MODELS,
    MULTISITE_MODELS,
    PHYSICS_GUIDED_MODELS,
    ExperimentConfig,
    expand_sites,
)
from .experiment_data import FEATURES, SiteData, prepare_site
from .experiment_stages import STAGES
from .memory import peak_memory_gib, release_memory
from .multisite_dpl import dpl_folds
from .multisite_inputs import ATTRIBUTES, LAYERS
from .physics.guards import PlausibilityError
from .physics_in_ai import ice_free_days
from .predictions import Prediction, UpstreamFailedError, load_prediction, save_prediction, stage_key
from .run_folder import (
    RunFolderError,
    RunLock,
    content_hash,
    fingerprint,
    inside,
    open_run_folder,
    safe_name,
    write_manifest,
)
from .scoring import plausibility, score, summary, write_tables

#: What one site's stage may fail with without ending a many-site run (reported, scored as missing, retried on resume).
SITE_FAILURES = (PlausibilityError, NoObservationsError, UpstreamFailedError)

#: Per-site stages whose programs depend only on the options and the run length (shared by a group's sites).
STATION_MODELS = ("physics_default", "physics_calibrated")


def _mesh():
    """A 1-D device mesh when there is more than one device (members sharded over it), else None."""
    if jax.device_count() < 2:
        return None
    from .sharding import column_mesh

    return column_mesh()


class MultiSiteExperiment:
    """Runs a multi-site ``dam experiment`` into ``config.output_dir`` (see the module docs). The run folder
    follows :class:`dam.experiment.Experiment`'s rules (manifest, lock, resume, fingerprinted stages)."""

    def __init__(self, config: ExperimentConfig):
        self.config = config.replace(sites=expand_sites(config.sites))
        self.run_dir = Path(config.output_dir).expanduser().resolve()
        self.per_site = Experiment(self.config)  # runs the per-site stages (same methods, same run folder)
        self.failures: list[dict] = []  # per-site stages that failed (SITE_FAILURES)
        self.ensembles: dict[str, tuple[np.ndarray, np.ndarray]] = {}  # site -> pretraining ensemble
        self.pretrained: dict[tuple, ms.MultiSiteModel] = {}  # (kind, training sites) -> pretrained network

    def run(self) -> pd.DataFrame:
        cfg = self.config
        self.run_dir, _ = open_run_folder(self.run_dir, "experiment", legacy_marker="config.yaml")
        self.per_site.run_dir = self.run_dir
        with RunLock(self.run_dir):
            _check_resume(self.run_dir / "config.yaml", cfg)
            index = self.run_dir / "models" / ms.INDEX
            if index.is_file():
                index.unlink()  # the run is not finished until its models are written again
            io_safety.write_text(self.run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            write_manifest(self.run_dir, "experiment", fingerprint(_core(cfg)), cfg.to_dict(), {})
            return self._run()

    def _run(self) -> pd.DataFrame:
        cfg = self.config
        t_start = time.perf_counter()
        sites: dict[str, SiteData] = {}
        physics = any(m not in MULTISITE_MODELS for m in cfg.models)
        for entry in cfg.sites:  # the networks need no spun-up physics state: skip the spin-up without physics
            data = prepare_site(entry, spinup_cycles=cfg.spinup_cycles if physics else 0, train_frac=cfg.train_frac,
                                val_frac=cfg.val_frac)  # fmt: skip
            safe_name(data.name, f"site name of {entry}")
            if data.name in sites:
                raise RunFolderError(f"two sites are named {data.name!r} ({entry}): site names must differ")
            sites[data.name] = data
        release_memory()  # the spin-ups' programs
        peaks = {"sites": peak_memory_gib()}  # after each stage: the stage that raised the run's peak
        names = sorted(sites)
        if cfg.split == "leave_sites_out":
            fold_of = ms.assign_folds(names, cfg.folds, cfg.seed)
        else:
            fold_of = dict.fromkeys(names, 0)
        keys = {n: fingerprint(_core(cfg), {"site": content_hash(d.site.path) if d.site.path else n})
                for n, d in sites.items()}  # fmt: skip
        preds: dict[str, dict[str, Prediction]] = {n: {} for n in names}
        self._chain = {n: [keys[n]] for n in names}  # per-site stage keys, as dam.experiment chains them
        timings: dict[str, float] = {}
        index: dict[str, Any] = {"split": cfg.split, "folds": {}, "models": {}}
        for model in cfg.models:
            if model in MULTISITE_MODELS:
                index["models"][model] = self._multisite_stage(model, sites, fold_of, keys, preds, timings)
            elif model in DPL_MODELS:
                dpl_folds(self.run_dir, cfg, sites, fold_of, keys, preds, timings, self.failures, self.per_site.cache)
                release_memory()  # after the last fold: the folds share the gradient programs of equal windows
            else:
                self._per_site_stage(model, sites, names, keys, preds, timings)
            peaks[model] = peak_memory_gib()
        table = pd.concat([score(sites[n], preds[n]).assign(fold=fold_of[n]) for n in names], ignore_index=True)
        plausible = _plausibility(sites, preds)
        write_tables(self.run_dir, table, plausible)
        from .multisite_report import pooled_metrics, report

        pooled = pooled_metrics(sites, preds)
        io_safety.write_csv(pooled, self.run_dir / "pooled.csv")
        folds = pd.DataFrame({"site": names, "fold": [fold_of[n] for n in names]})
        io_safety.write_csv(folds, self.run_dir / "folds.csv")
        from .plots import plot_skill_by_site

        plot_skill_by_site(self.run_dir / "figures" / "skill_by_site.png", summary(table), tuple(cfg.models))
        seconds = time.perf_counter() - t_start
        text = report(cfg, table, pooled, folds, seconds, self.failures, plausible, peaks)
        io_safety.write_text(self.run_dir / "multisite.md", text)
        io_safety.write_text(self.run_dir / "timings.json",
                             json.dumps({"total_seconds": seconds, "stages": timings, "peak_memory_gib": peaks},
                                        indent=1))  # fmt: skip
        index["folds"] = {n: fold_of[n] for n in names}
        index["finished"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        io_safety.write_text(self.run_dir / "models" / ms.INDEX, json.dumps(index, indent=1))
        return table

    def _per_site_stage(self, model: str, sites: dict[str, SiteData], names: list[str], keys: dict, preds: dict,
                        timings: dict) -> None:  # fmt: skip
        """A per-site stage at every site. The physics' programs are decided by the options (time step, snow
        layers) and the run length, so the sites are grouped by options, share them within a group, and they are
        cleared after each group; a single-site network's are the site's own, cleared after each site (XLA:CPU runs
        out of memory maps with too many alive)."""
        groups: dict = {}
        for n in names:
            groups.setdefault(sites[n].setup.options, []).append(n)
        for group in groups.values():
            for n in group:
                self._site_stage(model, sites[n], keys[n], preds[n], timings)
                if model not in STATION_MODELS:
                    release_memory()
            if model in STATION_MODELS:
                release_memory()

    def _site_stage(self, model: str, data: SiteData, site_key: str, preds: dict, timings: dict) -> None:
        """A per-site stage, computed by :class:`dam.experiment.Experiment` (or read back)."""
        exp = self.per_site
        exp.cache[(data.name, "key")] = site_key
        key = stage_key(model, {}, {"after": ",".join(self._chain[data.name])})
        self._chain[data.name].append(key)
        pred = load_prediction(self.run_dir, data, model, key)
        if pred is not None and model == "physics_default" and pred.layer_total is None:
            pred = None  # saved before predictions kept the layer series the physics-guided networks read
        if pred is None:
            t0 = time.perf_counter()
            exp._key = key
            try:
                pred = STAGES[model](exp, data, preds)
            except SITE_FAILURES as err:
                self.failures.append({"site": data.name, "model": model, "error": str(err)})
                print(f"[{data.name}] {model}: FAILED ({err}); scored as missing, retried when the run is resumed")
                pred = Prediction(model, np.full(data.observed.shape, np.nan), 0.0, {"failed": str(err)})
                preds[model] = pred
                return
            pred.seconds = time.perf_counter() - t0
            save_prediction(self.run_dir, data, pred, key)
            print(f"[{data.name}] {model}: computed in {pred.seconds:.1f} s", flush=True)
        preds[model] = pred
        timings[f"{data.name}/{model}"] = pred.seconds

    def _multisite_stage(self, model: str, sites: dict[str, SiteData], fold_of: dict[str, int], keys: dict,
                         preds: dict, timings: dict) -> list[dict]:  # fmt: skip
        """Train the network of every fold (or read its predictions back) and predict its test sites."""
        cfg = self.config
        kind = model.removesuffix("_multisite")
        pretrain = kind.endswith(("_ensemble", "_constrained"))  # the constrained one: as hlstm_constrained
        kind = kind.removesuffix("_ensemble").removesuffix("_constrained")
        physics, usable = None, set(fold_of)
        if model in PHYSICS_GUIDED_MODELS:
            kind = kind.removesuffix("_physics")
            physics = {n: preds[n]["physics_default"] for n in fold_of}  # listed before (checked by the config)
            usable = {n for n, p in physics.items() if p.layer_total is not None}  # not where the physics failed
        level = cfg.multisite_level if physics is not None else "learned"
        constrained = model in CONSTRAINED_MULTISITE_MODELS
        # physics_default is listed before the constrained model (checked by the config)
        ice_free = {n: _ice_free(sites[n], preds[n]) for n in fold_of} if constrained else None
        saved = []
        for fold in sorted(set(fold_of.values())):
            test = sorted(n for n, f in fold_of.items() if f == fold)
            train = sorted(n for n, f in fold_of.items() if f != fold) if cfg.split == "leave_sites_out" else test
            train = [n for n in train if n in usable]
            failed = [n for n in test if n not in usable]  # in the key: retried once their physics runs
            held = []
            if k := cfg.network.validation_sites:  # only under leave_sites_out (checked by the config)
                observed = [np.isfinite(ms.training_targets(sites[n])[sites[n].fit_days]).any() for n in train]
                held = [train[i] for i in ms.held_out(len(train), k, cfg.seed, "network.validation_sites", observed)]
            train = [n for n in train if n not in held]
            key = stage_key(model, {"train": train, "test": test, **({"failed": failed} if failed else {}),
                                    **({"validation": held} if held else {})},
                             {n: keys[n] for n in (*train, *held, *test)})  # fmt: skip
            tag = f"fold{fold}"
            folder = inside(self.run_dir, "models", model)
            got = {n: load_prediction(self.run_dir, sites[n], model, key) for n in test}
            spec = folder / f"{tag}.json"
            saved_key = json.loads(spec.read_text()).get("key") if spec.is_file() else None
            if all(p is not None for p in got.values()) and saved_key == key and (folder / f"{tag}.eqx").is_file():
                print(f"[{model} {tag}] read back ({len(test)} test sites)", flush=True)
            else:
                t0 = time.perf_counter()
                checkpoints = inside(self.run_dir, "checkpoints", "multisite", model, tag, key)
                init = None
                if pretrain:  # each site's ensemble runs once per run, each fold's pretraining once
                    from .multisite_pretrain import pretrain_fold

                    memo = (kind, tuple(train), physics is not None, level)
                    if memo not in self.pretrained:
                        self.pretrained[memo] = pretrain_fold(
                            kind, [sites[n] for n in train], self.ensembles, cfg, checkpoints / "pretrain",
                            mesh=_mesh(), store=inside(self.run_dir, "ensembles"), keys=keys, physics=physics,
                            level=level,
                        )  # fmt: skip
                    init = self.pretrained[memo]
                net, history = ms.train_multisite(
                    kind, [sites[n] for n in train], cfg.network, seed=cfg.seed, progress=cfg.progress,
                    checkpoint_dir=checkpoints / "train", mesh=_mesh(), physics=physics, init=init, level=level,
                    constraints=cfg.constraints if constrained else None, ice_free=ice_free,
                    validation=[sites[n] for n in held],
                )  # fmt: skip
                seconds = time.perf_counter() - t0
                info = {"fold": fold, "train_sites": train, "validation_sites": held,
                        "best_epoch": int(history["best_epoch"]),
                        "train_loss": [float(v) for v in history["train_loss"]],
                        "val_loss": [float(v) for v in [history["initial_val"], *history["val_loss"]]]}  # fmt: skip
                ms.save_trained(folder, tag, net, {"kind": kind, "physics": physics is not None, "level": level,
                                                "seed": cfg.seed,
                                                "spinup_cycles": cfg.spinup_cycles,
                                                "network": cfg.network.model_dump(mode="json"),
                                                "attributes": list(ATTRIBUTES), "layers_m": list(LAYERS),
                                                "features": list(FEATURES), "train_sites": train,
                                                "test_sites": test, "train_frac": cfg.train_frac,
                                                "val_frac": cfg.val_frac, "key": key, **info,
                                                **({"constraints": cfg.constraints.model_dump(mode="json")}
                                                   if constrained else {})})  # fmt: skip
                for n in test:
                    if n in failed:
                        daily = np.full(sites[n].observed.shape, np.nan)
                    else:
                        daily = ms.predict_site(net, sites[n], None if physics is None else physics[n])
                    pred = Prediction(model, daily, seconds / len(test), info)
                    save_prediction(self.run_dir, sites[n], pred, key)
                    got[n] = pred
                release_memory()
                print(f"[{model} {tag}] trained on {len(train)} sites in {seconds:.1f} s (best epoch "
                      f"{info['best_epoch']})", flush=True)  # fmt: skip
            for n in test:
                preds[n][model] = got[n]
                timings[f"{n}/{model}"] = got[n].seconds
            saved.append({"fold": fold, "file": f"{model}/{tag}.eqx", "train_sites": train, "validation_sites": held,
                          "test_sites": test})  # fmt: skip
        return saved


def _ice_free(data: SiteData, site_preds: dict[str, Prediction]) -> np.ndarray:
    """(D,) days the site's water balance is checked: those its physics_default run holds no ice at the top sensor
    (:func:`dam.physics_in_ai.ice_free_days`; none where that run is absent or stopped and the sensor sees liquid)."""
    base = site_preds.get("physics_default")
    return ice_free_days(data, getattr(base, "total", None), getattr(base, "liquid", None))


def _plausibility(sites: dict[str, SiteData], preds: dict[str, dict[str, Prediction]]) -> pd.DataFrame | None:
    """Physical plausibility of the multi-site networks on each site's test days (:func:`dam.scoring.plausibility`;
    the water balance counted on the :func:`_ice_free` days)."""
    rows = []
    for n, data in sites.items():
        ice = _ice_free(data, preds[n])
        precip = data.forcing[:, FEATURES.index("precip")]
        rows += [{"site": n, "model": m, "scenario": "test", **plausibility(data, p.daily, precip, ice)}
                 for m, p in preds[n].items() if m in MULTISITE_MODELS]  # fmt: skip
    return pd.DataFrame(rows) if rows else None


def run_multisite(config: ExperimentConfig) -> pd.DataFrame:
    """Run a multi-site experiment (:class:`MultiSiteExperiment`); returns the per-sensor metrics table."""
    return MultiSiteExperiment(config).run()
