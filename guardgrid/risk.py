"""OOM-risk math, vectorised over nodes.

The model (ARCHITECTURE.md): a node's memory use at the horizon is forecast as Normal(mu, sigma); a pod whose
expected peak is m lands with `in_flight` memory not yet visible in the forecast. The OOM risk is
P(mu + m + in_flight > allocatable) = 1 - Phi((allocatable - mu - m - in_flight) / sigma).

Why no scipy: the only special function needed is erfc; the Numerical Recipes Chebyshev fit (fractional error
below 1.2e-7 everywhere) in numpy costs microseconds for 500 nodes and saves a 40 MB dependency.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["erfc", "normal_sf", "oom_risk", "MIN_SPREAD_BYTES"]

FloatArray = npt.NDArray[np.float64]

# A forecast spread of zero would turn risk into a step function and make "0.5 MiB over" certain death;
# one MiB is below anything a kubelet's eviction thresholds can resolve.
MIN_SPREAD_BYTES = float(2**20)


def erfc(x: npt.ArrayLike) -> FloatArray:
    """Complementary error function, |relative error| < 1.2e-7 (Numerical Recipes `erfcc`)."""
    x = np.asarray(x, dtype=np.float64)
    z = np.abs(x)
    t = 1.0 / (1.0 + 0.5 * z)
    poly = -z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 + t * (
        -0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (
            -0.82215223 + t * 0.17087277))))))))
    ans = t * np.exp(poly)
    return np.where(x >= 0, ans, 2.0 - ans)


def normal_sf(z: npt.ArrayLike) -> FloatArray:
    """P(Z > z) for a standard normal Z."""
    return 0.5 * erfc(np.asarray(z, dtype=np.float64) / np.sqrt(2.0))


def oom_risk(demand: npt.ArrayLike, allocatable: npt.ArrayLike, spread: npt.ArrayLike) -> FloatArray:
    """P(use > allocatable) with use ~ Normal(demand, spread); a node with no allocatable memory is certain."""
    demand = np.asarray(demand, dtype=np.float64)
    allocatable = np.asarray(allocatable, dtype=np.float64)
    spread = np.maximum(np.asarray(spread, dtype=np.float64), MIN_SPREAD_BYTES)
    risk = normal_sf((allocatable - demand) / spread)
    return np.where(allocatable > 0, risk, 1.0)
