"""The physics of the simulation as pure, vectorised functions: memory growth, contention, failure hazard.

Kept apart from the event loop so each law is one readable formula with its parameter names (see
evaluation/sim/params.py for the values and where they come from) and can be tested on its own.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from evaluation.sim.params import MiB, SimParams

__all__ = ["memory_level", "ar1_step", "contention_speed", "failure_probability", "transfer_seconds"]

FloatArray = npt.NDArray[np.float64]


def memory_level(peak: FloatArray, ramp_seconds: FloatArray, trained_for: FloatArray, training: npt.NDArray[np.bool_],
                 base_fraction: float) -> FloatArray:
    """Working-set level before noise: `base` x peak while loading, then a linear ramp to peak over the first
    epochs of this process' training (a restarted process ramps again), then flat."""
    with np.errstate(divide="ignore", invalid="ignore"):
        ramp = np.where(ramp_seconds > 0, np.clip(trained_for / ramp_seconds, 0.0, 1.0), 1.0)
    fraction = np.where(training, base_fraction + (1.0 - base_fraction) * ramp, base_fraction)
    return peak * fraction


def ar1_step(z: FloatArray, eps: FloatArray, phi: float) -> FloatArray:
    """Stationary AR(1) with unit variance: z' = phi z + sqrt(1 - phi^2) eps."""
    return phi * z + math.sqrt(max(0.0, 1.0 - phi * phi)) * eps


def contention_speed(load: FloatArray, params: SimParams) -> FloatArray:
    """Training speed on a node at memory load `load` (1 = no slowdown)."""
    knee = params.contention_knee
    excess = np.clip((load - knee) / max(1e-9, 1.0 - knee), 0.0, 1.0)
    return 1.0 - params.contention_slowdown * excess


def failure_probability(load: FloatArray, dt_seconds: float, params: SimParams) -> FloatArray:
    """P(a node fails within dt) for hazard rate r0 x (1 + k load^2) per hour."""
    rate = params.node_failure_rate_per_hour * (1.0 + params.failure_load_factor * np.square(np.clip(load, 0, 2)))
    return -np.expm1(-rate * dt_seconds / 3600.0)


def transfer_seconds(size_bytes: float, mib_per_s: float) -> float:
    return float(size_bytes) / (mib_per_s * MiB)
