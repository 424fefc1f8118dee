"""What rematerialised time steps keep in the forward pass: the carries of the iteration loops inside a step.

With per-step checkpoints (``checkpoint_every=1``) :func:`dam.physics.column.scan_checkpointed` recomputes each
step in the backward pass. A loop inside the step (the water sub-steps) is then transposed iteration by
iteration, and each iteration needs the carry it started from. Keeping those carries (a dozen values per column
and sub-step) lets the backward pass go straight to the transpose instead of first running the whole loop
forward again to find them: about 10 % of the time of a soil-column gradient on CPU, for about twice the memory of
the saved states alone. Only loops where this was measured to pay are marked (the Koren and canopy iterations
gained nothing).
"""

from __future__ import annotations

from typing import Any

import jax
from jax.ad_checkpoint import checkpoint_name

LOOP_CARRY = "dam_loop_carry"

# The policy of the rematerialised steps: save the named loop carries, recompute everything else.
STEP_REMAT_POLICY = jax.checkpoint_policies.save_only_these_names(LOOP_CARRY)


def keep_loop_carry(carry: Any) -> Any:
    """Mark a loop iteration's output carry to be saved by :data:`STEP_REMAT_POLICY` (identity otherwise)."""
    return checkpoint_name(carry, LOOP_CARRY)
