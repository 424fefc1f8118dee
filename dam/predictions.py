"""Predictions of the experiment's models: daily soil moisture at a site's sensors, saved as netCDF in the run
folder with the fingerprint of the inputs they were made from (so a stage whose inputs changed is run again)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import xarray as xr

from . import io_safety
from .experiment_data import SiteData
from .run_folder import fingerprint, inside

#: Changes of dam that changed what a model computes from the same configuration and data (absent: none since run
#: folders began). A model's revision is part of its stages' fingerprints, so a run folder resumed by a newer dam
#: computes the model again instead of reading back what the older code made; the configuration alone would not
#: tell when a default changed (defaults of new keys are left out of it, ``ExperimentConfig.to_dict``). Bump a
#: model's entry, with a comment, whenever a change alters its results.
MODEL_REVISIONS: dict[str, int] = {
    # 1: the network's own step size, calibration.dpl_learning_rate 0.003 (was the calibration's 0.1);
    # 2: each site's loss the unbiased RMSE, calibration.dpl_metric: ubrmse (was the RMSE)
    "physics_dpl": 2,
}


def stage_key(model: str, spec: dict, inputs: dict[str, str]) -> str:
    """The fingerprint of one model's stage: ``spec`` (what it is trained and scored on), the stage keys or content
    hashes it builds on (``inputs``) and the model's revision (:data:`MODEL_REVISIONS`; none for a model at
    revision 0, so its older run folders stay valid)."""
    revision = MODEL_REVISIONS.get(model, 0)
    return fingerprint({"model": model, **spec, **({"revision": revision} if revision else {})}, inputs)


@dataclasses.dataclass
class Prediction:
    """Daily soil moisture at the sensors (D, S), m3 m-3, as each sensor sees it (liquid or total water, see
    :attr:`SiteData.sensor_liquid`), plus optional extras for plausibility checks."""

    model: str
    daily: np.ndarray
    seconds: float
    info: dict = dataclasses.field(default_factory=dict)
    liquid: np.ndarray | None = None  # daily liquid moisture at the sensors (physics-based models)
    total: np.ndarray | None = None  # daily total (liquid + ice) moisture at the sensors (physics-based models)
    layer_liquid: np.ndarray | None = None  # (D, N) daily liquid moisture of every model layer (physics models)
    layer_total: np.ndarray | None = None  # (D, N) daily total moisture of every model layer (physics models)


class UpstreamFailedError(RuntimeError):
    """A stage builds on the prediction of a stage that failed at the site (``info["failed"]``)."""


_LIQUID = {"standard_name": "volume_fraction_of_liquid_water_in_soil", "units": "m3 m-3"}
_TOTAL = {"standard_name": "volume_fraction_of_condensed_water_in_soil", "units": "m3 m-3"}
_EXTRAS = {  # Prediction field -> netCDF variable, its second dimension and attributes
    "liquid": ("soil_liquid_water", "sm_depth", _LIQUID),
    "total": ("total_soil_moisture", "sm_depth", _TOTAL),
    "layer_liquid": ("layer_soil_liquid_water", "layer", {**_LIQUID, "comment": "every model layer"}),
    "layer_total": ("layer_total_soil_moisture", "layer", {**_TOTAL, "comment": "every model layer"}),
}


def prediction_path(run_dir: Path, site: str, model: str) -> Path:
    return inside(run_dir, "predictions", site, f"{model}.nc")


def save_prediction(run_dir: Path, data: SiteData, pred: Prediction, stage_fingerprint: str = "") -> None:
    """Write a prediction (atomically) with the fingerprint of the inputs it was made from."""
    path = prediction_path(run_dir, data.name, pred.model)
    seen = data.describe_seen()
    ds = xr.Dataset(
        {"soil_moisture": (("time", "sm_depth"), pred.daily, {
            "units": "m3 m-3", "long_name": f"daily mean soil moisture predicted by {pred.model}",
            "comment": f"as the site's sensors see it: {seen}"})},
        coords={"time": data.days.values, "sm_depth": ("sm_depth", data.sensor_depths_m, {"units": "m",
                                                                                        "positive": "down"})},
        attrs={"model": pred.model, "site": data.name, "seconds": pred.seconds,
               "info": json.dumps(pred.info, default=float), "Conventions": "CF-1.10",
               "stage_fingerprint": stage_fingerprint},
    )  # fmt: skip
    for field, (var, dim, attrs) in _EXTRAS.items():
        if getattr(pred, field) is not None:
            ds[var] = (("time", dim), getattr(pred, field), attrs)
    if "layer" in ds.dims:
        bottoms = -np.asarray(data.setup.grid.zsoil, float)
        ds = ds.assign_coords(layer=("layer", bottoms, {"long_name": "depth of the layer's bottom", "units": "m",
                                                         "positive": "down"}))  # fmt: skip
    io_safety.write_netcdf(ds, path)


def load_prediction(run_dir: Path, data: SiteData, model: str, stage_fingerprint: str = "") -> Prediction | None:
    """The saved prediction of ``model`` at the site, or None where there is none or it was made from other
    inputs (its ``stage_fingerprint`` differs: e.g. the site's forcing changed since)."""
    path = prediction_path(run_dir, data.name, model)
    if not path.is_file():
        return None
    with xr.open_dataset(path) as ds:
        if ds.attrs.get("stage_fingerprint", "") != stage_fingerprint:
            print(f"[{data.name}] {model}: inputs changed since the saved prediction; running it again", flush=True)
            return None
        extras = {f: ds[var].values.copy() for f, (var, _, _) in _EXTRAS.items() if var in ds}
        return Prediction(model, ds["soil_moisture"].values.copy(), float(ds.attrs["seconds"]),
                          json.loads(ds.attrs["info"]), **extras)  # fmt: skip
