"""Noah-MP v5.2 parameter tables (``dam/data/noahmp_tables.yaml``, transcribed from ``NoahmpTable.TBL``), the
table values dam's physics uses, their physical ranges, and a site's resolved rows with its overrides applied.

The shipped YAML holds every row of the MODIS vegetation table (classes 1-20), every STAS soil class (1-19),
every soil colour (1-8) and the global and general parameters; its ``provenance`` names the file and commit.

:func:`site_tables` resolves the rows of one site (vegetation class, STAS class per soil layer, soil colour)
and applies overrides given by table name (``site.yaml`` ``parameters``, see ``docs/site_format.md``). An
override may name only a field dam's physics uses (:data:`FIELDS`), and every resolved value is checked
against its physical range and the cross-field rules (wilting point < field capacity <= porosity, ...), so a
bad row or override is a :class:`TableError` naming the section, field, layer and the allowed range.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import yaml

MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
SECTIONS = ("vegetation", "soil", "radiation", "global", "general")


class TableError(ValueError):
    """A table row or an override of it is unknown, unused by dam or outside its physical range."""


@functools.cache
def noahmp_tables() -> dict[str, Any]:
    """The shipped Noah-MP tables (parsed ``dam/data/noahmp_tables.yaml``; treat as read-only)."""
    return yaml.safe_load((resources.files("dam.data") / "noahmp_tables.yaml").read_text())


# --------------------------------------------------------------------------------------------------------------
# The fields dam uses and their ranges
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Bounds:
    """An interval written as in mathematics, e.g. ``"(0, 1]"``; ``integer`` for counts."""

    text: str
    integer: bool = False

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[\[(][^,]+,[^,]+[\])]", self.text.replace(" ", "")):
            raise ValueError(f"bad interval {self.text!r}")

    @property
    def _parts(self) -> tuple[float, float, bool, bool]:
        t = self.text.replace(" ", "")
        lo, hi = (float(x) for x in t[1:-1].split(","))
        return lo, hi, t[0] == "(", t[-1] == ")"

    def contains(self, x: float) -> bool:
        lo, hi, lo_open, hi_open = self._parts
        if not math.isfinite(x) or (self.integer and x != int(x)):
            return False
        return (lo < x if lo_open else lo <= x) and (x < hi if hi_open else x <= hi)

    def describe(self) -> str:
        return ("an integer in " if self.integer else "") + self.text


@dataclasses.dataclass(frozen=True)
class Field:
    """A table field dam uses: ``section``, table ``name``, allowed ``bounds``, ``units``, ``use`` (the dam
    parameter it feeds) and ``shape``: ``"scalar"``, ``"layer"`` (one value per soil layer) or ``"bands"`` (a
    (visible, near-infrared) pair)."""

    section: str
    name: str
    bounds: Bounds
    units: str
    use: str
    shape: str = "scalar"


def _fields() -> dict[str, dict[str, Field]]:
    out: dict[str, dict[str, Field]] = {s: {} for s in SECTIONS}

    def add(section, name, bounds, units, use, shape="scalar", integer=False):
        out[section][name] = Field(section, name, Bounds(bounds, integer), units, use, shape)

    v = "vegetation"
    add(v, "CH2OP", "[0, 10]", "mm per unit LAI+SAI", "canopy.liq_hold_cap_mm")
    add(v, "DLEAF", "(0, 1]", "m", "surface.leaf_dimension")
    add(v, "Z0MVT", "[0, 10]", "m", "surface.z0m_veg")
    add(v, "HVT", "[0, 150]", "m", "surface.canopy_top_height, phenology.canopy_top_m")
    add(v, "HVB", "[0, 150]", "m", "phenology.canopy_bottom_m")
    add(v, "MFSNO", "(0, 10]", "-", "snow_cover.melt_factor")
    add(v, "SCFFAC", "(0, 1]", "m", "snow_cover.cover_factor_m")
    add(v, "CBIOM", "[0, 1]", "m", "surface.canopy_heat_capacity_factor")
    for part, use in (("RHOL", "rho_leaf"), ("RHOS", "rho_stem"), ("TAUL", "tau_leaf"), ("TAUS", "tau_stem")):
        for band in ("VIS", "NIR"):
            add(v, f"{part}_{band}", "[0, 1]", "-", f"radiation.{use}")
    add(v, "XL", "[-1, 1]", "-", "radiation.leaf_orientation")
    add(v, "CWPVT", "(0, 20]", "-", "surface.canopy_wind_ext")
    add(v, "C3PSN", "[0, 1]", "- (1 = C3, 0 = C4)", "surface.stomata.c3")
    add(v, "KC25", "(0, 1000]", "Pa", "surface.stomata.kc25")
    add(v, "AKC", "(0, 10]", "-", "surface.stomata.kc_q10")
    add(v, "KO25", "(0, 1e6]", "Pa", "surface.stomata.ko25")
    add(v, "AKO", "(0, 10]", "-", "surface.stomata.ko_q10")
    add(v, "AVCMX", "(0, 10]", "-", "surface.stomata.vcmax_q10")
    add(v, "TMIN", "[0, 330]", "K", "phenology.t_min_photosynthesis_k")
    add(v, "VCMX25", "[0, 500]", "umol CO2 m-2 s-1", "surface.stomata.vcmax25")
    add(v, "BP", "(0, 1e16]", "umol m-2 s-1", "surface.stomata.g_min")
    add(v, "MP", "(0, 50]", "-", "surface.stomata.slope")
    add(v, "QE25", "[0, 1]", "umol CO2 / umol photon", "surface.stomata.quantum_eff")
    add(v, "FOLNMX", "[0, 10]", "%", "surface.stomata.foliage_n_max")
    add(v, "NROOT", "[1, 1000]", "soil layers", "params.roots.n_root", integer=True)
    for m in MONTHS:
        add(v, f"LAI_{m}", "[0, 20]", "m2 m-2", "phenology.lai_monthly")
    for m in MONTHS:
        add(v, f"SAI_{m}", "[0, 20]", "m2 m-2", "phenology.sai_monthly")

    s = "soil"
    add(s, "BB", "(0, 30]", "-", "soil.bexp", "layer")
    add(s, "MAXSMC", "(0, 1)", "m3 m-3", "soil.smcmax", "layer")
    add(s, "REFSMC", "(0, 1)", "m3 m-3", "soil.smcref", "layer")
    add(s, "WLTSMC", "[0, 1)", "m3 m-3", "soil.smcwlt", "layer")
    add(s, "SATPSI", "(0, 100]", "m", "soil.psisat", "layer")
    add(s, "SATDK", "(0, 0.01]", "m s-1", "soil.dksat", "layer")
    add(s, "SATDW", "(0, 0.01]", "m2 s-1", "soil.dwsat", "layer")
    add(s, "QTZ", "[0, 1]", "-", "soil.quartz", "layer")

    r = "radiation"
    for name in ("ALBSAT_VIS", "ALBSAT_NIR", "ALBDRY_VIS", "ALBDRY_NIR"):
        add(r, name, "[0, 1]", "- (the site's soil colour)", "radiation.albedo_soil_" + name[3:6].lower())
    add(r, "OMEGAS", "[0, 1]", "- (VIS, NIR)", "radiation.snow_scatter", "bands")
    add(r, "BETADS", "[0, 1]", "-", "radiation.snow_upscatter_dir")
    add(r, "BETAIS", "[0, 1]", "-", "radiation.snow_upscatter_dif")
    add(r, "EG", "(0, 1]", "- (soil; the table's second value is for lakes)", "radiation.emissivity_soil")

    g = "global"
    add(g, "CO2", "(0, 0.01]", "mol mol-1", "surface.stomata.co2_ratio")
    add(g, "O2", "(0, 1)", "mol mol-1", "surface.stomata.o2_ratio")
    add(g, "SNOW_EMIS", "(0, 1]", "-", "radiation.emissivity_snow")
    add(g, "SNOWDEN_MAX", "(0, 917]", "kg m-3", "atmos.snowfall_density_max")
    add(g, "RSURF_SNOW", "[0, 1e4]", "s m-1", "surface.rsurf_snow")
    add(g, "Z0SNO", "(0, 1]", "m", "surface.z0m_snow")
    add(g, "SWEMX", "(0, 100]", "mm", "radiation.swe_full_cover_mm")
    add(g, "TAU0", "(0, 1e9]", "s", "radiation.snow_age_tau_s")
    add(g, "GRAIN_GROWTH", "[0, 1e5]", "K", "radiation.snow_grain_growth")
    add(g, "EXTRA_GROWTH", "[0, 1e3]", "-", "radiation.snow_extra_growth")
    add(g, "DIRT_SOOT", "[0, 10]", "-", "radiation.snow_dirt_soot")
    add(g, "BATS_COSZ", "(0, 10]", "-", "radiation.bats_cosz")
    for name, use in (("NEW", "snow_albedo_new"), ("AGE", "snow_albedo_age"), ("DIR", "snow_albedo_zenith")):
        for band in ("VIS", "NIR"):
            add(g, f"BATS_{band}_{name}", "[0, 1]", "-", f"radiation.{use}")
    add(g, "RSURF_EXP", "(0, 20]", "-", "surface.rsurf_exp")
    add(g, "Z0SOIL", "(0, 1]", "m", "surface.z0m_soil")

    n = "general"
    add(n, "SLOPE_DATA", "[0, 1]", "- (the drainage factor used; Noah-MP uses slope type 1)", "soil.slope")
    add(n, "CSOIL_DATA", "(0, 1e7]", "J m-3 K-1", "soil.csoil")
    add(n, "REFDK_DATA", "(0, 0.01]", "m s-1", "soil.refdk")
    add(n, "REFKDT_DATA", "(0, 100]", "-", "soil.refkdt")
    add(n, "FRZK_DATA", "[0, 1]", "m", "soil.frzk")
    return out


#: The table fields dam's physics uses, by section; a site may override exactly these.
FIELDS: dict[str, dict[str, Field]] = _fields()

#: Fields with their own site.yaml key (an override of them points there).
_HAS_OWN_KEY = {("general", "ZBOT_DATA"): "soil_column.bottom_depth_m"}

#: MODIS classes Noah-MP does not run its land-soil physics on (HRLDAS ``ConfigVarInTransfer``/``NoahmpDriverMain``).
UNSUPPORTED_VEGETATION = {
    13: "Noah-MP runs it as a bulk urban point (FlagUrban: urban roughness, soil heat capacity, a 95 % impervious "
    "top layer and evaporation resistance), which dam does not implement",
    15: "Noah-MP runs its glacier model (NoahmpMainGlacier) there, which dam does not implement",
    17: "a water point: Noah-MP runs no land physics there (dam has no lake model)",
}
UNSUPPORTED_SOIL = {
    14: "WATER is not a soil; Noah-MP replaces it by 7 (SANDY CLAY LOAM) at land points (ConfigVarInTransfer): "
    "write 7 if that is what you want",
}
#: Non-vegetated classes: Noah-MP forces LAI = SAI = 0 there (PhenologyMain), so LAI/SAI overrides are refused.
NO_CANOPY = (13, 15, 16, 17)


# --------------------------------------------------------------------------------------------------------------
# A site's rows
# --------------------------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SiteTables:
    """The resolved table values of one site (overrides applied, ranges checked).

    ``vegetation`` the MODIS row of the class; ``soil`` one STAS row per soil layer (top first); ``radiation``
    ALBSAT/ALBDRY of the site's soil colour, OMEGAS (VIS, NIR), BETADS, BETAIS and EG of soil; ``global_`` and
    ``general`` the global and general parameters (``SLOPE_DATA`` is the one drainage factor used).
    """

    vegetation_class: int
    soil_classes: tuple[int, ...]
    soil_colour: int
    vegetation: Mapping[str, Any]
    soil: tuple[Mapping[str, Any], ...]
    radiation: Mapping[str, Any]
    global_: Mapping[str, Any]
    general: Mapping[str, Any]

    def soil_layer_values(self, name: str) -> list[float]:
        """One value of the soil field ``name`` per layer."""
        return [float(row[name]) for row in self.soil]


def vegetation_classes() -> dict[int, str]:
    """MODIS class -> name of every shipped row."""
    return {int(k): v["name"] for k, v in noahmp_tables()["modis_vegetation"].items()}


def soil_classes() -> dict[int, str]:
    """STAS class -> name of every shipped row."""
    return {int(k): v["name"] for k, v in noahmp_tables()["soil_stas"].items()}


def _check_class(kind: str, value: Any, rows: Mapping[int, Any], unsupported: Mapping[int, str], key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float) or value != int(value):
        raise TableError(f"{key}: {kind} class must be an integer, got {value!r}")
    c = int(value)
    if c not in rows:
        raise TableError(f"{key}: {kind} class {c} is not in Noah-MP's table (allowed {min(rows)}..{max(rows)})")
    if c in unsupported:
        raise TableError(f"{key}: {kind} class {c} ({rows[c]['name']}) is not supported: {unsupported[c]}")
    return c


def _suggest(name: str, section: str) -> str:
    tables = noahmp_tables()
    table_key = {"vegetation": "modis_vegetation", "soil": "soil_stas"}.get(section, section)
    known = tables[table_key]
    names = next(iter(known.values())).keys() if section in ("vegetation", "soil") else known.keys()
    if (section, name) in _HAS_OWN_KEY:
        return f"is set by the site.yaml key {_HAS_OWN_KEY[(section, name)]}"
    if name in names:
        return "is a Noah-MP table field that dam's physics does not use (options dam does not implement)"
    # dam's own parameter names (soil.smcmax, ...) point to their table field
    aliases = {u.split(".")[-1].lower(): f.name for f in FIELDS[section].values() for u in f.use.split(", ")}
    near = [aliases[name.lower()]] if name.lower() in aliases else []
    near = near or difflib.get_close_matches(name, list(FIELDS[section]), n=1, cutoff=0.6)
    return "is not a Noah-MP table field" + (f"; did you mean {near[0]!r}?" if near else "")


def _value(x: Any, field: Field, where: str) -> Any:
    def one(v: Any, label: str) -> float:
        if isinstance(v, bool) or not isinstance(v, int | float):
            raise TableError(f"{label}: must be a number, got {v!r}")
        if not field.bounds.contains(float(v)):
            raise TableError(f"{label} = {v!r} is outside the allowed range {field.bounds.describe()} {field.units}")
        return int(v) if field.bounds.integer else float(v)

    if field.shape == "bands":
        if not isinstance(x, Sequence) or isinstance(x, str) or len(x) != 2:
            raise TableError(f"{where}: needs two values (visible, near infrared), got {x!r}")
        return [one(v, f"{where}[{i}]") for i, v in enumerate(x)]
    return one(x, where)


def site_tables(
    vegetation_class: int,
    soil_classes: Sequence[int],
    soil_colour: int,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    where: str = "parameters",
) -> SiteTables:
    """The resolved, checked table values of a site.

    Parameters
    ----------
    vegetation_class : MODIS class 1..20 (13 urban, 15 snow and ice and 17 water are refused, see
        :data:`UNSUPPORTED_VEGETATION`).
    soil_classes : STAS class 1..19 of each soil layer, top first (14 water is refused).
    soil_colour : 1..8.
    overrides : ``{section: {TABLE_NAME: value}}``, sections of :data:`SECTIONS`; soil values may be one
        number for all layers or a list with one per layer; OMEGAS is a (VIS, NIR) pair.
    where : prefix of error messages (the site.yaml key of the overrides).

    Raises
    ------
    TableError
        Unknown class, unknown or unused field, wrong number of layer values, a value outside its range, or a
        violated cross-field rule; the message names the section, field and layer.
    """
    t = noahmp_tables()
    veg_rows = {int(k): v for k, v in t["modis_vegetation"].items()}
    soil_rows = {int(k): v for k, v in t["soil_stas"].items()}
    vc = _check_class("vegetation", vegetation_class, veg_rows, UNSUPPORTED_VEGETATION, "vegetation.igbp_type")
    if len(soil_classes) == 0:
        raise TableError("soil.stas_type: at least one soil layer is needed")
    scs = tuple(
        _check_class("soil", c, soil_rows, UNSUPPORTED_SOIL, f"soil.stas_type[{k}]") for k, c in enumerate(soil_classes)
    )
    n_colours = len(t["radiation"]["ALBSAT_VIS"])
    if isinstance(soil_colour, bool) or soil_colour not in range(1, n_colours + 1):
        raise TableError(f"soil.colour: {soil_colour!r} is not a Noah-MP soil colour (allowed 1..{n_colours})")
    colour = int(soil_colour) - 1
    rad, gen = t["radiation"], t["general"]
    veg = {k: v for k, v in veg_rows[vc].items() if k != "name"}
    soil = [{k: v for k, v in soil_rows[c].items() if k != "name"} for c in scs]
    radiation = {
        "ALBSAT_VIS": rad["ALBSAT_VIS"][colour], "ALBSAT_NIR": rad["ALBSAT_NIR"][colour],
        "ALBDRY_VIS": rad["ALBDRY_VIS"][colour], "ALBDRY_NIR": rad["ALBDRY_NIR"][colour],
        "OMEGAS": list(rad["OMEGAS"]), "BETADS": rad["BETADS"], "BETAIS": rad["BETAIS"], "EG": rad["EG"][0],
    }  # fmt: skip
    glob = dict(t["global"])
    general = {k: gen[k] for k in ("CSOIL_DATA", "REFDK_DATA", "REFKDT_DATA", "FRZK_DATA")}
    general["SLOPE_DATA"] = gen["SLOPE_DATA"][0]  # RunoffSlopeType 1, as HRLDAS sets it
    resolved = {"vegetation": veg, "radiation": radiation, "global": glob, "general": general}

    for section, values in (overrides or {}).items():
        if section not in SECTIONS:
            near = difflib.get_close_matches(str(section), SECTIONS, n=1, cutoff=0.6)
            raise TableError(f"{where}: unknown section {section!r}" + (f"; did you mean {near[0]!r}?" if near else "")
                             + f" (allowed: {', '.join(SECTIONS)})")  # fmt: skip
        for name, x in (values or {}).items():
            key = f"{where}.{section}.{name}"
            field = FIELDS[section].get(name)
            if field is None:
                raise TableError(f"{key} {_suggest(str(name), section)}")
            if section == "vegetation" and vc in NO_CANOPY and name[:4] in ("LAI_", "SAI_"):
                raise TableError(f"{key}: vegetation class {vc} has no canopy (Noah-MP sets LAI = SAI = 0 there)")
            if field.shape == "layer":
                per_layer = isinstance(x, Sequence) and not isinstance(x, str)
                xs = list(x) if per_layer else [x] * len(soil)
                if len(xs) != len(soil):
                    raise TableError(f"{key}: {len(xs)} values for {len(soil)} soil layers (give one number for "
                                     "all layers or one per layer)")  # fmt: skip
                for k, xk in enumerate(xs):
                    soil[k][name] = _value(xk, field, f"{key}[{k}]" if per_layer else key)
            else:
                resolved[section][name] = _value(x, field, key)

    _check_resolved(vc, scs, soil, resolved, where)
    return SiteTables(
        vegetation_class=vc, soil_classes=scs, soil_colour=int(soil_colour), vegetation=veg, soil=tuple(soil),
        radiation=radiation, global_=glob, general=general,
    )  # fmt: skip


def _check_resolved(vc: int, scs: tuple[int, ...], soil: list[dict], resolved: dict, where: str) -> None:
    """Ranges of every used value (table rows included) and the cross-field rules."""
    origin = {"vegetation": f"vegetation class {vc}", "radiation": "radiation table", "global": "global table",
              "general": "general table"}  # fmt: skip
    for section, fields in FIELDS.items():
        if section == "soil":
            for k, row in enumerate(soil):
                for name, f in fields.items():
                    _value(row[name], f, f"{name} of soil layer {k + 1} (STAS class {scs[k]} or {where}.soil)")
            continue
        for name, f in fields.items():
            _value(resolved[section][name], f, f"{name} of the {origin[section]} (or {where}.{section})")
    for k, row in enumerate(soil):
        w, r, m = row["WLTSMC"], row["REFSMC"], row["MAXSMC"]
        if not w < r <= m:
            raise TableError(
                f"soil layer {k + 1} (STAS class {scs[k]} or {where}.soil): need WLTSMC < REFSMC <= MAXSMC "
                f"(wilting point < field capacity <= porosity), got WLTSMC={w:g}, REFSMC={r:g}, MAXSMC={m:g}"
            )
    veg = resolved["vegetation"]
    if veg["HVB"] > veg["HVT"]:
        raise TableError(f"vegetation class {vc} (or {where}.vegetation): canopy bottom HVB={veg['HVB']:g} m lies "
                         f"above its top HVT={veg['HVT']:g} m")  # fmt: skip
    for part in ("L", "S"):
        for band in ("VIS", "NIR"):
            rho, tau = veg[f"RHO{part}_{band}"], veg[f"TAU{part}_{band}"]
            if rho + tau > 1.0:
                raise TableError(f"vegetation class {vc} (or {where}.vegetation): RHO{part}_{band} + TAU{part}_{band}"
                                 f" = {rho + tau:g} > 1 (reflectance + transmittance)")  # fmt: skip


def usda_soil_class(sand: float, clay: float) -> int:
    """The STAS class (1-12) of a USDA texture from sand and clay fractions (0-1; silt = the rest), by the USDA
    texture triangle (Soil Survey Manual). Used when a site gives ``soil.texture`` but no ``soil.stas_type``."""
    if not (0.0 <= sand <= 1.0 and 0.0 <= clay <= 1.0 and sand + clay <= 1.0):
        raise TableError(f"soil.texture: sand={sand!r}, clay={clay!r} must be fractions with sand + clay <= 1")
    s, c = 100.0 * sand, 100.0 * clay
    si = 100.0 - s - c
    rules = (
        (si + 1.5 * c < 15, 1),  # sand
        (si + 2 * c < 30, 2),  # loamy sand
        ((7 <= c < 20 and s > 52) or (c < 7 and si < 50), 3),  # sandy loam
        (7 <= c < 27 and 28 <= si < 50 and s <= 52, 6),  # loam
        ((si >= 50 and 12 <= c < 27) or (50 <= si < 80 and c < 12), 4),  # silt loam
        (si >= 80 and c < 12, 5),  # silt
        (20 <= c < 35 and si < 28 and s > 45, 7),  # sandy clay loam
        (27 <= c < 40 and 20 < s <= 45, 9),  # clay loam
        (27 <= c < 40 and s <= 20, 8),  # silty clay loam
        (c >= 35 and s > 45, 10),  # sandy clay
        (c >= 40 and si >= 40, 11),  # silty clay
        (c >= 40, 12),  # clay
    )
    return next(k for ok, k in rules if ok)
