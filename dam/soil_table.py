"""The Noah-MP STAS soil parameter table (``NoahmpTable.TBL``, ``noahmp_soil_stas_parameters``).

Units: BEXP -, SMCDRY SMCMAX SMCREF SMCWLT m3 m-3, PSISAT m (positive), DKSAT m s-1, DWSAT m2 s-1, QUARTZ -.
"""

from __future__ import annotations

# Noah-MP STAS soil table (NoahmpTable.TBL): name, BEXP, SMCDRY, SMCMAX, SMCREF, PSISAT, DKSAT, DWSAT, SMCWLT, QUARTZ.
STAS: dict[int, tuple] = {
    1: ("SAND", 2.790, 0.010, 0.339, 0.192, 0.069, 4.66e-05, 2.65e-05, 0.010, 0.920),
    2: ("LOAMY SAND", 4.260, 0.028, 0.421, 0.283, 0.036, 1.41e-05, 5.14e-06, 0.028, 0.820),
    3: ("SANDY LOAM", 4.740, 0.047, 0.434, 0.312, 0.141, 5.23e-06, 8.05e-06, 0.047, 0.600),
    4: ("SILT LOAM", 5.330, 0.084, 0.476, 0.360, 0.759, 2.81e-06, 2.39e-05, 0.084, 0.250),
    5: ("SILT", 3.860, 0.061, 0.484, 0.347, 0.955, 2.18e-06, 1.66e-05, 0.061, 0.100),
    6: ("LOAM", 5.250, 0.066, 0.439, 0.329, 0.355, 3.38e-06, 1.43e-05, 0.066, 0.400),
    7: ("SANDY CLAY LOAM", 6.770, 0.069, 0.404, 0.315, 0.135, 4.45e-06, 1.01e-05, 0.069, 0.600),
    8: ("SILTY CLAY LOAM", 8.720, 0.120, 0.464, 0.387, 0.617, 2.03e-06, 2.35e-05, 0.120, 0.100),
    9: ("CLAY LOAM", 8.170, 0.103, 0.465, 0.382, 0.263, 2.45e-06, 1.13e-05, 0.103, 0.350),
    10: ("SANDY CLAY", 10.730, 0.100, 0.406, 0.338, 0.098, 7.22e-06, 1.87e-05, 0.100, 0.520),
    11: ("SILTY CLAY", 10.390, 0.126, 0.468, 0.404, 0.324, 1.34e-06, 9.64e-06, 0.126, 0.100),
    12: ("CLAY", 11.550, 0.138, 0.468, 0.412, 0.468, 9.74e-07, 1.12e-05, 0.138, 0.250),
    13: ("ORGANIC MATERIAL", 5.250, 0.066, 0.439, 0.329, 0.355, 3.38e-06, 1.43e-05, 0.066, 0.050),
}
STAS_FIELDS = ("bexp", "smcdry", "smcmax", "smcref", "psisat", "dksat", "dwsat", "smcwlt", "quartz")


def stas_parameters(soil_class: int) -> dict[str, float]:
    """The table row of STAS class ``soil_class`` (1-13) as ``{field: value}`` (names of :data:`STAS_FIELDS`)."""
    if soil_class not in STAS:
        raise ValueError(f"STAS soil class must be one of {sorted(STAS)}, got {soil_class!r}")
    return dict(zip(STAS_FIELDS, STAS[soil_class][1:], strict=True))
