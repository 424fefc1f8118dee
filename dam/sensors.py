"""Which model values a soil sensor sees: a depth rule from model layers to sensors, as a weight matrix.

The model's soil temperature and moisture are layer values that Noah-MP places at the layer centres (its
nodes, where the heat and water fluxes between layers are evaluated). A sensor at depth d is compared with the
model profile at d, read as follows (``rule="interpolate"``, the default):

* the profile is linear in depth between neighbouring nodes, and constant above the first node and below the
  last one (no extrapolation beyond the model's own values);
* a point sensor (footprint 0) reads the profile at its depth; a sensor with a vertical footprint f (e.g. a
  vertically installed TDR rod, a neutron probe's sphere of influence) reads the profile's mean over
  [d - f/2, d + f/2], clipped to the column.

Every sensor is thus a fixed linear combination of the layers (a row of :attr:`SensorMapping.weights`, summing to
1), which works on numpy, xarray and JAX arrays and keeps gradients. ``rule="layer"`` is the former rule: the
value of the layer that contains the sensor (a sensor on an interface belongs to the upper layer).

Why interpolate: where a layer is much thicker than a sensor's footprint (Noah-MP's 0.3-1.0 m layers against a
probe of a few cm), the layer value is the layer mean, centred on its node; a sensor between two nodes sees a
value between theirs. At Bondville the 20 cm probe lies 0.05 m above the 0.25 m node of the 0.1-0.4 m layer,
three quarters of the way from the 0.05 m node, and the 2 cm thermistor sits above the first node, where the
diurnal cycle is largest. ``docs/site_format.md`` gives the effect on the shipped sites' metrics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd
import xarray as xr

RULES = ("interpolate", "layer")


class SensorError(ValueError):
    """A sensor does not fit the soil column (below it, negative depth, bad footprint)."""


@dataclasses.dataclass(frozen=True, eq=False)
class SensorMapping:
    """How each sensor reads the model layers.

    Attributes
    ----------
    variable : the observed variable.
    sensor_depths_m : sensor depths [m, positive down].
    layer_index : 0-based model layer that contains each sensor (layer k spans (bottom[k-1], bottom[k]],
        bottom[-1] = 0; reported for tables, and the whole mapping under ``rule="layer"``).
    layer_top_m, layer_bottom_m : bounds of that layer [m].
    weights : (S, N) weight of each model layer in each sensor's value (rows sum to 1).
    footprint_m : vertical extent each sensor averages over [m] (0 = a point).
    rule : ``"interpolate"`` or ``"layer"`` (see the module docstring).
    """

    variable: str
    sensor_depths_m: tuple[float, ...]
    layer_index: tuple[int, ...]
    layer_top_m: tuple[float, ...]
    layer_bottom_m: tuple[float, ...]
    weights: np.ndarray
    footprint_m: tuple[float, ...]
    rule: str = "interpolate"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SensorMapping):
            return NotImplemented
        a, b = dataclasses.asdict(self), dataclasses.asdict(other)
        wa, wb = a.pop("weights"), b.pop("weights")
        return a == b and np.array_equal(wa, wb)

    __hash__ = None  # type: ignore[assignment]

    @property
    def n_layers(self) -> int:
        return self.weights.shape[1]

    def apply(self, layered):
        """Model layers (..., N) -> sensors (..., S) (numpy or JAX arrays)."""
        w = self.weights
        if self.rule == "layer":  # exact selection (no arithmetic on the values)
            return layered[..., np.asarray(self.layer_index)]
        return layered @ w.T.astype(getattr(layered, "dtype", w.dtype))

    def to_frame(self) -> pd.DataFrame:
        """One row per sensor: depth, containing layer and its bounds, footprint, rule and the layer weights."""
        return pd.DataFrame(
            {
                "variable": self.variable,
                "sensor_depth_m": self.sensor_depths_m,
                "layer": self.layer_index,
                "layer_top_m": self.layer_top_m,
                "layer_bottom_m": self.layer_bottom_m,
                "footprint_m": self.footprint_m,
                "rule": self.rule,
                "weights": [tuple(float(x) for x in row) for row in self.weights],
            }
        )


def _per_sensor(value: float | Sequence[float], n: int, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=float)
    if arr.ndim == 0:
        arr = np.full(n, float(arr))
    if arr.shape != (n,):
        raise SensorError(f"{what}: {arr.size} values for {n} sensors (give one number or one per sensor)")
    return arr


def _point_weights(z: float, nodes: np.ndarray) -> np.ndarray:
    """Weights of the piecewise-linear profile through ``nodes`` at depth z (constant beyond the end nodes)."""
    w = np.zeros(nodes.size)
    if z <= nodes[0]:
        w[0] = 1.0
    elif z >= nodes[-1]:
        w[-1] = 1.0
    else:
        k = int(np.searchsorted(nodes, z, side="right")) - 1
        f = (z - nodes[k]) / (nodes[k + 1] - nodes[k])
        w[k], w[k + 1] = 1.0 - f, f
    return w


def _footprint_weights(a: float, b: float, nodes: np.ndarray) -> np.ndarray:
    """Mean of the piecewise-linear profile over [a, b]: trapezoids between its breakpoints are exact."""
    xs = np.unique(np.r_[a, b, nodes[(nodes > a) & (nodes < b)]])
    ws = np.stack([_point_weights(x, nodes) for x in xs])
    seg = np.diff(xs)[:, None]
    return (0.5 * (ws[:-1] + ws[1:]) * seg).sum(axis=0) / (b - a)


def map_sensors_to_layers(
    sensor_depths_m: Sequence[float],
    layer_bottoms_m: Sequence[float],
    variable: str = "sensor",
    *,
    footprint_m: float | Sequence[float] = 0.0,
    rule: str = "interpolate",
) -> SensorMapping:
    """Map sensor depths to model layers (rules in the module docstring).

    Parameters
    ----------
    sensor_depths_m : depths of the sensors, m (positive down).
    layer_bottoms_m : bottoms of the model layers, m (positive, increasing).
    variable : name used in messages.
    footprint_m : vertical extent each sensor averages over, m (one number or one per sensor; 0 = a point).
    rule : ``"interpolate"`` (default) or ``"layer"``.

    Raises
    ------
    SensorError
        If a sensor lies below the soil column or above the surface (naming the variable, depth and column
        bottom), a footprint is negative, the rule is unknown, or the layer bottoms are not positive and
        increasing.
    """
    if rule not in RULES:
        raise SensorError(f"sensor mapping rule {rule!r} is not one of {RULES}")
    bottoms = np.asarray(layer_bottoms_m, dtype=float)
    if bottoms.ndim != 1 or bottoms.size == 0 or (bottoms <= 0).any() or (np.diff(bottoms) <= 0).any():
        raise SensorError(f"layer bottoms {list(layer_bottoms_m)} must be positive and increasing (m, positive down)")
    depths = np.asarray(sensor_depths_m, dtype=float).reshape(-1)
    foot = _per_sensor(footprint_m, depths.size, f"{variable} footprint_m")
    for d in depths:
        if not np.isfinite(d) or d < 0:
            raise SensorError(f"{variable} sensor at depth {d:g} m: depths must be >= 0 m (positive down)")
        if d > bottoms[-1]:
            raise SensorError(
                f"{variable} sensor at depth {d:g} m lies below the soil column (bottom {bottoms[-1]:g} m): "
                "deepen the column (site.yaml soil_column.layer_thickness_m) or drop the sensor"
            )
    if (foot < 0).any() or not np.isfinite(foot).all():
        raise SensorError(f"{variable} footprint_m {foot.tolist()} must be >= 0 m")
    tops = np.concatenate([[0.0], bottoms[:-1]])
    nodes = 0.5 * (tops + bottoms)
    idx = np.searchsorted(bottoms, depths, side="left")
    weights = np.zeros((depths.size, bottoms.size))
    for s, (d, f) in enumerate(zip(depths, foot, strict=True)):
        if rule == "layer":
            weights[s, idx[s]] = 1.0
            continue
        a, b = max(0.0, d - f / 2.0), min(bottoms[-1], d + f / 2.0)
        weights[s] = _footprint_weights(a, b, nodes) if b > a else _point_weights(d, nodes)
    return SensorMapping(
        variable,
        tuple(float(x) for x in depths),
        tuple(int(i) for i in idx),
        tuple(float(tops[i]) for i in idx),
        tuple(float(bottoms[i]) for i in idx),
        weights,
        tuple(float(x) for x in foot),
        rule,
    )


def model_at_sensors(
    model: xr.DataArray,
    observed: xr.DataArray,
    layer_bottoms_m: Sequence[float],
    *,
    layer_dim: str = "layer",
    footprint_m: float | Sequence[float] = 0.0,
    rule: str = "interpolate",
) -> tuple[SensorMapping, xr.DataArray]:
    """The model series matching each sensor of ``observed`` (dims ``(time, depth)``).

    ``model`` has dims ``(..., layer_dim)``; the result has the observation's depth dimension in place of
    ``layer_dim`` and a ``model_layer`` coordinate (the layer containing each sensor), so it lines up with
    ``observed``.
    """
    name = str(observed.name or "sensor")
    ddim = next(d for d in observed.dims if d != "time")
    mapping = map_sensors_to_layers(observed[ddim].values, layer_bottoms_m, name, footprint_m=footprint_m, rule=rule)
    if model.sizes[layer_dim] != len(layer_bottoms_m):
        raise SensorError(
            f"model {model.name!r}: {model.sizes[layer_dim]} layers but {len(layer_bottoms_m)} layer bottoms given"
        )
    w = xr.DataArray(mapping.weights, dims=(ddim, layer_dim))
    if rule == "layer":
        sel = model.isel({layer_dim: xr.DataArray(list(mapping.layer_index), dims=ddim)})
    else:
        bare = model.drop_vars([c for c in model.coords if layer_dim in model[c].dims])
        sel = xr.dot(bare, w, dim=layer_dim)
        sel = sel.transpose(*[d if d != layer_dim else ddim for d in model.dims])
        sel.name, sel.attrs = model.name, dict(model.attrs)
    sel = sel.drop_vars(layer_dim, errors="ignore").assign_coords(
        {ddim: observed[ddim].values, "model_layer": (ddim, list(mapping.layer_index))}
    )
    return mapping, sel
