"""Converters from the original station files (one folder per source, named as in :data:`CONVERTERS`; the test
suite ships copies in ``tests/data/stations``) to :class:`dam.sites.Site` objects; one module per source.

Each reader reads its source folder (the ``SOURCE.md`` there documents units, time zones, depths and known
problems), converts to the canonical variables of :mod:`dam.sites` and returns a validated :class:`Site`.
Every correction a reader makes (clipping RH above 100 %, negative wind or shortwave to 0, derived
variables) is counted and recorded in the attributes of the variable it touched and in ``site.yaml`` notes.

=========================  ==============================================================================
source name                reader
=========================  ==============================================================================
``bondville_1998``         :func:`read_bondville_1998` (``forcing98_with_validation.dat``, 30 min, LST)
``bondville_1998_hrldas``  :func:`read_bondville_1998_hrldas` (``hrldas_bondville.dat``: the forcing the Fortran
                           Noah-MP reference run used, + the observations of the main file)
``hyytiala_2000_2010``     :func:`read_hyytiala_2000_2010` (daily; SW from PAR, LW parameterised)
``tanggula_forcing_only``  :func:`read_noahpy_forcing` (NoahPy daily forcing, no observations)
=========================  ==============================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dam.sites import Site, SiteError

from .bondville import (
    BONDVILLE_COLUMNS,
    BONDVILLE_SM_DEPTHS,
    BONDVILLE_ST_DEPTHS,
    BONDVILLE_UTC_OFFSET,
    MISSING_BONDVILLE,
    read_bondville_1998,
    read_bondville_1998_hrldas,
)
from .common import CONVERTER_VERSION, INCH_MM, ZERO_C
from .hyytiala import (
    HYDE_COLUMNS,
    HYDE_DEPTHS,
    HYDE_UTC_OFFSET,
    read_hyytiala_2000_2010,
)
from .noahpy import (
    TANGGULA_MERGED_TOP,
    TANGGULA_ZBOT_M,
    read_noahpy_forcing,
)

__all__ = [
    "BONDVILLE_COLUMNS",
    "BONDVILLE_SM_DEPTHS",
    "BONDVILLE_ST_DEPTHS",
    "BONDVILLE_UTC_OFFSET",
    "CONVERTERS",
    "CONVERTER_VERSION",
    "Converter",
    "HYDE_COLUMNS",
    "HYDE_DEPTHS",
    "HYDE_UTC_OFFSET",
    "INCH_MM",
    "MISSING_BONDVILLE",
    "TANGGULA_MERGED_TOP",
    "TANGGULA_ZBOT_M",
    "ZERO_C",
    "identify_source",
    "read_bondville_1998",
    "read_bondville_1998_hrldas",
    "read_hyytiala_2000_2010",
    "read_noahpy_forcing",
]


# --------------------------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Converter:
    """A source format: the name of its source folder and the reader."""

    folder: str
    read: Callable[..., Site]


CONVERTERS: dict[str, Converter] = {
    "bondville_1998": Converter("bondville_1998", read_bondville_1998),
    "bondville_1998_hrldas": Converter("bondville_1998", read_bondville_1998_hrldas),
    "hyytiala_2000_2010": Converter("hyytiala_2000_2010", read_hyytiala_2000_2010),
    "tanggula_forcing_only": Converter("tanggula_forcing_only", read_noahpy_forcing),
}


def identify_source(folder: str | Path) -> str:
    """The converter name for a source folder (by folder name, else by the files it holds)."""
    p = Path(folder)
    if p.name in CONVERTERS:
        return p.name
    if (p / "forcing98_with_validation.dat").is_file():
        return "bondville_1998"
    if (p / "hrldas_bondville.dat").is_file():
        return "bondville_1998_hrldas"
    if (p / "HydeDaily2000-2010.txt").is_file():
        return "hyytiala_2000_2010"
    if (p / "forcing.txt").is_file() and "<forcing>" in (p / "forcing.txt").read_text()[:20000].lower():
        return "tanggula_forcing_only"
    raise SiteError(f"{p}: no known source format (known: {sorted(CONVERTERS)})")
