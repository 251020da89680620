"""Node fault rates (failures per hour) from history, vectorised over nodes. Pure numpy, no I/O.

Failures counted per node over the history window:
- NotReady episodes: transitions of `kube_node_status_condition{condition="Ready",status="true"}` from 1 to 0
  (gaps in the series are bridged, so a scrape gap is not an episode and a gap does not hide one);
- OOM kills: the larger of the kernel's count (the increase of node-exporter's `node_vmstat_oom_kill`,
  counter resets handled as Prometheus' `increase()` does) and the OOM-killed containers kube-state-metrics
  saw on the node. Larger, not the sum: one container OOM kill shows up in both.

Rate, a gamma-Poisson posterior mean: with a Gamma prior worth `prior_hours` of observation at
`prior_rate` failures/hour, and `failures` seen in `observed_hours`,

    rate = (failures + prior_rate * prior_hours) / (observed_hours + prior_hours)

so a node seen for ten minutes without failing is "about the prior", not "perfect", and a node with a long
clean history drifts below the prior at the speed its evidence justifies.

Memory pressure raises the rate, because an almost full node is one allocation away from an OOM kill or a
kubelet eviction that history has not seen yet:

    rate *= 1 + PRESSURE_GAIN * max(0, load - PRESSURE_KNEE) / (1 - PRESSURE_KNEE)

with load = forecast memory use / allocatable. Below 80% nothing changes; at 100% the rate triples. The
knee matches the usual kubelet soft-eviction band; the gain is a modelling assumption (no public dataset
relates node load to failure rates), stated here so it can be replaced with evidence.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["notready_episodes", "counter_increase", "observed_hours", "posterior_rate", "pressure_factor",
           "fault_rates", "PRESSURE_KNEE", "PRESSURE_GAIN"]

FloatArray = npt.NDArray[np.float64]

PRESSURE_KNEE = 0.8
PRESSURE_GAIN = 2.0


def _matrix(values: npt.ArrayLike) -> FloatArray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"expected a (nodes x samples) array, got shape {array.shape}")
    return np.where(np.isfinite(array), array, np.nan)


def _forward_fill(array: FloatArray) -> FloatArray:
    """Each NaN replaced by the last valid value before it in its row (leading NaNs stay NaN)."""
    valid = ~np.isnan(array)
    positions = np.where(valid, np.arange(array.shape[1]), 0)
    np.maximum.accumulate(positions, axis=1, out=positions)
    filled = array[np.arange(array.shape[0])[:, None], positions]
    seen = np.maximum.accumulate(valid, axis=1)
    return np.where(seen, filled, np.nan)


def notready_episodes(ready: npt.ArrayLike) -> FloatArray:
    """Per row: how often the Ready condition went from true (>= 0.5) to false (< 0.5)."""
    series = _matrix(ready)
    if series.shape[1] < 2:
        return np.zeros(series.shape[0])
    filled = _forward_fill(series)
    before, after = filled[:, :-1], filled[:, 1:]
    fell = (before >= 0.5) & (after < 0.5) & ~np.isnan(series[:, 1:])
    return fell.sum(axis=1).astype(np.float64)


def counter_increase(counter: npt.ArrayLike) -> FloatArray:
    """Per row: the increase of a counter over the window; a drop is a reset, counted from zero."""
    series = _matrix(counter)
    if series.shape[1] < 2:
        return np.zeros(series.shape[0])
    filled = _forward_fill(series)
    before, after = filled[:, :-1], filled[:, 1:]
    delta = after - before
    step = np.where(delta >= 0, delta, after)  # after a reset the counter restarted from zero
    counted = ~np.isnan(before) & ~np.isnan(series[:, 1:])
    return np.where(counted, step, 0.0).sum(axis=1)


def observed_hours(series: npt.ArrayLike, step_seconds: float) -> FloatArray:
    """Per row: hours covered by valid samples (each sample stands for one step)."""
    array = _matrix(series)
    return (~np.isnan(array)).sum(axis=1) * (step_seconds / 3600.0)


def posterior_rate(failures: npt.ArrayLike, hours: npt.ArrayLike, prior_rate: float,
                   prior_hours: float) -> FloatArray:
    """Gamma-Poisson posterior mean failures/hour (see the module docstring)."""
    if prior_hours <= 0 or prior_rate < 0:
        raise ValueError(f"prior_hours ({prior_hours}) must be positive and prior_rate ({prior_rate}) >= 0")
    failures = np.maximum(np.nan_to_num(np.asarray(failures, dtype=np.float64)), 0.0)
    hours = np.maximum(np.nan_to_num(np.asarray(hours, dtype=np.float64)), 0.0)
    return (failures + prior_rate * prior_hours) / (hours + prior_hours)


def pressure_factor(load: npt.ArrayLike, knee: float = PRESSURE_KNEE, gain: float = PRESSURE_GAIN) -> FloatArray:
    """1 below the knee, rising linearly to 1 + gain at full load (and beyond, above it)."""
    load = np.nan_to_num(np.asarray(load, dtype=np.float64), nan=0.0, posinf=10.0)
    return 1.0 + gain * np.maximum(0.0, load - knee) / (1.0 - knee)


def fault_rates(failures: npt.ArrayLike, hours: npt.ArrayLike, load: npt.ArrayLike, prior_rate: float,
                prior_hours: float) -> FloatArray:
    """Failures/hour per node: posterior mean times the memory-pressure factor."""
    return posterior_rate(failures, hours, prior_rate, prior_hours) * pressure_factor(load)
