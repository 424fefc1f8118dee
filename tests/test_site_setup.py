"""A site's model set-up from site.yaml (format 2): soil column, table overrides, initial state, per-sensor
water and footprints; bad input refused before any computation (table-driven); the physics on other soil
grids (8- and 20-layer columns); run-station at other vegetation classes."""

from __future__ import annotations

import copy
import dataclasses
import shutil
import warnings
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import pytest
import xarray as xr
import yaml

from dam.physics.soil_thermal_properties import soil_thermal_properties
from dam.physics.station import run_station
from dam.physics.types import SoilOptions
from dam.sensors import SensorError
from dam.site_run import setup_station
from dam.site_schema import migrate_v1, profile_on_grid
from dam.sites import Site, SiteConfigError, load_site, parse_site_yaml, shipped_site_dir

_run = eqx.filter_jit(run_station)


@pytest.fixture(scope="module")
def bondville() -> Site:
    return load_site("bondville_1998")


def _summer(site: Site, **meta) -> Site:
    """The site with a summer initial profile (the shipped one is for 2 January) and other ``meta`` changes."""
    init = {"soil_temperature_K": [293.0, 291.0, 289.0, 287.0], "soil_moisture": [0.32, 0.33, 0.34, 0.35],
            "soil_layer_thickness_m": [0.1, 0.3, 0.6, 1.0], "skin_temperature_K": 295.0}  # fmt: skip
    return dataclasses.replace(site, meta=dataclasses.replace(site.meta, initial_state=init, **meta))


@pytest.fixture
def doc(bondville) -> dict:
    """The shipped Bondville site.yaml as a mapping (format 2)."""
    return copy.deepcopy(bondville.meta.to_yaml_dict())


def _set(path: str, value):
    """An edit of the site.yaml mapping: set the dotted key ``path`` (None removes it)."""

    def edit(d):
        *parents, last = path.split(".")
        for p in parents:
            d = d.setdefault(p, {})
        if value is None:
            d.pop(last, None)
        else:
            d[last] = value

    return edit


SNOW = {"thickness_m": [0.05, 0.1], "ice_mm": [5.0, 15.0], "liquid_mm": [0.0, 1.0], "temperature_K": [265.0, 270.0]}

BAD_SITE_YAML = [
    (_set("soil_colum", {"layer_thickness_m": [0.1, 0.3]}), r"unknown key 'soil_colum'; did you mean 'soil_column'\?"),
    (_set("vegetation.igbp_type", 0), r"vegetation.igbp_type: Input should be greater than or equal to 1 \(got 0\)"),
    (_set("vegetation.igbp_type", 15), r"vegetation class 15 \(Snow and Ice\) is not supported: .*glacier"),
    (_set("vegetation.igbp_type", 13), r"vegetation class 13 \(Urban and Built-Up\) is not supported"),
    (_set("soil.stas_type", 14), r"soil class 14 \(WATER\) is not supported: .*replaces it by 7"),
    (_set("soil.stas_type", 20), r"soil.stas_type: STAS class 20 is outside 1..19"),
    (_set("soil.stas_type", [8, 8]), r"soil.stas_type has 2 classes for 4 soil layers"),
    (_set("parameters", {"soil": {"SMCMAX": 0.4}}), r"soil.SMCMAX is not a Noah-MP table field; did you"),
    (
        _set("parameters", {"vegetation": {"DEN": 3.0}}),
        r"parameters.vegetation.DEN is a Noah-MP table field that "
        "dam's physics does not use",
    ),
    (_set("parameters", {"soil": {"MAXSMC": 0.1}}), r"soil layer 1 .*need WLTSMC < REFSMC <= MAXSMC"),
    (
        _set("parameters", {"soil": {"SATDK": -2e-6}}),
        r"parameters.soil.SATDK = -2e-06 is outside the allowed range "
        r"\(0, 0.01\] m s-1",
    ),
    (_set("parameters", {"soil": {"BB": [5.0, 6.0, 7.0]}}), r"parameters.soil.BB: 3 values for 4 soil layers"),
    (
        _set("initial_state.soil_temperature_K", [266.0, 274.0, 277.0]),
        r"initial_state: soil_temperature_K has 3 "
        "values for the 4 layers of soil_layer_thickness_m",
    ),
    (
        _set("initial_state.soil_temperature_K", [266.0, 274.0, 277.0, 400.0]),
        r"soil_temperature_K\[3\] = 400.0 is "
        r"outside \[150, 350\] K",
    ),
    (
        _set("initial_state.soil_moisture", [0.5, 0.3, 0.3, 0.3]),
        r"initial_state.soil_moisture: 0.5 m3 m-3 in model "
        r"layer 1 exceeds its porosity MAXSMC = 0.464 \(allowed \[0, MAXSMC\]\)",
    ),
    (_set("initial_state.soil_moisture", [1.5, 0.3, 0.3, 0.3]), r"soil_moisture\[0\] = 1.5 is outside \[0, 1\]"),
    (
        _set("initial_state.soil_liquid", [0.3, 0.2, 0.2, 0.2]),
        r"soil_liquid\[0\] = 0.3 exceeds soil_moisture\[0\] = "
        r"0.298 \(liquid is part of the total water; allowed \[0, soil_moisture\]\)",
    ),
    (
        _set("initial_state.snow_layers", {**SNOW, "ice_mm": [0.0, 0.0], "liquid_mm": [0.0, 0.0]}),
        r"snow_layers layer 0 holds no water \(ice_mm \+ liquid_mm = 0\): a snow layer needs snow",
    ),
    (
        _set("initial_state.snow_layers", SNOW),
        r"snow_water_equivalent_mm = 1 differs from the sum over snow_layers "
        r"\(21\)",
    ),
    (
        _set("initial_state.snow_layers", {**SNOW, "temperature_K": [265.0, 275.0]}),
        r"snow_layers.temperature_K\[1\] ="
        r" 275.0 must lie in \[150, 273.16\] K",
    ),
    (_set("initial_state.snow_layers", {**SNOW, "ice_mm": [5.0]}), r"snow_layers.ice_mm has 1 values for 2 layers"),
    (
        _set("initial_state.snow_depth_m", 0.0),
        r"snow_water_equivalent_mm = 1.0 and snow_depth_m = 0.0: snow needs "
        r"both > 0",
    ),
    (_set("initial_state.canopy_water_mm", 0.1), r"unknown key 'initial_state.canopy_water_mm'"),
    (
        _set("initial_state.soil_layer_thickness_m", [0.1, 0.3, 0.6, 0.5]),
        r"the profile reaches 1.5 m but the soil "
        "column is 2 m deep",
    ),
    (
        _set("soil_column", {"layer_thickness_m": [0.05, 0.1], "bottom_depth_m": 8.0}),
        r"soil_moisture: a "
        r"sensor at 0.2 m lies below the soil column \(0.15 m deep; allowed \[0, 0.15\] m\)",
    ),
    (_set("soil_column.bottom_depth_m", 1.5), r"bottom_depth_m = 1.5 m must lie below the soil column \(2 m deep\)"),
    (
        _set("soil_column", {"layer_thickness_m": [0.5, 2.0, 3.0, 4.0]}),
        r"bottom_depth_m = 8 m \(Noah-MP's ZBOT_DATA; "
        r"give bottom_depth_m\) must lie below the soil column \(9.5 m deep\)",
    ),
    (_set("soil_column.layer_thickness_m", [2.0]), r"1 layer\(s\): the soil column needs at least 2 layers"),
    (_set("soil_moisture_measures", ["liquid", "total"]), r"soil_moisture_measures: 2 values for 3 sensors"),
    (_set("sensor_footprint_m", {"soil_moisture": -0.1}), r"footprints -0.1 must be >= 0 m"),
    (_set("name", "../../x"), r"name: String should match pattern"),
    (_set("name", "/abs/path"), r"name: String should match pattern"),
    (_set("format_version", 3), r"format_version 3 is not supported"),
    (_set("licence", None), r"missing required key 'licence'"),
]


@pytest.mark.parametrize(("edit", "match"), BAD_SITE_YAML)
def test_bad_site_yaml_is_refused_naming_the_key(doc, edit, match):
    edit(doc)
    with pytest.raises(SiteConfigError, match=match) as info:
        parse_site_yaml(doc)
    assert str(info.value).startswith("site.yaml: ")
    assert isinstance(info.value, ValueError)


def test_bad_site_yaml_from_a_folder_names_the_file(tmp_path, bondville):
    folder = tmp_path / "bv"
    shutil.copytree(shipped_site_dir("bondville_1998"), folder)
    d = yaml.safe_load((folder / "site.yaml").read_text())
    d["vegetation"]["igbp_typ"] = 4
    (folder / "site.yaml").write_text(yaml.safe_dump(d))
    with pytest.raises(SiteConfigError, match=rf"{folder}/site.yaml: unknown key 'vegetation.igbp_typ'; did you mean "
                       "'igbp_type'"):  # fmt: skip
        load_site(folder)


def test_a_site_built_in_code_obeys_the_schema(bondville):
    with pytest.raises(SiteConfigError, match="initial_state: soil_liquid needs soil_moisture"):
        dataclasses.replace(bondville.meta, initial_state={"soil_liquid": [0.1, 0.1, 0.1, 0.1]})


def test_grids_given_at_setup_are_checked_before_computation(bondville):
    with pytest.raises(SensorError, match="soil_moisture sensor at depth 0.6 m lies below the soil column"):
        setup_station(bondville, start="1998-06-01", end="1998-06-02", layer_bottoms_m=[0.1, 0.3])
    with pytest.raises(ValueError, match="the profile reaches 2 m but the soil column is 3 m deep"):
        setup_station(bondville, start="1998-06-01", end="1998-06-02", layer_bottoms_m=[0.1, 0.4, 1.0, 3.0])
    with pytest.raises(ValueError, match=r"must lie below the soil column \(9 m deep\)"):
        setup_station(bondville, start="1998-06-01", end="1998-06-02", layer_bottoms_m=[0.1, 0.4, 1.0, 9.0])


def test_format_1_folders_still_load(tmp_path, bondville):
    """A format-1 site.yaml (as dam wrote them before) loads; values format 2 does not take warn."""
    v1 = copy.deepcopy(bondville.meta.to_yaml_dict())
    v1["format_version"] = 1
    column = v1.pop("soil_column")
    v1["initial_state"].update(deep_soil_temperature_K=column["bottom_temperature_K"], deep_soil_depth_m=8.0,
                               canopy_water_mm=0.01, leaf_area_index=2.0)  # fmt: skip
    with pytest.warns(UserWarning) as record:
        meta = parse_site_yaml(v1)
    messages = " ".join(str(w.message) for w in record)
    assert "initial_state.canopy_water_mm is not used" in messages and "leaf_area_index" in messages
    assert meta == bondville.meta
    assert migrate_v1({"initial_state": {"deep_soil_temperature_K": 280.0}})["soil_column"] == {
        "bottom_temperature_K": 280.0
    }


def test_overrides_and_full_initial_state_reach_the_model(bondville):
    """Every initial-state key is used (snow layers: their total SWE and depth, for the bulk snowpack), and the
    table overrides reach the parameters, per layer where given."""
    init = {
        "soil_temperature_K": [270.0, 272.0, 275.0, 278.0],
        "soil_moisture": [0.30, 0.31, 0.32, 0.33],
        "soil_liquid": [0.10, 0.31, 0.32, 0.33],
        "vegetation_temperature_K": 268.0,
        "ground_temperature_K": 267.0,
        "canopy_air_temperature_K": 269.0,
        "canopy_vapour_pressure_Pa": 400.0,
        "canopy_liquid_mm": 0.02,
        "canopy_ice_mm": 0.05,
        "snow_age": 0.3,
        "snow_layers": SNOW,
    }
    meta = dataclasses.replace(
        bondville.meta, initial_state=init,
        parameters={"soil": {"SATDK": [4e-6, 3e-6, 2e-6, 1e-6]}, "vegetation": {"VCMX25": 70.0}},
    )  # fmt: skip
    s = setup_station(dataclasses.replace(bondville, meta=meta), start="1998-01-05", end="1998-01-06")
    st = s.state0
    np.testing.assert_array_equal(np.asarray(st.soil.t), init["soil_temperature_K"])
    np.testing.assert_array_equal(np.asarray(st.soil.smc), init["soil_moisture"])
    np.testing.assert_array_equal(np.asarray(st.soil.sh2o), init["soil_liquid"])
    e = st.energy
    assert (float(e.t_veg), float(e.t_grd), float(e.t_canair), float(e.e_canair)) == (268.0, 267.0, 269.0, 400.0)
    assert (float(st.canopy.liq_mm), float(st.canopy.ice_mm)) == (0.02, 0.05)
    assert float(st.snow.swe_mm) == 21.0 and float(st.snow.depth_m) == pytest.approx(0.15) and float(st.snow.age) == 0.3
    assert meta.initial_state.snow_layers.temperature_K == [265.0, 270.0]  # kept for the multi-layer snowpack
    np.testing.assert_array_equal(np.asarray(s.params.soil.dksat), [4e-6, 3e-6, 2e-6, 1e-6])
    assert float(s.params.surface.stomata.vcmax25) == 70.0
    assert float(s.params.soil.tbot) == 285.0 and s.grid.zbot == -8.0


def test_profiles_map_onto_other_grids():
    bottoms = np.array([0.1, 0.4, 1.0, 2.0])
    values = np.array([0.30, 0.25, 0.20, 0.15])
    np.testing.assert_array_equal(profile_on_grid(bottoms, values, bottoms), values)  # identity, bit for bit
    split = np.array([0.05, 0.1, 0.25, 0.4, 0.7, 1.0, 1.5, 2.0])
    np.testing.assert_array_equal(profile_on_grid(bottoms, values, split), np.repeat(values, 2))
    coarse = profile_on_grid(split, np.repeat(values, 2), [0.4, 2.0])
    np.testing.assert_allclose(coarse, [(0.1 * 0.30 + 0.3 * 0.25) / 0.4, (0.6 * 0.20 + 1.0 * 0.15) / 1.6])
    # averaging conserves the water of a moisture profile
    fine = np.linspace(0.4, 0.1, 20)
    fb = np.cumsum(np.full(20, 0.1))
    assert np.sum(profile_on_grid(fb, fine, bottoms) * np.diff(np.r_[0, bottoms])) == pytest.approx(np.sum(fine * 0.1))


def test_per_sensor_water_and_footprints(bondville):
    meta = dataclasses.replace(bondville.meta, soil_moisture_measures=("liquid", "total", "total"),
                               sensor_footprint_m={"soil_moisture": (0.0, 0.3, 0.0)})  # fmt: skip
    site = dataclasses.replace(bondville, meta=meta)
    np.testing.assert_array_equal(site.sees_liquid(), [True, False, False])
    times = bondville.forcing.time.values[:3]
    model = xr.Dataset(
        {"soil_moisture": (("time", "layer"), np.tile([0.4, 0.3, 0.2, 0.1], (3, 1))),
         "soil_liquid_water": (("time", "layer"), np.tile([0.1, 0.1, 0.1, 0.1], (3, 1)))},
        coords={"time": times},
    )  # fmt: skip
    mapping, at = site.model_at_sensors(model, "soil_moisture", [0.1, 0.4, 1.0, 2.0])
    assert at.sees.values.tolist() == ["liquid", "total", "total"]
    np.testing.assert_allclose(at.values[0], [0.1, mapping.weights[1] @ [0.4, 0.3, 0.2, 0.1], 0.3 - 0.1 * 0.35 / 0.45])
    # the 30 cm footprint around 20 cm averages the piecewise-linear profile over 5-35 cm (nodes 5, 25, 70 cm)
    assert mapping.footprint_m == (0.0, 0.3, 0.0)
    np.testing.assert_allclose(mapping.weights[1], [0.1 / 0.3, (0.2 - 0.01 / 0.9) / 0.3, 0.01 / 0.9 / 0.3, 0.0])


# --------------------------------------------------------------------------------------------------- other grids


def _water_and_energy_residuals(setup, states, fluxes):
    """Per-step water (m) and soil-column heat (J m-2) budget residuals and the surface energy residual (W m-2)."""
    dt = setup.options.dt_s
    dz = np.asarray(setup.grid.dz)
    s0 = setup.state0
    smc = np.concatenate([np.asarray(s0.soil.smc)[None], states.soil.smc])
    store = (smc * dz).sum(axis=1) * 1000.0
    store = store + np.r_[float(s0.canopy.liq_mm + s0.canopy.ice_mm), states.canopy.liq_mm + states.canopy.ice_mm]
    store = store + np.r_[float(s0.snow.swe_mm), states.snow.swe_mm]
    precip = (fluxes.rain_mmps + fluxes.snowfall_mmps) * dt
    et = (fluxes.evap_canopy_mmps + fluxes.transpiration_mmps + fluxes.evap_ground_mmps) * dt
    runoff = fluxes.runoff_surface_mm + fluxes.runoff_subsurface_mm
    water = (precip - et - runoff - np.diff(store) - fluxes.discarded_mm) / 1000.0
    e = fluxes.energy
    surface = fluxes.sw_abs_wm2 + e.precip_adv - e.lw_net - e.sh - e.lh - e.g - e.canopy_storage
    # soil heat: sum C dz dT = (G + H_bottom - L) dt with C from the start-of-step state (the soil heat step's)
    prev = jax.tree_util.tree_map(lambda a, b: np.concatenate([np.asarray(a)[None], b[:-1]]), s0.soil, states.soil)
    cap, _, _ = soil_thermal_properties(prev, setup.params.soil, setup.grid, SoilOptions().const, dt)
    t = np.concatenate([np.asarray(s0.soil.t)[None], states.soil.t])
    heat = (np.asarray(cap) * dz * np.diff(t, axis=0)).sum(axis=1)
    heat = heat - (e.g + fluxes.heat_bottom_wm2 - fluxes.latent_heat_soil_wm2) * dt
    scale = (np.asarray(cap) * dz * t[:-1]).sum(axis=1)
    return water, surface, heat / scale


def _run_checked(setup):
    """Run a set-up and check it: finite, within physical bounds, water and energy budgets closed per step."""
    _, (states, fluxes) = _run(setup.state0, setup.forcing, setup.params, setup.grid, setup.options)
    states, fluxes = jax.tree_util.tree_map(np.asarray, (states, fluxes))
    assert all(np.isfinite(x).all() for x in jax.tree_util.tree_leaves((states, fluxes)))
    smcmax = np.asarray(setup.params.soil.smcmax)
    assert (states.soil.sh2o >= 0).all() and (states.soil.sh2o <= states.soil.smc + 1e-12).all()
    assert (states.soil.smc <= smcmax + 1e-9).all() and (200 < states.soil.t).all() and (states.soil.t < 330).all()
    water, surface, heat = _water_and_energy_residuals(setup, states, fluxes)
    assert np.abs(water).max() < 1e-10 and np.abs(surface).max() < 1e-9 and np.abs(heat).max() < 1e-13
    return states, fluxes


def test_tanggula_permafrost_column_conserves_water_and_energy():
    """The shipped Tanggula site runs on its 18-layer, 15.2 m permafrost column at daily steps (root layers, soil
    water, heat and frozen soil on any grid): finite, physical, budgets closed to round-off, permafrost kept."""
    site = load_site("tanggula_forcing_only")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the NROOT note for a non-standard grid
        setup = setup_station(site, end="2007-07-01")
    assert setup.grid.n_layers == 18 and setup.layer_bottoms_m[-1] == pytest.approx(15.2)
    assert setup.grid.zbot == -20.0 and float(setup.params.soil.tbot) == 272.43
    liquid = np.asarray(site.meta.initial_state.soil_liquid)  # the file's 20-layer profile
    np.testing.assert_array_equal(np.asarray(setup.state0.soil.sh2o)[1:], liquid[3:])
    assert float(setup.state0.soil.sh2o[0]) == pytest.approx((liquid[:3] * [0.045, 0.046, 0.075]).sum() / 0.166)
    states, _ = _run_checked(setup)
    ice = states.soil.smc - states.soil.sh2o
    assert ice[:, 6:12].min() > 0.05  # the permafrost stays frozen at 1.5-5 m through the spring
    assert np.abs(np.diff(states.soil.t[:, 0])).max() > 1.0  # the top layer responds to the weather


@pytest.mark.slow  # 1.5 min; the Tanggula test keeps a deep non-standard column (18 layers, 15.2 m) in the default set
def test_noahpys_twenty_layer_column_at_half_hourly_steps(bondville):
    """NoahPy's 20-layer column (4.5 cm top layer, 15.2 m) under Bondville's half-hourly forcing, from Noah-MP's
    default initial column: finite, physical, budgets closed to round-off."""
    tanggula = load_site("tanggula_forcing_only").meta.initial_state.soil_layer_thickness_m
    meta = dataclasses.replace(bondville.meta, initial_state=None,
                               soil_column={"layer_thickness_m": tanggula, "bottom_depth_m": 20.0})  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the NROOT note for a non-standard grid
        setup = setup_station(dataclasses.replace(bondville, meta=meta), start="1998-06-01", end="1998-06-06")
    assert setup.grid.n_layers == 20 and int(setup.params.roots.n_root) == 3
    np.testing.assert_array_equal(np.asarray(setup.state0.soil.smc), np.asarray(setup.params.soil.smcref))
    states, fluxes = _run_checked(setup)
    assert np.abs(np.diff(states.soil.t[:, 0])).max() > 0.1 and fluxes.transpiration_mmps.max() > 0


@pytest.mark.slow  # 2 min; other soil grids stay in the default set (20-layer column, Tanggula)
def test_an_eight_layer_split_of_bondville_matches_the_four_layer_column(bondville):
    """Splitting Noah-MP's layers 2-4 into 7 (8 layers; same soil and initial profile, NROOT 6 keeps the 1 m root
    zone) changes ten summer days only by the discretisation (measured: LH/SH/G RMSE 4.0/4.3/3.6 W m-2, column
    water 0.56 mm, sensor temperatures 0.78 K, moisture 0.004): nothing in the set-up or the physics assumes four
    layers. (Halving the top layer as well moves LH by 13 W m-2 RMSE: Noah-MP's soil evaporation and ground heat
    coupling depend on the top layer's thickness.)"""
    start, end = "1998-06-01", "1998-06-10"
    base = setup_station(_summer(bondville), start=start, end=end)
    split = [0.1, 0.2, 0.3, 0.4, 0.6, 1.0, 1.5, 2.0]
    fine = setup_station(_summer(bondville, parameters={"vegetation": {"NROOT": 6}}), start=start, end=end,
                         layer_bottoms_m=split)  # fmt: skip
    assert int(fine.params.roots.n_root) == 6 and fine.grid.n_layers == 8
    np.testing.assert_array_equal(
        np.asarray(fine.state0.soil.smc), np.asarray(base.state0.soil.smc)[[0, 1, 1, 1, 2, 2, 3, 3]]
    )
    (s4, f4), (s8, f8) = _run_checked(base), _run_checked(fine)
    rmse = lambda a, b: np.sqrt(np.mean((a - b) ** 2, axis=0))  # noqa: E731
    for name in ("lh", "sh", "g"):
        assert rmse(getattr(f4.energy, name), getattr(f8.energy, name)) < 6.0, name
    dz4, dz8 = np.asarray(base.grid.dz), np.asarray(fine.grid.dz)
    assert np.abs((s4.soil.smc * dz4).sum(1) - (s8.soil.smc * dz8).sum(1)).max() < 1.5e-3  # m of water
    for var, moisture, tol in (("soil_temperature", False, 1.2), ("soil_moisture", True, 0.006)):
        at4 = base.site.sensor_mapping(var, base.layer_bottoms_m).apply(s4.soil.sh2o if moisture else s4.soil.t)
        at8 = fine.site.sensor_mapping(var, fine.layer_bottoms_m).apply(s8.soil.sh2o if moisture else s8.soil.t)
        assert rmse(at4, at8).max() < tol, var


# --------------------------------------------------------------------------------------------------- classes


# 1 and 4 share one compiled run; 7 (NROOT 4) compiles another (0.75 min) and 16 adds a gradient (5.5 min): slow
@pytest.mark.parametrize(
    "igbp", [1, 4, pytest.param(7, marks=pytest.mark.slow), pytest.param(16, marks=pytest.mark.slow)]
)
def test_the_station_model_runs_at_other_vegetation_classes(bondville, igbp):
    s = setup_station(_summer(bondville, vegetation_type_igbp=igbp), start="1998-06-01", end="1998-06-03")
    _, (states, fluxes) = _run(s.state0, s.forcing, s.params, s.grid, s.options)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves((states, fluxes)))
    transpiration = np.asarray(fluxes.transpiration_mmps)
    assert (transpiration.max() > 0) == (igbp != 16)  # barren land has no canopy
    if igbp == 16:  # no canopy (HVT = Z0MVT = 0): the discarded vegetated tile must not put NaN into gradients
        frc = jax.tree_util.tree_map(lambda x: x[:48], s.forcing)

        def top_moisture(bexp):
            params = eqx.tree_at(lambda p: p.soil.bexp, s.params, bexp)
            return run_station(s.state0, frc, params, s.grid, s.options)[1][0].soil.smc[:, 0].mean()

        grad = np.asarray(eqx.filter_jit(jax.grad(top_moisture))(s.params.soil.bexp))
        assert np.isfinite(grad).all() and grad[0] != 0.0


def _bondville_as(tmp_path: Path, igbp: int) -> Path:
    """A copy of the shipped Bondville site folder with another vegetation class."""
    folder = tmp_path / f"igbp{igbp}"
    shutil.copytree(shipped_site_dir("bondville_1998"), folder)
    d = yaml.safe_load((folder / "site.yaml").read_text())
    d["name"], d["vegetation"]["igbp_type"] = f"igbp{igbp}_test", igbp
    (folder / "site.yaml").write_text(yaml.safe_dump(d))
    return folder


@pytest.mark.slow  # 1 min of compiling; the default set runs IGBP 4 above and the CLI at Bondville (test_station)
def test_run_station_cli_at_a_deciduous_broadleaf_site(tmp_path):
    from dam.cli import main

    out = tmp_path / "dbf.nc"
    rc = main(["run-station", str(_bondville_as(tmp_path, 4)), "--output", str(out), "--start", "1998-07-01",
               "--end", "1998-07-02", "--spinup", "0", "--quiet"])  # fmt: skip
    assert rc == 0
    with xr.open_dataset(out) as ds:
        assert int(ds.attrs["vegetation_type_igbp"]) == 4 and np.isfinite(ds["latent_heat_flux"].values).all()


def test_run_station_cli_refuses_a_glacier_site(tmp_path, capsys):
    from dam.cli import main

    with pytest.raises((SystemExit, ValueError)) as info:
        rc = main(["run-station", str(_bondville_as(tmp_path, 15)), "--output", str(tmp_path / "ice.nc"), "--quiet"])
        raise SystemExit(rc)
    assert "glacier" in capsys.readouterr().err + str(info.value)
    assert not (tmp_path / "ice.nc").exists()


def test_texture_gives_the_soil_class(doc):
    doc["soil"] = {"texture": {"sand": 0.1, "clay": 0.35}, "colour": 4}
    meta = parse_site_yaml(doc)
    assert meta.schema.soil_classes() == (8,) * 4  # silty clay loam, as the shipped stas_type


def test_docs_list_every_site_yaml_key_and_override():
    from dam.site_schema import reference_rows
    from dam.tables import FIELDS

    text = (Path(__file__).resolve().parents[1] / "docs" / "site_format.md").read_text()
    for key, _, _ in reference_rows():
        assert f"| `{key}` |" in text, key
    for fields in FIELDS.values():
        for name in fields:
            assert f"`{name}`" in text or f"`{name[:4]}JAN`" in text, name
