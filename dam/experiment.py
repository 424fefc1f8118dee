"""``dam experiment CONFIG.yaml``: the DAM paradigm on station data, end to end.

For every site of the configuration: the physics model with default table parameters, the physics model
calibrated by gradients (and a Latin-hypercube baseline of the same budget), a plain LSTM, a hierarchical LSTM
with attention pretrained on a perturbed-parameter ensemble of the physics and fine-tuned on observations
(without attention as an ablation, and with physics constraints in the loss, optionally over a sweep of their
weights), a physics-guided hierarchical LSTM that corrects the physics (with and without the constraints), and
the AI-in-physics hybrid where a network replaces the soil water transport inside the model. Every model is
scored on the last fifth of the record (Pearson r, bias, RMSE, ubRMSE, NSE, KGE per sensor) against the water
the site's sensors see (liquid or total), and every network's physical plausibility is checked on the test
days, as observed and in a drier scenario.

The run folder holds the resolved configuration, orbax checkpoints of every training, netCDF predictions, the
metrics table (CSV and Markdown) and figures. A stage whose result exists is not redone, and trainings resume
from their checkpoints, so a killed experiment started again continues where it stopped. Same seed, same
numbers.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
import yaml

from . import io_safety
from .experiment_config import (
    MODELS,
    CalibrationConfig,
    ConstraintConfig,
    ExperimentConfig,
    HybridConfig,
    NetworkConfig,
    PretrainConfig,
    load_config,
)
from .experiment_data import SiteData, prepare_site
from .experiment_stages import STAGES
from .memory import release_memory
from .plots import plot_metric_bars, plot_site
from .predictions import Prediction, load_prediction, prediction_path, save_prediction, stage_key
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
from .scoring import score, summary, write_tables

__all__ = [  # the configuration lives in dam.experiment_config; re-exported here
    "MODELS", "CalibrationConfig", "ConstraintConfig", "ExperimentConfig", "HybridConfig", "NetworkConfig",
    "PretrainConfig", "load_config", "run_experiment",
]  # fmt: skip


# ------------------------------------------------------------------------------------------ the run
RESUME_MAY_CHANGE = ("name", "output_dir", "sites", "models", "progress")  # keys that leave finished stages valid


def _check_resume(path: Path, config: ExperimentConfig) -> None:
    """Refuse to continue a run folder made with another configuration: its finished stages would be mixed with
    stages of this one. Adding sites or models (or switching progress bars, or moving the folder) is fine."""
    if not path.is_file():
        return
    old, new = yaml.safe_load(path.read_text()) or {}, config.to_dict()
    changed = sorted(k for k in set(old) | set(new) if k not in RESUME_MAY_CHANGE and old.get(k) != new.get(k))
    if changed:
        raise RunFolderError(
            f"{path.parent} holds a run with a different configuration ({', '.join(changed)} changed): choose "
            "another output_dir, or delete the folder to start again"
        )


def _core(config: ExperimentConfig) -> dict:
    """The configuration that finished stages depend on (what a resume may not change)."""
    return {k: v for k, v in config.to_dict().items() if k not in RESUME_MAY_CHANGE}


class Experiment:
    """Runs the configured models at every site into ``config.output_dir`` (see the module docs).

    The run folder (:mod:`dam.run_folder`) is resolved, locked while the experiment runs, refused if it holds
    anything but an experiment of the same configuration, and written only after the configuration validated.
    Every stage (site x model) is keyed by the fingerprint of its inputs: the configuration, the content of the
    site's files and the stages before it; a saved prediction or checkpoint of other inputs is not reused.
    """

    def __init__(self, config: ExperimentConfig):
        self.config = config
        self.run_dir = Path(config.output_dir).expanduser().resolve()
        self.cache: dict = {}  # shared by the stages of a run (ensembles, pretrained networks, ...)
        self._key: str = ""  # fingerprint of the stage being computed (its checkpoints' folder)

    def checkpoint_dir(self, site: str, model: str, key: str | None = None) -> Path:
        """Checkpoints of a training, in a folder keyed by the fingerprint of its inputs."""
        return inside(self.run_dir, "checkpoints", site, model, key or self._key)

    def run(self) -> pd.DataFrame:
        cfg = self.config
        self.run_dir, _ = open_run_folder(self.run_dir, "experiment", legacy_marker="config.yaml")
        with RunLock(self.run_dir):
            _check_resume(self.run_dir / "config.yaml", cfg)
            io_safety.write_text(self.run_dir / "config.yaml", yaml.safe_dump(cfg.to_dict(), sort_keys=False))
            write_manifest(self.run_dir, "experiment", fingerprint(_core(cfg)), cfg.to_dict(), {})
            return self._run()

    def _site_key(self, data: SiteData) -> str:
        """Fingerprint of the configuration and the content of the site's files."""
        folder = data.site.path
        files = {"site": content_hash(folder) if folder is not None else data.name}
        return fingerprint(_core(self.config), files)

    def _run(self) -> pd.DataFrame:
        cfg = self.config
        t_start = time.perf_counter()
        tables, timings, plausible, sweep = [], {}, [], []
        for name in cfg.sites:
            data = prepare_site(name, spinup_cycles=cfg.spinup_cycles, train_frac=cfg.train_frac,
                                val_frac=cfg.val_frac)  # fmt: skip
            where = f"site name in {data.site.path / 'site.yaml'}" if data.site.path else "site name"
            safe_name(data.name, where)  # it names folders of the run: nothing may escape the run folder
            preds: dict[str, Prediction] = {}
            site_key = self._site_key(data)
            self.cache[(data.name, "key")] = site_key
            keys: list[str] = [site_key]
            for model in cfg.models:
                key = stage_key(model, {}, {"after": ",".join(keys)})
                keys.append(key)
                pred = load_prediction(self.run_dir, data, model, key)
                if pred is None:
                    t0 = time.perf_counter()
                    self._key = key
                    pred = STAGES[model](self, data, preds)
                    pred.seconds = time.perf_counter() - t0
                    save_prediction(self.run_dir, data, pred, key)
                    release_memory()  # compiled code and compile transients of finished stages
                    status = f"computed in {pred.seconds:.1f} s"
                else:
                    path = prediction_path(self.run_dir, data.name, model)
                    status = f"read back from {path} (computed earlier in {pred.seconds:.1f} s)"
                preds[model] = pred
                timings[f"{data.name}/{model}"] = pred.seconds
                print(f"[{data.name}] {model}: {status}", flush=True)
            tables.append(score(data, preds))
            plausible += [{"site": data.name, "model": m, "scenario": sc, **v}
                          for m, p in preds.items() for sc, v in p.info.items() if sc.startswith("test")]  # fmt: skip
            if "hlstm_constrained" in preds:
                sweep += [{"site": data.name, **row} for row in preds["hlstm_constrained"].info.get("sweep", [])]
            plot_site(self.run_dir / "figures", data, preds)
        table = pd.concat(tables, ignore_index=True)
        write_tables(self.run_dir, table, pd.DataFrame(plausible), pd.DataFrame(sweep))
        plot_metric_bars(self.run_dir / "figures" / "metrics.png", summary(table), MODELS)
        io_safety.write_text(
            self.run_dir / "timings.json",
            json.dumps({"total_seconds": time.perf_counter() - t_start, "stages": timings}, indent=1),
        )
        return table


def run_experiment(config: ExperimentConfig) -> pd.DataFrame:
    """Run the experiment: across sites (:mod:`dam.multisite`) when it has multi-site models or splits over
    sites, else site by site (:class:`Experiment`); glob patterns in ``sites`` are expanded first."""
    from .experiment_config import expand_sites
    from .experiment_data import load_experiment_site

    for name in expand_sites(config.sites):  # a broken site folder stops the run before its run folder is created
        load_experiment_site(name)
    if config.multisite:
        from .multisite_run import run_multisite

        return run_multisite(config)
    return Experiment(config.replace(sites=expand_sites(config.sites))).run()
