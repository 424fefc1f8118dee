"""The shipped Noah-MP v5.2 tables (dam/data/noahmp_tables.yaml): every row against the values the Fortran
reference runs used, every class building valid parameters, and overrides of every field dam uses."""

from __future__ import annotations

import json
import math

import jax
import numpy as np
import pytest

from dam import parameters as P
from dam.tables import (
    FIELDS,
    MONTHS,
    NO_CANOPY,
    UNSUPPORTED_SOIL,
    UNSUPPORTED_VEGETATION,
    TableError,
    noahmp_tables,
    site_tables,
    usda_soil_class,
)

# Table name -> (section of setup.json "parameters_used", Noah-MP name[, index into an array value]).
VEGETATION_NOAHMP = {
    "CH2OP": ("water", "CanopyLiqHoldCap"), "DLEAF": ("energy", "LeafDimLength"),
    "Z0MVT": ("energy", "RoughLenMomVeg"), "HVT": ("energy", "HeightCanopyTop"), "HVB": ("energy", "HeightCanopyBot"),
    "DEN": ("energy", "TreeDensity"), "RC": ("energy", "TreeCrownRadius"), "MFSNO": ("water", "SnowMeltFac"),
    "SCFFAC": ("water", "SnowCoverFac"), "CBIOM": ("energy", "HeatCapacCanFac"),
    "RHOL_VIS": ("energy", "ReflectanceLeaf", 0), "RHOL_NIR": ("energy", "ReflectanceLeaf", 1),
    "RHOS_VIS": ("energy", "ReflectanceStem", 0), "RHOS_NIR": ("energy", "ReflectanceStem", 1),
    "TAUL_VIS": ("energy", "TransmittanceLeaf", 0), "TAUL_NIR": ("energy", "TransmittanceLeaf", 1),
    "TAUS_VIS": ("energy", "TransmittanceStem", 0), "TAUS_NIR": ("energy", "TransmittanceStem", 1),
    "XL": ("energy", "CanopyOrientIndex"), "CWPVT": ("energy", "CanopyWindExtFac"),
    "C3PSN": ("biochem", "PhotosynPathC3"), "KC25": ("energy", "Co2MmConst25C"), "AKC": ("energy", "Co2MmConstQ10"),
    "KO25": ("energy", "O2MmConst25C"), "AKO": ("energy", "O2MmConstQ10"), "AVCMX": ("biochem", "CarboxylRateMaxQ10"),
    "LTOVRC": ("biochem", "TurnoverCoeffLeafVeg"), "DILEFC": ("biochem", "LeafDeathTempCoeffVeg"),
    "DILEFW": ("biochem", "LeafDeathWaterCoeffVeg"), "RMF25": ("biochem", "RespMaintLeaf25C"),
    "SLA": ("biochem", "LeafAreaPerMass1side"), "FRAGR": ("biochem", "GrowthRespFrac"),
    "TMIN": ("biochem", "TemperatureMinPhotosyn"), "VCMX25": ("biochem", "CarboxylRateMax25C"),
    "TDLEF": ("biochem", "TemperaureLeafFreeze"), "BP": ("energy", "ConductanceLeafMin"),
    "MP": ("biochem", "SlopeConductToPhotosyn"), "QE25": ("biochem", "QuantumEfficiency25C"),
    "RMS25": ("biochem", "RespMaintStem25C"), "RMR25": ("biochem", "RespMaintRoot25C"),
    "ARM": ("biochem", "RespMaintQ10"), "FOLNMX": ("biochem", "NitrogenConcFoliageMax"),
    "WDPOOL": ("biochem", "WoodPoolIndex"), "WRRAT": ("biochem", "WoodToRootRatio"),
    "MRP": ("biochem", "MicroRespCoeff"), "NROOT": ("water", "NumSoilLayerRoot"),
    "RGL": ("energy", "RadiationStressFac"), "RS": ("energy", "ResistanceStomataMin"),
    "HS": ("energy", "VaporPresDeficitFac"), "TOPT": ("energy", "AirTempOptimTransp"),
    "RSMAX": ("energy", "ResistanceStomataMax"), "RTOVRC": ("biochem", "TurnoverCoeffRootVeg"),
    "RSWOODC": ("biochem", "WoodRespCoeff"), "BF": ("biochem", "WoodAllocFac"),
    "WSTRC": ("biochem", "WaterStressCoeff"), "LAIMIN": ("biochem", "LeafAreaIndexMin"),
    "XSAMIN": ("biochem", "StemAreaIndexMin"),
    **{f"LAI_{m}": ("energy", "LeafAreaIndexMon", i) for i, m in enumerate(MONTHS)},
    **{f"SAI_{m}": ("energy", "StemAreaIndexMon", i) for i, m in enumerate(MONTHS)},
}  # fmt: skip
SOIL_NOAHMP = {
    "BB": "SoilExpCoeffB", "DRYSMC": "SoilMoistureDry", "MAXSMC": "SoilMoistureSat", "REFSMC": "SoilMoistureFieldCap",
    "SATPSI": "SoilMatPotentialSat", "SATDK": "SoilWatConductivitySat", "SATDW": "SoilWatDiffusivitySat",
    "WLTSMC": "SoilMoistureWilt", "BVIC": "InfilFacVic", "AXAJ": "TensionWatDistrInfl", "BXAJ": "TensionWatDistrShp",
    "XXAJ": "FreeWatDistrShp", "BDVIC": "InfilFacDynVic", "BBVIC": "InfilHeteroDynVic", "GDVIC": "InfilCapillaryDynVic",
}  # fmt: skip
GLOBAL_NOAHMP = {
    "TIMEAN": ("water", "GridTopoIndex"), "FSATMX": ("water", "SoilSfcSatFracMax"), "ROUS": ("water", "SpecYieldGw"),
    "CMIC": ("water", "MicroPoreContent"), "SSI": ("water", "SnowLiqHoldCap"),
    "SNOW_RET_FAC": ("water", "SnowLiqReleaseFac"), "SNOW_EMIS": ("energy", "EmissivitySnow"),
    "SNLIQMAXFRAC": ("water", "SnowLiqFracMax"), "SWEMAXGLA": ("water", "SnoWatEqvMaxGlacier"),
    "SNOWDEN_MAX": ("water", "SnowfallDensityMax"), "RSURF_SNOW": ("energy", "ResistanceSnowSfc"),
    "Z0SNO": ("energy", "RoughLenMomSnow"), "SWEMX": ("water", "SnowMassFullCoverOld"),
    "TAU0": ("energy", "SnowAgeFacBats"), "GRAIN_GROWTH": ("energy", "SnowGrowVapFacBats"),
    "EXTRA_GROWTH": ("energy", "SnowGrowFrzFacBats"), "DIRT_SOOT": ("energy", "SnowSootFacBats"),
    "BATS_COSZ": ("energy", "SolarZenithAdjBats"), "BATS_VIS_NEW": ("energy", "FreshSnoAlbVisBats"),
    "BATS_NIR_NEW": ("energy", "FreshSnoAlbNirBats"), "BATS_VIS_AGE": ("energy", "SnoAgeFacDifVisBats"),
    "BATS_NIR_AGE": ("energy", "SnoAgeFacDifNirBats"), "BATS_VIS_DIR": ("energy", "SzaFacDirVisBats"),
    "BATS_NIR_DIR": ("energy", "SzaFacDirNirBats"), "CLASS_ALB_REF": ("energy", "SnowAlbRefClass"),
    "CLASS_SNO_AGE": ("energy", "SnowAgeFacClass"), "CLASS_ALB_NEW": ("energy", "SnowAlbFreshClass"),
    "C2_SNOWCOMPACT": ("water", "SnowCompactBurdenFac"), "C3_SNOWCOMPACT": ("water", "SnowCompactAgingFac1"),
    "C4_SNOWCOMPACT": ("water", "SnowCompactAgingFac2"), "C5_SNOWCOMPACT": ("water", "SnowCompactAgingFac3"),
    "DM_SNOWCOMPACT": ("water", "SnowCompactAgingMax"), "ETA0_SNOWCOMPACT": ("water", "SnowViscosityCoeff"),
    "SNOWCOMPACTm_AR24": ("water", "SnowCompactmAR24"), "SNOWCOMPACTb_AR24": ("water", "SnowCompactbAR24"),
    "SNOWCOMPACT_P1_AR24": ("water", "SnowCompactP1AR24"), "SNOWCOMPACT_P2_AR24": ("water", "SnowCompactP2AR24"),
    "SNOWCOMPACT_P3_AR24": ("water", "SnowCompactP3AR24"), "SNOWCOMPACT_Up_AR24": ("water", "BurdenFacUpAR24"),
    "SCFm1_AR25": ("water", "SnowCoverM1AR25"), "SCFm2_AR25": ("water", "SnowCoverM2AR25"),
    "SCfac1_AR25": ("water", "SnowCoverFac1AR25"), "SCfac2_AR25": ("water", "SnowCoverFac2AR25"),
    "RSURF_EXP": ("energy", "ResistanceSoilExp"), "WSLMAX": ("water", "WaterStorageLakeMax"),
    "PSIWLT": ("water", "SoilMatPotentialWilt"), "Z0SOIL": ("energy", "RoughLenMomSoil"),
    "Z0LAKE": ("energy", "RoughLenMomLake"), "WCAP": ("water", "WetlandCapMax"),
}  # fmt: skip


def _used(pu: dict, spec: tuple):
    value = pu[spec[0]][spec[1]]
    if isinstance(value, dict):
        value = value["values_fortran_order"]
    return value[spec[2]] if len(spec) == 3 else value


@pytest.fixture(scope="module", params=["bondville", "bondville_cold"])
def fortran_setup(request, full_reference_dir, cold_reference_dir):
    folder = {"bondville": full_reference_dir, "bondville_cold": cold_reference_dir}[request.param]
    return json.loads((folder / "setup.json").read_text())


def test_shipped_rows_equal_the_reference_runs_table_rows(fortran_setup):
    """The table rows each Fortran reference run read (setup.json ``table_rows``) are the shipped ones, field by
    field."""
    s, t = fortran_setup, noahmp_tables()
    rows = s["table_rows"]
    veg = rows[f"NoahmpTable.TBL noahmp_modis_parameters, column {s['vegetation_type']}"]
    soil = rows[f"NoahmpTable.TBL noahmp_soil_stas_parameters, column {s['soil_type']}"]
    assert {k: v for k, v in t["modis_vegetation"][s["vegetation_type"]].items() if k != "name"} == veg
    assert {k: v for k, v in t["soil_stas"][s["soil_type"]].items() if k != "name"} == soil
    assert t["radiation"] == rows["noahmp_rad_parameters"]
    assert t["global"] == rows["noahmp_global_parameters"]
    assert t["general"] == rows["noahmp_general_parameters"]


def test_shipped_rows_equal_what_the_fortran_model_held(full_reference_dir):
    """Every field of the run's MODIS row, STAS row, soil colour and the global and general parameters as the
    Fortran model holds them (setup.json ``parameters_used``, dumped inside the model at step 1) equals the
    shipped value."""
    s = json.loads((full_reference_dir / "setup.json").read_text())
    pu = s["parameters_used"]
    t = noahmp_tables()
    veg = t["modis_vegetation"][s["vegetation_type"]]
    checked = 0
    for name, spec in VEGETATION_NOAHMP.items():
        assert veg[name] == _used(pu, spec), name
        checked += 1
    soil = t["soil_stas"][s["soil_type"]]
    for name, noahmp in SOIL_NOAHMP.items():
        used = _used(pu, ("water", noahmp)) if noahmp in pu["water"] else None
        values = used if isinstance(used, list) else [used] * 4
        assert all(v == soil[name] for v in values), name
        checked += 1
    assert _used(pu, ("energy", "SoilQuartzFrac")) == [soil["QTZ"]] * 4
    colour = s["soil_color"] - 1
    rad = t["radiation"]
    assert _used(pu, ("energy", "AlbedoSoilSat")) == [rad["ALBSAT_VIS"][colour], rad["ALBSAT_NIR"][colour]]
    assert _used(pu, ("energy", "AlbedoSoilDry")) == [rad["ALBDRY_VIS"][colour], rad["ALBDRY_NIR"][colour]]
    for name, noahmp in (("ALBICE", "AlbedoLandIce"), ("ALBLAK", "AlbedoLakeFrz"), ("OMEGAS", "ScatterCoeffSnow"),
                         ("EG", "EmissivitySoilLake")):  # fmt: skip
        assert _used(pu, ("energy", noahmp)) == rad[name], name
    e = pu["energy"]
    assert (e["UpscatterCoeffSnowDir"], e["UpscatterCoeffSnowDif"]) == (rad["BETADS"], rad["BETAIS"])
    assert pu["energy"]["EmissivityIceSfc"] == rad["EICE"]
    for name, spec in GLOBAL_NOAHMP.items():
        assert t["global"][name] == _used(pu, spec), name
        checked += 1
    g, w = t["general"], pu["water"]
    assert (e["SoilHeatCapacity"], w["SoilConductivityRef"], w["SoilInfilFacRef"], w["GroundFrzCoeff"]) == (
        g["CSOIL_DATA"], g["REFDK_DATA"], g["REFKDT_DATA"], g["FRZK_DATA"])  # fmt: skip
    assert (w["SoilDrainSlope"], e["ZilitinkevichCoeff"]) == (g["SLOPE_DATA"][0], g["CZIL_DATA"])
    assert s["noahmp_domain_at_step1"]["DepthSoilTempBottom"] == g["ZBOT_DATA"]
    assert checked == len(VEGETATION_NOAHMP) + len(SOIL_NOAHMP) + len(GLOBAL_NOAHMP)


def test_tables_are_complete_with_provenance():
    t = noahmp_tables()
    assert sorted(t["modis_vegetation"]) == list(range(1, 21))
    assert sorted(t["soil_stas"]) == list(range(1, 20))
    assert {len(t["radiation"][k]) for k in ("ALBSAT_VIS", "ALBSAT_NIR", "ALBDRY_VIS", "ALBDRY_NIR")} == {8}
    veg_fields = {k for k in t["modis_vegetation"][1] if k != "name"}
    assert all({k for k in row if k != "name"} == veg_fields for row in t["modis_vegetation"].values())
    assert veg_fields == set(VEGETATION_NOAHMP) | {"AQE"}  # AQE is read by no Noah-MP routine
    assert all(set(row) - {"name"} == set(SOIL_NOAHMP) | {"QTZ"} for row in t["soil_stas"].values())
    p = t["provenance"]
    assert p["commit"] == "9fbe672420f4468e7d78aecfd10626927ecc8156" and p["file"] == "parameters/NoahmpTable.TBL"
    assert t["modis_vegetation"][4]["name"] == "Deciduous Broadleaf Forest"
    assert t["soil_stas"][19]["name"] == "WHITE SAND"


def _desc(veg: int, soil: int, n_layers: int = 4, overrides=None) -> P.SiteDescription:
    return P.SiteDescription(vegetation_type=veg, soil_types=(soil,) * n_layers, soil_colour=4, veg_frac_max=0.8,
                             ref_height_m=10.0, tbot_k=285.0, latitude_deg=45.0,
                             overrides=overrides or {})  # fmt: skip


def _finite(tree) -> bool:
    return all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(tree))


@pytest.mark.parametrize("veg", range(1, 21))
def test_every_vegetation_class_builds_valid_parameters(veg):
    if veg in UNSUPPORTED_VEGETATION:
        with pytest.raises(TableError, match=f"vegetation class {veg} .* is not supported: "):
            P.station_params(_desc(veg, 8))
        return
    params = P.station_params(_desc(veg, 8))
    assert _finite(params)
    row = noahmp_tables()["modis_vegetation"][veg]
    assert float(params.surface.canopy_top_height) == row["HVT"]
    np.testing.assert_array_equal(np.asarray(params.phenology.lai_monthly), [row[f"LAI_{m}"] for m in MONTHS])
    assert 1 <= P.n_root_layers(_desc(veg, 8)) <= 4


@pytest.mark.parametrize("soil", range(1, 20))
def test_every_soil_class_builds_valid_parameters(soil):
    if soil in UNSUPPORTED_SOIL:
        with pytest.raises(TableError, match="soil class 14 \\(WATER\\) is not supported: .*replaces it by 7"):
            P.station_params(_desc(1, soil))
        return
    s = P.station_params(_desc(1, soil)).soil
    assert _finite(s)
    assert np.all(np.asarray(s.smcwlt) < np.asarray(s.smcref)) and np.all(np.asarray(s.smcref) <= np.asarray(s.smcmax))
    assert np.all(np.asarray(s.bexp) > 0) and np.all(np.asarray(s.dksat) > 0) and np.all(np.asarray(s.psisat) > 0)


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _changed(a, b) -> bool:
    return any(not np.array_equal(x, y) for x, y in zip(_leaves(a), _leaves(b), strict=True))


def _other_value(field, value):
    """A valid value different from ``value`` inside the field's range."""
    lo, hi, _, _ = field.bounds._parts
    if field.bounds.integer:
        return 2 if value != 2 else 3
    for cand in (value * 0.9 if value else 0.5 * min(hi, 1.0), 0.5 * (lo + min(hi, 2 * abs(value) + 1.0))):
        if cand != value and field.bounds.contains(cand):
            return cand
    raise AssertionError(field)


@pytest.mark.parametrize("section", list(FIELDS))
def test_every_accepted_override_reaches_the_parameters(section):
    """Each table field a site may override changes the built parameters (or the root layers): no accepted key
    is silently ignored."""
    base_desc = _desc(4, 8)
    base = P.station_params(base_desc)
    tables = base_desc.tables
    for name, field in FIELDS[section].items():
        if section == "soil":
            value = tables.soil[0][name]
        else:
            value = {"vegetation": tables.vegetation, "radiation": tables.radiation, "global": tables.global_,
                     "general": tables.general}[section][name]  # fmt: skip
        new = [_other_value(field, v) for v in value] if field.shape == "bands" else _other_value(field, value)
        if section == "soil" and name in ("WLTSMC", "REFSMC"):  # keep wilting point < field capacity <= porosity
            new = {"WLTSMC": 0.1, "REFSMC": 0.4}[name]
        desc = _desc(4, 8, overrides={section: {name: new}})
        if name == "NROOT":
            assert P.n_root_layers(desc) == new != P.n_root_layers(base_desc)
            continue
        assert _changed(base, P.station_params(desc)), f"{section}.{name} changed nothing"


def test_per_layer_soil_overrides():
    desc = _desc(4, 8, overrides={"soil": {"SATDK": [1e-5, 5e-6, 2e-6, 1e-6], "MAXSMC": 0.5}})
    s = P.soil_params(desc)
    np.testing.assert_array_equal(np.asarray(s.dksat), [1e-5, 5e-6, 2e-6, 1e-6])
    np.testing.assert_array_equal(np.asarray(s.smcmax), [0.5] * 4)
    assert float(np.asarray(s.bexp)[0]) == noahmp_tables()["soil_stas"][8]["BB"]


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"soil": {"MAXSMCC": 0.4}}, r"parameters.soil.MAXSMCC is not a Noah-MP table field; did you mean 'MAXSMC'"),
        ({"soil": {"DRYSMC": 0.05}}, r"soil.DRYSMC is a Noah-MP table field that dam's physics does not use"),
        ({"vegetation": {"RS": 80.0}}, r"vegetation.RS is a Noah-MP table field that dam's physics does not use"),
        ({"general": {"ZBOT_DATA": -10.0}}, r"ZBOT_DATA is set by the site.yaml key soil_column.bottom_depth_m"),
        ({"soils": {"BB": 4.0}}, r"unknown section 'soils'; did you mean 'soil'"),
        ({"soil": {"SATDK": -1e-6}}, r"parameters.soil.SATDK = -1e-06 is outside the allowed range \(0, 0.01\] m s-1"),
        ({"soil": {"MAXSMC": 0.1}}, r"soil layer 1 .*need WLTSMC < REFSMC <= MAXSMC .* MAXSMC=0.1"),
        ({"soil": {"WLTSMC": [0.1, 0.2, 0.5, 0.1]}}, r"soil layer 3 .*WLTSMC < REFSMC"),
        ({"soil": {"BB": [4.0, 5.0]}}, r"parameters.soil.BB: 2 values for 4 soil layers"),
        ({"vegetation": {"HVB": 30.0}}, r"canopy bottom HVB=30 m lies above its top HVT=16 m"),
        ({"vegetation": {"NROOT": 2.5}}, r"NROOT = 2.5 is outside the allowed range an integer in \[1, 1000\]"),
        ({"vegetation": {"RHOL_NIR": 0.9}}, r"RHOL_NIR \+ TAUL_NIR = 1.15 > 1"),
        ({"radiation": {"OMEGAS": 0.5}}, r"parameters.radiation.OMEGAS: needs two values \(visible, near infrared\)"),
        ({"global": {"CO2": "lots"}}, r"parameters.global.CO2: must be a number, got 'lots'"),
    ],
)
def test_bad_overrides_are_refused_with_the_key_and_range(overrides, match):
    with pytest.raises(TableError, match=match):
        site_tables(4, (8,) * 4, 4, overrides)


def test_no_canopy_classes_refuse_lai():
    assert 16 in NO_CANOPY
    with pytest.raises(TableError, match="vegetation class 16 has no canopy"):
        site_tables(16, (8,) * 4, 4, {"vegetation": {"LAI_JUL": 2.0}})


def test_unknown_classes_name_the_allowed_range():
    with pytest.raises(TableError, match=r"vegetation class 25 is not in Noah-MP's table \(allowed 1..20\)"):
        site_tables(25, (8,), 4)
    with pytest.raises(TableError, match=r"soil.stas_type\[1\]: soil class 20 is not in Noah-MP's table"):
        site_tables(4, (8, 20), 4)
    with pytest.raises(TableError, match=r"soil.colour: 9 is not a Noah-MP soil colour \(allowed 1..8\)"):
        site_tables(4, (8,), 9)


def test_usda_texture_triangle():
    # class centres of the USDA triangle (sand, clay) -> STAS class
    cases = {(0.92, 0.03): 1, (0.82, 0.06): 2, (0.65, 0.10): 3, (0.20, 0.15): 4, (0.05, 0.05): 5,
             (0.40, 0.20): 6, (0.60, 0.27): 7, (0.10, 0.34): 8, (0.32, 0.34): 9, (0.52, 0.42): 10,
             (0.07, 0.47): 11, (0.20, 0.60): 12}  # fmt: skip
    for (sand, clay), stas in cases.items():
        assert usda_soil_class(sand, clay) == stas, (sand, clay)
    with pytest.raises(TableError, match="sand \\+ clay <= 1"):
        usda_soil_class(0.7, 0.5)
    assert math.isfinite(usda_soil_class(0.0, 0.0))


def test_site_tools_use_the_physics_freezing_point_and_zero_celsius():
    """dam.site_variables repeats two physics constants so the site tools load without JAX: the same numbers."""
    from dam import site_variables
    from dam.physics.constants import TFRZ, ZERO_CELSIUS

    assert site_variables.TFRZ == TFRZ and site_variables.ZERO_C == ZERO_CELSIUS
