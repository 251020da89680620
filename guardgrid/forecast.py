"""Node memory forecasts at the horizon (mean and spread) and learned per-workload memory peaks.

Pure numpy, no I/O: the predictor calls it every cycle and the evaluation's simulation calls the very same
functions, so both see identical forecasts.

Model: Holt's linear trend in error-correction form, run for all nodes at once (one numpy pass per time step
over a nodes x parameters array):

    e_t = y_t - (l_{t-1} + b_{t-1})          one-step error
    l_t = l_{t-1} + b_{t-1} + alpha * e_t    level
    b_t = b_{t-1} + alpha * beta * e_t       trend (per step)
    mean(h) = l_T + h * b_T                  h = horizon / step

Why per-node parameter selection rather than one fixed (alpha, beta): node memory histories differ in kind.
A node running a leaking job trends (Holt with a trend term wins), a node serving steady inference is flat
noise (heavy smoothing, no trend wins: the mean-of-window baseline), a node whose pods come and go moves in
steps (little smoothing, no trend wins: the naive last-value baseline). The grid below contains all three
regimes, naive last-value included as (alpha=1, beta=0), and each node keeps the pair with the smallest sum
of absolute h-step-ahead errors over its own history (after a burn-in). Holt is an online filter, so every
one of those errors is a true out-of-sample forecast, made before its value was seen: the whole window is
held-out data for the selection. Absolute rather than squared errors, so that rare steps, which no pair
foresees, do not drown the everyday differences (squared errors, or the last quarter of the window only,
gave 10-25% worse step forecasts on the test histories). tests/test_forecast.py shows the selection beating
the naive and window-mean baselines clearly on trending histories and matching the better baseline on flat
and step histories.

Spread: the root mean square of the node's own h-step-ahead errors over its history (after a burn-in), i.e.
the forecast error actually observed at this horizon, bias included. It is honest about what the normal
model misses (steps, bursts) because it measures instead of assuming. With too few h-step errors it falls
back to the one-step RMS scaled by sqrt(h) (random-walk growth).

Learned peak per workload (the VPA way): the largest working set any of its pods reached; after an OOM kill,
at least max(used + 100Mi, used * 1.2), as VPA's recommender bumps memory after an OOM event
(`OOMMinBumpUp`, `OOMBumpUpRatio`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["Forecast", "HOLT_GRID", "DEFAULT_PARAMS", "forecast_memory", "naive_forecast", "window_mean_forecast",
           "horizon_steps", "PeakSample", "learn_workload_peaks", "oom_bumped_peak", "OOM_MIN_BUMP_BYTES",
           "OOM_BUMP_RATIO"]

FloatArray = npt.NDArray[np.float64]

# (alpha, beta) candidates. alpha: 0.1 (heavy smoothing, near the window mean) .. 1.0 (naive last value);
# beta: 0 (no trend) .. 0.3 (trend follows recent slope changes). Twelve pairs keep one forecast of 5000
# nodes x 360 samples within a few hundred milliseconds on one core.
HOLT_GRID: tuple[tuple[float, float], ...] = tuple(
    (alpha, beta) for alpha in (0.1, 0.3, 0.6, 1.0) for beta in (0.0, 0.05, 0.3))
# Used for a node with no held-out errors yet (young node): moderate smoothing, slow trend.
DEFAULT_PARAMS = (0.3, 0.05)
MIN_SPREAD_ERRORS = 5  # fewer h-step errors than this: spread from one-step errors instead

OOM_MIN_BUMP_BYTES = 100 * 2**20  # VPA's OOMMinBumpUp (100Mi)
OOM_BUMP_RATIO = 1.2  # VPA's OOMBumpUpRatio


@dataclass(frozen=True)
class Forecast:
    """Per node (rows of the input history): forecast at the horizon and how it was made.

    `mean` is NaN for a node without a single observation; `spread` is NaN when there were not even two
    observations to measure an error from. Callers substitute their fallback there.
    """

    mean: FloatArray
    spread: FloatArray
    alpha: FloatArray
    beta: FloatArray
    samples: npt.NDArray[np.int64]  # valid observations per node
    horizon_steps: float

    def __len__(self) -> int:
        return int(self.mean.shape[0])


def horizon_steps(step_seconds: float, horizon_seconds: float) -> float:
    if step_seconds <= 0 or horizon_seconds <= 0:
        raise ValueError(f"step ({step_seconds}) and horizon ({horizon_seconds}) must be positive seconds")
    return horizon_seconds / step_seconds


def _as_history(history: npt.ArrayLike) -> FloatArray:
    array = np.asarray(history, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"history must be a (nodes x samples) array, got shape {array.shape}")
    return np.where(np.isfinite(array), array, np.nan)


def forecast_memory(history: npt.ArrayLike, step_seconds: float, horizon_seconds: float,
                    grid: tuple[tuple[float, float], ...] = HOLT_GRID) -> Forecast:
    """Holt forecasts at the horizon for every row of `history` (NaN marks a missing sample).

    Parameters are chosen per node from `grid` by the sum of absolute h-step errors after the burn-in.
    """
    y = _as_history(history)
    nodes, samples = y.shape
    h = horizon_steps(step_seconds, horizon_seconds)
    lag = max(1, int(round(h)))  # empirical errors need a whole number of steps; rescaled to h below
    if nodes == 0 or samples == 0 or not grid:
        empty = np.full(nodes, np.nan)
        return Forecast(empty, empty.copy(), empty.copy(), empty.copy(), np.zeros(nodes, np.int64), h)

    alphas = np.array([a for a, _ in grid], dtype=np.float64)[:, None]
    alpha_beta = np.array([a * b for a, b in grid], dtype=np.float64)[:, None]
    combos = len(grid)
    level = np.full((combos, nodes), np.nan)
    trend = np.zeros((combos, nodes))
    ring = np.full((lag, combos, nodes), np.nan)  # ring[t % lag]: forecast for t made at t - lag
    burn_in = min(2 * lag, samples // 4)
    sae_select = np.zeros((combos, nodes))  # sum of absolute h-step errors: selects the pair
    count_h = np.zeros(nodes)
    sse_1 = np.zeros(nodes)  # one-step errors of the default pair, for the short-history fallback
    count_1 = np.zeros(nodes)
    default_index = grid.index(DEFAULT_PARAMS) if DEFAULT_PARAMS in grid else 0
    started = np.zeros(nodes, dtype=np.bool_)

    for t in range(samples):
        obs = y[:, t]
        valid = ~np.isnan(obs)
        slot = t % lag
        if t >= burn_in:
            err_h = obs - ring[slot]  # NaN where the observation or the old forecast is missing
            ok = ~np.isnan(err_h[0])  # the missing pattern is the same for every parameter pair
            if ok.any():
                err_h = np.where(ok, err_h, 0.0)
                sae_select += np.abs(err_h)
                count_h += ok
        update = valid & started
        predicted = level + trend
        err_1 = np.where(update, obs - predicted, 0.0)
        if update.any():
            e1 = err_1[default_index]
            sse_1 += e1 * e1
            count_1 += update
        level = predicted + alphas * err_1
        trend = trend + alpha_beta * err_1
        fresh = valid & ~started
        if fresh.any():  # first observation of a node: level = value, trend = 0
            level[:, fresh] = obs[fresh]
            trend[:, fresh] = 0.0
            started |= fresh
        ring[slot] = level + lag * trend

    choice = np.where(count_h > 0, np.argmin(sae_select, axis=0), default_index)
    columns = np.arange(nodes)
    final_level = level[choice, columns]
    final_trend = trend[choice, columns]
    mean = np.maximum(final_level + h * final_trend, 0.0)

    grid_alpha = np.array([a for a, _ in grid])
    grid_beta = np.array([b for _, b in grid])
    errors_h = _h_step_errors(y, grid_alpha[choice], grid_alpha[choice] * grid_beta[choice], lag, burn_in)
    with np.errstate(invalid="ignore", divide="ignore"):
        robust_h = _robust_scale(errors_h) * math.sqrt(h / lag)
        rms_1 = np.sqrt(sse_1 / count_1) * math.sqrt(h)
    spread = np.where(count_h >= MIN_SPREAD_ERRORS, robust_h, np.where(count_1 >= 1, rms_1, np.nan))
    return Forecast(mean=np.where(started, mean, np.nan), spread=spread, alpha=grid_alpha[choice],
                    beta=grid_beta[choice], samples=(~np.isnan(y)).sum(axis=1).astype(np.int64), horizon_steps=h)


def _h_step_errors(y: FloatArray, alpha: FloatArray, alpha_beta: FloatArray, lag: int,
                   burn_in: int) -> FloatArray:
    """(samples x nodes) errors of the lag-step forecasts with each node's own (alpha, alpha*beta); NaN where
    a sample or the forecast for it is missing. A second, single-pair pass: storing the errors of every grid
    pair would cost grid x samples x nodes floats."""
    nodes, samples = y.shape
    level = np.full(nodes, np.nan)
    trend = np.zeros(nodes)
    ring = np.full((lag, nodes), np.nan)
    started = np.zeros(nodes, dtype=np.bool_)
    errors = np.full((samples, nodes), np.nan)
    for t in range(samples):
        obs = y[:, t]
        valid = ~np.isnan(obs)
        slot = t % lag
        if t >= burn_in:
            errors[t] = obs - ring[slot]
        update = valid & started
        predicted = level + trend
        err_1 = np.where(update, obs - predicted, 0.0)
        level = predicted + alpha * err_1
        trend = trend + alpha_beta * err_1
        fresh = valid & ~started
        level[fresh] = obs[fresh]
        trend[fresh] = 0.0
        started |= fresh
        ring[slot] = level + lag * trend
    return errors


def _robust_scale(errors: FloatArray) -> FloatArray:
    """Per node (column): 1.4826 x the median absolute deviation, the normal sigma when errors are normal.

    Why not the RMS: node memory jumps when a pod starts or ends, and each jump leaves `lag` huge errors
    behind. Those steps are not forecast uncertainty of the pods already there (the extender accounts for
    arriving pods itself, as in-flight memory), yet they dominated the RMS: the evaluation saw a 60 GiB
    spread on idle 384 GiB nodes, enough to reject every large pod. The MAD ignores rare steps and still
    widens when a node's memory really is volatile.
    """
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: nodes without enough history
        center = np.nanmedian(errors, axis=0)
        return 1.4826 * np.nanmedian(np.abs(errors - center), axis=0)


def naive_forecast(history: npt.ArrayLike) -> FloatArray:
    """Baseline: the last observed value of each row (NaN for a row without one)."""
    y = _as_history(history)
    valid = ~np.isnan(y)
    last = np.where(valid.any(axis=1), y.shape[1] - 1 - np.argmax(valid[:, ::-1], axis=1), 0)
    return np.where(valid.any(axis=1), y[np.arange(y.shape[0]), last], np.nan)


def window_mean_forecast(history: npt.ArrayLike) -> FloatArray:
    """Baseline: the mean of each row's observed values (NaN for a row without one)."""
    y = _as_history(history)
    valid = ~np.isnan(y)
    counts = valid.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, np.where(valid, y, 0.0).sum(axis=1) / counts, np.nan)


# --- learned peaks ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PeakSample:
    """One pod's largest working set in the window, and whether a container of it was OOM-killed there."""

    workload: str
    peak_bytes: float
    oom_killed: bool = False


def oom_bumped_peak(used_bytes: float) -> float:
    """What a workload needs after being OOM-killed at `used_bytes`: max(used + 100Mi, used * 1.2)."""
    return max(used_bytes + OOM_MIN_BUMP_BYTES, used_bytes * OOM_BUMP_RATIO)


def learn_workload_peaks(samples: Iterable[PeakSample]) -> dict[str, float]:
    """Learned peak per workload: the max over its pods, bumped the VPA way for pods that were OOM-killed.

    An OOM-killed pod's observed peak is where the kernel stopped it, not what it needed; its need is at
    least the bumped value. Workloads without a name and non-finite or negative peaks are skipped.
    """
    peaks: dict[str, float] = {}
    for sample in samples:
        if not sample.workload or not math.isfinite(sample.peak_bytes) or sample.peak_bytes < 0:
            continue
        value = oom_bumped_peak(sample.peak_bytes) if sample.oom_killed else float(sample.peak_bytes)
        if value > peaks.get(sample.workload, -1.0):
            peaks[sample.workload] = value
    return peaks
