"""Pretraining of a multi-site network on perturbed-parameter ensembles of the physics at its training sites (the
models ``hlstm_ensemble_multisite``, ``hlstm_constrained_multisite`` and, physics-guided,
``hlstm_physics_ensemble_multisite``; NeuralHydrology/δ-style "pretrain on simulations, fine-tune on observations").

Each training site runs ``pretrain.members`` members of :func:`dam.coupling.ensemble.perturbed_ensemble` (member 0
the default parameters, the others Latin-hypercube factors on porosity, b, conductivity and the rest of
:data:`~dam.coupling.ensemble.DEFAULT_FACTOR_RANGES`). A member is a pseudo-site: the site's forcing, its
attributes with the member's top-layer porosity, b and log10 conductivity in place of the table values, and as
target the member's daily moisture on the standard column (:data:`dam.multisite.LAYERS`; liquid water where all
the site's sensors see liquid water, else total). So the network learns how the physics' moisture responds to the
soil attributes across climates before it sees any observation; it is then trained on the observations of the
same sites (:func:`dam.multisite.train_multisite` with ``init``), keeping the pretraining's normalisers. Only
training days of the training sites are used, as targets and for validation.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import xarray as xr

from . import io_safety
from .experiment_config import NetworkConfig
from .experiment_data import SiteData
from .multisite import (
    ATTRIBUTES,
    LAYERS,
    SCALE_FLOOR,
    Batch,
    Level,
    MultiSiteModel,
    build_model,
    fit_batch,
    site_attributes,
    site_inputs,
    standard_layers,
)
from .predictions import Prediction
from .sequences import Normaliser

#: Attributes a member takes from its perturbed parameters (attribute -> ensemble variable, transform).
MEMBER_ATTRIBUTES = {"smcmax_m3m3": ("smcmax", np.asarray), "bexp": ("bexp", np.asarray),
                     "log10_dksat_ms": ("dksat", np.log10)}  # fmt: skip


def site_ensemble(data: SiteData, members: int, seed: int, progress: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Run the ensemble at a site: daily moisture of every member on the standard column (M, D, len(LAYERS)),
    m3 m-3, and every member's attributes (M, len(ATTRIBUTES))."""
    from .coupling.ensemble import perturbed_ensemble

    ens = perturbed_ensemble(data.setup, members, seed=seed, progress=progress)
    var = "soil_liquid_water" if data.sensor_liquid.all() else "soil_moisture"
    bottoms = -np.asarray(data.setup.grid.zsoil, float)
    targets = np.stack([standard_layers(data.daily(v), bottoms) for v in ens[var].values])
    attributes = np.repeat(site_attributes(data)[None], members, axis=0)
    for name, (param, transform) in MEMBER_ATTRIBUTES.items():
        top = ens[f"{param}_value"].values.reshape(members, -1)[:, 0]
        attributes[:, ATTRIBUTES.index(name)] = transform(top)
    return targets, attributes


def ensemble_batch(
    sites: list[SiteData], ensembles: dict[str, tuple[np.ndarray, np.ndarray]],
    physics: dict[str, Prediction] | None = None,
) -> tuple[Batch, list]:  # fmt: skip
    """The members of all ``sites`` as rows of one :class:`~dam.multisite.Batch` (targets on the training days,
    validation targets on the validation days; every sensor is a standard layer) and each row's training days.
    With ``physics`` (site name -> physics_default's prediction) the rows read the site's physics run as the
    physics-guided networks do, and their base is member 0 (the default parameters): the network learns how the
    physics changes with the soil attributes."""
    rows = [(s, m, y, a) for s in sites for m, (y, a) in enumerate(zip(*ensembles[s.name], strict=True))]
    inputs = {s.name: site_inputs(s, None if physics is None else physics[s.name])[0] for s in sites}
    n, d, n_layers = len(rows), max(len(s.days) for s in sites), len(LAYERS)
    forcing = np.zeros((n, d, inputs[sites[0].name].shape[1]))
    base = np.zeros((n, d, n_layers))
    targets, val = np.full((n, d, n_layers), np.nan), np.full((n, d, n_layers), np.nan)
    days = np.zeros((n, d), bool)
    for i, (s, _, y, _) in enumerate(rows):
        forcing[i, : len(s.days)] = np.nan_to_num(inputs[s.name])
        if physics is not None:
            base[i, : len(s.days)] = ensembles[s.name][0][0]
        targets[i, s.train], val[i, s.val] = y[s.train], y[s.val]
        days[i, : len(s.days)] = True
    scale = np.nanstd(targets - base, axis=1) + SCALE_FLOOR
    batch = Batch(
        names=tuple(f"{s.name}/member{m}" for s, m, _, _ in rows), forcing=forcing, base=base,
        attributes=np.stack([a for _, _, _, a in rows]), targets=targets,
        val_targets=val, weights=np.repeat(np.eye(n_layers)[None], n, axis=0), scale=scale, days=days,
    )  # fmt: skip
    return batch, [s.train for s, _, _, _ in rows]


def pretrain_multisite(
    kind: str,
    sites: list[SiteData],
    ensembles: dict[str, tuple[np.ndarray, np.ndarray]],
    cfg: NetworkConfig,
    *,
    seed: int,
    epochs: int,
    checkpoint_dir: Path | None = None,
    progress: bool = False,
    mesh=None,
    physics: dict[str, Prediction] | None = None,
    level: Level = "learned",
) -> MultiSiteModel:
    """A fresh network (``kind``) trained ``epochs`` epochs on the ensembles (:func:`site_ensemble`) of ``sites``:
    normalisers fitted on their training days, the members' attributes and simulated moisture (with ``physics``, a
    physics-guided network: see :func:`ensemble_batch`; its level is learned, the members' levels differ, whatever
    the ``level`` it is trained at next, but for ``level="input"``: it reads the physics run and predicts the
    members' moisture itself)."""
    b, spans = ensemble_batch(sites, ensembles, physics)
    x = np.concatenate([site_inputs(s, None if physics is None else physics[s.name])[0][s.train] for s in sites])
    base = np.zeros_like(b.base) if level == "input" else b.base
    y = np.concatenate([(row - row_base)[sp] for row, row_base, sp in zip(b.targets, base, spans, strict=True)])
    norms = {"x_norm": Normaliser.fit(x), "a_norm": Normaliser.fit(b.attributes),
             "y_norm": Normaliser.fit(y.reshape(-1, 1))}  # fmt: skip
    init = build_model(kind, cfg, seed, norms, physics=physics is not None,
                       level="input" if level == "input" else "learned")  # fmt: skip
    model, _ = fit_batch(init, b, spans, cfg, seed=seed, epochs=epochs, checkpoint_dir=checkpoint_dir,
                         progress=progress, mesh=mesh, desc=f"pretrain {kind} x {len(b.names)} members")  # fmt: skip
    return model


def pretrain_fold(kind: str, train: list[SiteData], ensembles: dict, cfg, checkpoint_dir: Path, mesh=None,
                  store: Path | None = None, keys: dict[str, str] | None = None,
                  physics: dict[str, Prediction] | None = None, level: Level = "learned"):  # fmt: skip
    """:func:`pretrain_multisite` on the ``train`` sites of an experiment (configuration ``cfg``: its ``pretrain``
    and ``network``), running the ensembles of the sites not yet in ``ensembles`` (site name -> ensemble); with a
    ``store`` folder each ensemble is also saved there and read back by a resumed run (:func:`stored_ensemble`;
    ``keys``: site name -> fingerprint of the site's inputs)."""
    for data in train:
        if data.name not in ensembles:
            key = f"{(keys or {}).get(data.name, data.name)}/members={cfg.pretrain.members}/seed={cfg.seed}"
            path = None if store is None else store / f"{data.name}.nc"
            ensembles[data.name] = stored_ensemble(data, cfg.pretrain.members, cfg.seed, path, key)
    return pretrain_multisite(kind, train, ensembles, cfg.network, seed=cfg.seed, epochs=cfg.pretrain.epochs,
                              checkpoint_dir=checkpoint_dir, progress=cfg.progress, mesh=mesh,
                              physics=physics, level=level)  # fmt: skip


def stored_ensemble(data: SiteData, members: int, seed: int, path: Path | None, key: str):
    """:func:`site_ensemble`, read from the netCDF file ``path`` when it holds the ensemble of ``key`` (the site's
    inputs, members and seed), else run and written there (atomically)."""
    if path is not None and path.is_file():
        with xr.open_dataset(path) as ds:
            if ds.attrs.get("key") == key:
                return ds["soil_moisture"].values, ds["attributes"].values
    t0 = time.perf_counter()
    targets, attributes = site_ensemble(data, members, seed)
    print(f"[{data.name}] ensemble of {members} members in {time.perf_counter() - t0:.1f} s", flush=True)
    if path is not None:
        ds = xr.Dataset(
            {"soil_moisture": (("member", "time", "layer"), targets, {
                "units": "m3 m-3", "long_name": "daily soil moisture of each ensemble member on the standard column",
                "comment": "liquid water where all the site's sensors see liquid water, else total water"}),
             "attributes": (("member", "attribute"), attributes, {"long_name": "the member's site attributes"})},
            coords={"time": data.days.values, "attribute": list(ATTRIBUTES),
                    "layer": ("layer", list(LAYERS), {"long_name": "depth of the layer's bottom", "units": "m"})},
            attrs={"site": data.name, "key": key, "Conventions": "CF-1.10"},
        )  # fmt: skip
        io_safety.write_netcdf(ds, path)
    return targets, attributes
