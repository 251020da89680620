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


# erfc's Chebyshev coefficients after the innermost one, innermost first (Numerical Recipes `erfcc`).
_ERFC_INNERMOST = 0.17087277
_ERFC_COEFFICIENTS = (-0.82215223, 1.48851587, -1.13520398, 0.27886807, -0.18628806, 0.09678418, 0.37409196,
                      1.00002368)
_ERFC_CONSTANT = 1.26551223


def erfc(x: npt.ArrayLike) -> FloatArray:
    """Complementary error function, |relative error| < 1.2e-7 (Numerical Recipes `erfcc`).

    Evaluated in place on two buffers: the extender runs this over ~500 nodes per filter, where numpy's
    per-call overhead and temporaries, not arithmetic, are the cost (~20 us less per call). The operations
    are the textbook ones in the textbook order, so the results are the same bits (a test checks).
    """
    shape = np.shape(x)
    x = np.asarray(x, dtype=np.float64).reshape(-1)  # 1-d: numpy turns 0-d results into scalars, not buffers
    z = np.abs(x)
    t = np.multiply(z, 0.5)
    t += 1.0
    np.divide(1.0, t, out=t)  # t = 1 / (1 + z/2)
    poly = np.multiply(t, _ERFC_INNERMOST)
    for coefficient in _ERFC_COEFFICIENTS:  # Horner from the inside out: poly = t * (c + poly)
        poly += coefficient
        poly *= t
    z *= z
    z += _ERFC_CONSTANT
    poly -= z  # -z*z - 1.26551223 + t*(...): negation and addition round symmetrically, so this is exact
    np.exp(poly, out=poly)
    poly *= t  # erfc(|x|)
    negative = x < 0
    if np.logical_or.reduce(negative):  # the C reduction: ndarray.any() runs Python wrapper lines
        np.subtract(2.0, poly, out=poly, where=negative)  # erfc(-x) = 2 - erfc(x)
    return poly.reshape(shape)


_SQRT2 = float(np.sqrt(2.0))


def normal_sf(z: npt.ArrayLike) -> FloatArray:
    """P(Z > z) for a standard normal Z."""
    result = erfc(np.divide(np.asarray(z, dtype=np.float64), _SQRT2))
    result *= 0.5
    return result



def oom_risk(demand: npt.ArrayLike, allocatable: npt.ArrayLike, spread: npt.ArrayLike) -> FloatArray:
    """P(use > allocatable) with use ~ Normal(demand, spread); a node with no allocatable memory is certain."""
    demand = np.asarray(demand, dtype=np.float64)
    allocatable = np.asarray(allocatable, dtype=np.float64)
    spread = np.maximum(np.asarray(spread, dtype=np.float64), MIN_SPREAD_BYTES)
    headroom = np.subtract(allocatable, demand)
    headroom /= spread
    risk = normal_sf(headroom)
    empty = allocatable <= 0
    if np.logical_or.reduce(empty):
        risk[empty] = 1.0
    return risk
