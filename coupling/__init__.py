"""Coupling of physics and learning, the pure part: physics-informed losses, calibration objectives (parameter
specs, observation targets, losses and gradients) and AI-in-physics transports and objectives. See
docs/calibration.md and docs/hybrid_models.md.

Import rule: ``dam.coupling`` imports only ``dam.physics``, ``dam.surrogates`` and third-party libraries, and
takes arrays and its own small types (never a site, a set-up or a file). The drivers that feed it from sites and
run the training engine live in ``dam`` (:mod:`dam.calibration`, :mod:`dam.hybrid_training`,
:mod:`dam.training`).
"""

from .calibration import (
    DEFAULT_RANGES,
    CalibrationProblem,
    ObservationTarget,
    ParameterSpec,
    apply_parameters,
    initial_latent,
    latent_to_values,
    make_problem,
    make_specs,
    value_and_grad,
)
from .constraints import SensorTarget, constraint_penalty, plausibility, water_created, widened_bounds
from .ensemble import (
    DEFAULT_FACTOR_RANGES,
    PARAMETER_PATHS,
    ParameterRange,
    apply_factors,
    perturbed_ensemble,
    sample_factors,
    save_ensemble,
)
from .hybrid import (
    N_FEATURES,
    HybridObjective,
    NeuralWaterTransport,
    PhysicsWaterSamples,
    imitation_loss,
    physics_water_samples,
)
from .losses import (
    LossTerms,
    PhysicsLoss,
    bounds_penalty,
    column_heat_residual,
    heat_residual,
    masked_mae,
    masked_mse,
    masked_rmse,
    masked_ubrmse,
    surface_energy_residual,
    water_balance_residual,
    water_storage_mm,
)

__all__ = [
    "DEFAULT_FACTOR_RANGES",
    "SensorTarget",
    "constraint_penalty",
    "plausibility",
    "water_created",
    "widened_bounds",
    "N_FEATURES",
    "PARAMETER_PATHS",
    "HybridObjective",
    "NeuralWaterTransport",
    "ParameterRange",
    "PhysicsWaterSamples",
    "apply_factors",
    "imitation_loss",
    "perturbed_ensemble",
    "physics_water_samples",
    "sample_factors",
    "save_ensemble",
    "DEFAULT_RANGES",
    "CalibrationProblem",
    "LossTerms",
    "ObservationTarget",
    "ParameterSpec",
    "PhysicsLoss",
    "apply_parameters",
    "bounds_penalty",
    "column_heat_residual",
    "heat_residual",
    "initial_latent",
    "latent_to_values",
    "make_problem",
    "make_specs",
    "masked_mae",
    "masked_mse",
    "masked_rmse",
    "masked_ubrmse",
    "surface_energy_residual",
    "value_and_grad",
    "water_balance_residual",
    "water_storage_mm",
]
