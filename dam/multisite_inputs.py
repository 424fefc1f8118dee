"""What the multi-site networks read and predict at a site: the standard soil column, the static site attributes,
the inputs (daily forcing, optionally the physics run on the standard column) and the observed targets."""

from __future__ import annotations

import numpy as np

from .experiment_data import FEATURES, SiteData
from .predictions import Prediction

#: Bottoms of the standard soil column the multi-site networks predict (m): the Noah-MP default layers.
LAYERS = (0.1, 0.4, 1.0, 2.0)
#: Static site attributes, in this order (units in the names).
ATTRIBUTES = (
    "latitude_deg", "elevation_m", "smcmax_m3m3", "smcwlt_m3m3", "bexp", "log10_dksat_ms", "lai_max",
    "canopy_top_m", "veg_frac_max", "t_air_mean_k", "t_air_std_k", "precip_mm_per_day", "sw_down_mean_wm2",
    "q_air_mean_kgkg",
)  # fmt: skip
SCALE_FLOOR = 0.01  # m3 m-3 added to each sensor's standard deviation in the loss (a flat series gets no huge weight)


def site_attributes(data: SiteData) -> np.ndarray:
    """The :data:`ATTRIBUTES` of a site (n_attr,): where it is, the top soil layer's and the vegetation's table
    parameters (from its soil and vegetation classes) and the means of its daily forcing over the record."""
    p, meta = data.setup.params, data.site.meta
    soil = {k: float(np.ravel(np.asarray(getattr(p.soil, k)))[0]) for k in ("smcmax", "smcwlt", "bexp", "dksat")}
    f = {name: data.forcing[:, i] for i, name in enumerate(FEATURES)}
    values = [
        meta.latitude, meta.elevation_m, soil["smcmax"], soil["smcwlt"], soil["bexp"], np.log10(soil["dksat"]),
        float(np.max(p.phenology.lai_monthly)), float(p.phenology.canopy_top_m), float(p.phenology.veg_frac_max),
        np.nanmean(f["T_air"]), np.nanstd(f["T_air"]), np.nanmean(f["precip"]), np.nanmean(f["sw_down"]),
        np.nanmean(f["q_air"]),
    ]  # fmt: skip
    return np.asarray(values, float)


def standard_layers(values: np.ndarray, bottoms_m) -> np.ndarray:
    """Values of a column's layers (..., N), layer bottoms ``bottoms_m`` (N,) in m, as thickness-weighted means over
    each :data:`LAYERS` layer (..., len(LAYERS)); a standard layer below the column takes the column's deepest."""
    b = np.asarray(bottoms_m, float)
    std = np.asarray(LAYERS)
    tops, std_tops = np.concatenate([[0.0], b[:-1]]), np.concatenate([[0.0], std[:-1]])
    overlap = np.minimum(b[None, :], std[:, None]) - np.maximum(tops[None, :], std_tops[:, None])
    overlap = np.clip(overlap, 0.0, None)
    overlap[overlap.sum(1) == 0, -1] = 1.0
    return np.asarray(values) @ (overlap / overlap.sum(1, keepdims=True)).T


def site_inputs(data: SiteData, physics: Prediction | None = None) -> tuple[np.ndarray, np.ndarray]:
    """A site's network inputs (D, F) and the base its predictions add to at the sensors (D, S): the daily
    forcing and zero, or with the ``physics`` run (physics_default's prediction with its layer series) also the
    run's total and liquid moisture on the standard column as inputs and its moisture at the sensors as base.
    Missing inputs stay NaN (the normalisers ignore them; the networks read them as 0)."""
    if physics is None:
        return data.forcing, np.zeros(data.observed.shape)
    if physics.layer_total is None or physics.layer_liquid is None:
        raise ValueError(f"{data.name}: the physics run has no layer series (rerun physics_default)")
    bottoms = -np.asarray(data.setup.grid.zsoil, float)
    layers = [standard_layers(v, bottoms) for v in (physics.layer_total, physics.layer_liquid)]
    return np.concatenate([data.forcing, *layers], axis=-1), np.nan_to_num(physics.daily)


def layer_weights(data: SiteData) -> np.ndarray:
    """(S, len(LAYERS)) how the site's soil moisture sensors read the standard column (:mod:`dam.sensors`)."""
    return data.site.sensor_mapping("soil_moisture", LAYERS, data.sensor_depths_m).weights


def training_targets(data: SiteData) -> np.ndarray:
    """Observed daily soil moisture (D, S) with the series the site flags as unreliable removed (NaN)."""
    return np.where(data.reliable[None, :], data.observed, np.nan)
