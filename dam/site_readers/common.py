"""What the station converters share: unit constants, the converter version recorded in every site, and the
history attributes."""

from __future__ import annotations

from ..site_variables import ZERO_C as ZERO_C  # re-exported for the readers

INCH_MM = 25.4  # mm per inch
CONVERTER_VERSION = "dam.site_readers 1"


def _history(source: str, extra: str = "") -> dict[str, str]:
    return {"source_files": source, "converter": CONVERTER_VERSION, **({"conversion_notes": extra} if extra else {})}
