"""Shape and dtype annotations (jaxtyping) of the physics' arrays.

Dimension names: ``layer`` soil layers (top first); ``*batch`` any leading axes of columns (none for one
column; a time axis first for series), the same within one call; ``...`` leading axes that are not tied to the
other arguments (a parameter shared by all columns has none). Arrays may be JAX or NumPy arrays. The
annotations are checked where a test asks for it (``jaxtyping.jaxtyped(typechecker=beartype.beartype)`` or
``jaxtyping.install_import_hook``), never in production runs.
"""

from __future__ import annotations

import jax
import numpy as np
from jaxtyping import Float, Real

AnyArray = jax.Array | np.ndarray

Layered = Float[AnyArray, "*batch layer"]  # per layer of each column, e.g. temperature (K)
PerColumn = Float[AnyArray, "*batch"]  # one value per column, e.g. a boundary flux
Flag = Real[AnyArray, "*batch"]  # 0/1 per column (float or integer)
LayerParam = Float[AnyArray, "... layer"]  # a per-layer parameter, per column or shared
ColumnParam = Float[AnyArray, "..."]  # a per-column parameter or a scalar
PerLayer = Float[AnyArray, " layer"]  # one value per layer, shared by all columns (depths, thicknesses)
Values = Float[AnyArray, "..."]  # any shape (losses and metrics broadcast their arguments)
LayeredSeries = Float[AnyArray, "... time layer"]  # a per-layer series, time before the layer axis
Series = Float[AnyArray, "... time"]  # a per-column series
AnyLayered = Float[AnyArray, "... layer"]  # per layer, leading axes not tied to other arguments
StepSeries = Float[AnyArray, "... steps"]  # a per-step residual (T or T - 1 steps)
StepLayeredSeries = Float[AnyArray, "... steps layer"]
