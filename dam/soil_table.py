"""The Noah-MP STAS soil parameter table (``NoahmpTable.TBL``, ``noahmp_soil_stas_parameters``), read from the
shipped tables (:mod:`dam.tables`, all 19 classes).

Units: BEXP -, SMCDRY SMCMAX SMCREF SMCWLT m3 m-3, PSISAT m (positive), DKSAT m s-1, DWSAT m2 s-1, QUARTZ -.
"""

from __future__ import annotations

from .tables import noahmp_tables

STAS_FIELDS = ("bexp", "smcdry", "smcmax", "smcref", "psisat", "dksat", "dwsat", "smcwlt", "quartz")
#: dam name -> table name
TABLE_NAMES = dict(zip(STAS_FIELDS, ("BB", "DRYSMC", "MAXSMC", "REFSMC", "SATPSI", "SATDK", "SATDW", "WLTSMC", "QTZ"),
                       strict=True))  # fmt: skip

# class -> (name, BEXP, SMCDRY, SMCMAX, SMCREF, PSISAT, DKSAT, DWSAT, SMCWLT, QUARTZ), classes 1-19.
STAS: dict[int, tuple] = {
    int(k): (row["name"], *(float(row[TABLE_NAMES[f]]) for f in STAS_FIELDS))
    for k, row in noahmp_tables()["soil_stas"].items()
}


def stas_parameters(soil_class: int) -> dict[str, float]:
    """The table row of STAS class ``soil_class`` (1-19) as ``{field: value}`` (names of :data:`STAS_FIELDS`)."""
    if soil_class not in STAS:
        raise ValueError(f"STAS soil class must be one of {sorted(STAS)}, got {soil_class!r}")
    return dict(zip(STAS_FIELDS, STAS[soil_class][1:], strict=True))
