"""The configuration of ``dam grid-run`` (:class:`GridRunConfig`, validated; see docs/grid_runs.md) and the
variables a grid run reads and writes."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field

from dam import physics
from dam.physics.constants import LiteralFlavour
from dam.physics.types import (
    BottomTemperature,
    FrozenPermeability,
    Pow,
    SubsurfaceRunoff,
    Supercooled,
    SurfaceRunoff,
    TemperatureScheme,
)
from dam.run_folder import content_hash
from dam.run_folder import fingerprint as run_fingerprint
from dam.schema import ConfigError, Strict, read_text, validate

PER_LAYER = ("smcmax", "smcref", "smcwlt", "bexp", "dksat", "dwsat", "psisat", "quartz")
PER_COLUMN = ("csoil", "slope", "refkdt", "refdk", "frzk", "tbot")
FORCING = ("ghf_wm2", "qinsurf_mps", "evap_mps", "etran_mps", "frozen_ground", "frz_top_ice_flux_mmps")
OUTPUTS = {  # output name -> (what, attributes)
    "soil_temperature": ("t", {"standard_name": "soil_temperature", "units": "K"}),
    "soil_moisture": ("smc", {"long_name": "total volumetric soil moisture", "units": "m3 m-3"}),
    "soil_liquid_water": ("sh2o", {"long_name": "liquid volumetric soil moisture", "units": "m3 m-3"}),
    "surface_runoff_amount": ("runoff_surface_mm", {"standard_name": "surface_runoff_amount", "units": "kg m-2"}),
    "subsurface_runoff_amount": (
        "runoff_subsurface_mm",
        {"standard_name": "subsurface_runoff_amount", "units": "kg m-2"},
    ),
}


OutputName = Literal[tuple(OUTPUTS)]  # type: ignore[valid-type]


class GridRunError(ValueError):
    """A grid-run configuration, input file or output folder is invalid."""


_HASHES: dict[tuple, str] = {}


def _content_hash(path: str) -> str:
    """:func:`dam.run_folder.content_hash`, once per file version in a process (fingerprint and parts)."""
    stat = os.stat(path)
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    if key not in _HASHES:
        _HASHES[key] = content_hash(path)
    return _HASHES[key]


class SoilOptionsConfig(Strict):
    """:class:`dam.physics.SoilOptions` as written in a YAML file (``dt_s`` defaults to the forcing's)."""

    dt_s: float | None = Field(None, gt=0, description="time step, s (default: the forcing file's dt_s attribute)")
    supercooled: Supercooled = Field("niu06", description="supercooled liquid water (Noah-MP OPT_FRZ)")
    frozen_permeability: FrozenPermeability = Field("niu06", description="frozen soil permeability (OPT_INF)")
    bottom_temperature: BottomTemperature = Field("tbot", description="bottom boundary of heat (OPT_TBOT)")
    temperature_scheme: TemperatureScheme = Field("semi_implicit", description="heat time scheme (OPT_STC)")
    surface_runoff: SurfaceRunoff = Field("schaake96", description="surface runoff and infiltration (OPT_RUN)")
    subsurface_runoff: SubsurfaceRunoff = Field("free_drainage", description="drainage at the bottom (OPT_RUN)")
    literals: LiteralFlavour = Field("f64", description="literal constants: Fortran float64 or widened float32")
    pow: Pow = Field("libm", description="x ** y: libm's pow (the Fortran's values bit for bit) or exp(y log x) "
                     "(about 1.5x faster on CPU; differs in the last bits, which grow over long runs)")  # fmt: skip

    def build(self, dt_s: float) -> physics.SoilOptions:
        values = self.model_dump()
        values["dt_s"] = float(values["dt_s"] or dt_s)
        return physics.SoilOptions(**values)


_PATHS = ("static", "forcing", "output", "checkpoint_dir")


class GridRunConfig(Strict):
    """What ``dam grid-run CONFIG.yaml`` reads (paths relative to the YAML file; see docs/grid_runs.md).

    Spatial blocks are bands of whole latitude rows, so a single row with more land than ``column_block`` is a
    block of its own. ``column_chunk`` is a CPU cache setting: results unchanged, and a resume may change it.
    """

    static: str = Field(description="netCDF/zarr: land_mask (lat, lon), the soil parameters, t/smc/sh2o_init, zsoil")
    forcing: str = Field(description="netCDF/zarr: the soil-column forcing on (time, [layer,] lat, lon)")
    output: str = Field(description="zarr store written block by block (refused if it holds another run)")
    checkpoint_dir: str = Field(description="orbax checkpoints of the state after every time block")
    time_block: int = Field(240, ge=1, description="steps per block: forcing memory ~ time_block x land columns")
    column_block: int | None = Field(None, ge=1, description="at most this many land columns per spatial block")
    column_chunk: int | None = Field(None, ge=1, description="CPU: run a block's columns in chunks of this many")
    dtype: Literal["float64", "float32"] = Field("float64", description="floating-point type of the run")
    options: SoilOptionsConfig = Field(SoilOptionsConfig(), description="soil physics options")
    outputs: tuple[OutputName, ...] = Field(tuple(OUTPUTS), description="variables written to the store")
    source: str | None = Field(None, exclude=True, description="the YAML file (set by from_yaml; not a YAML key)")

    @classmethod
    def from_yaml(cls, path: str | Path) -> GridRunConfig:
        """Read, validate (:class:`dam.schema.ConfigError` naming the key) and resolve paths against the file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"grid-run configuration {path} does not exist")
        try:
            raw = yaml.safe_load(read_text(path, path.name))
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path.name}: not valid YAML ({exc})") from None
        if isinstance(raw, dict) and "source" in raw:
            raise ConfigError(f"{path.name}: unknown key 'source'")
        config = validate(cls, raw, where=path.name)
        resolved = {k: str((path.parent / getattr(config, k)).resolve()) for k in _PATHS}
        return config.model_copy(update={**resolved, "source": str(path.resolve())})

    def _identity(self) -> dict:
        """The keys that identify the run; a key added later is left out at its default, so that runs started
        before it was added keep their fingerprint."""
        keys = self.model_dump(exclude={*_PATHS, "column_chunk", "source"}, mode="json")
        if keys["options"]["pow"] == "libm":
            del keys["options"]["pow"]
        return keys

    def fingerprint(self) -> str:
        """Identifies the run: the configuration without paths (a moved run folder resumes) and without
        ``column_chunk`` (a speed setting), and the content of the static and forcing files (a changed input
        is another run). Hashing reads both files whole: a run of several processes does it in process 0
        only."""
        return run_fingerprint(self._identity(), {k: _content_hash(getattr(self, k)) for k in ("static", "forcing")})

    def parts(self) -> dict[str, str]:
        """Hashes of the configuration and of each input file, kept with the output so that a refused rerun can
        say which of them changed."""
        return {"configuration": run_fingerprint(self._identity(), {}),
                **{k: _content_hash(getattr(self, k)) for k in ("static", "forcing")}}  # fmt: skip
