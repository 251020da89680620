"""Training progress per job and its normalised growth over a sliding window (SpeCon's signal).

Why: SpeCon (Fu et al.) showed that moving jobs whose progress has flattened off contended nodes lets the
fast growers finish much sooner. Its published deployment passes alpha = 0.1 to every node worker
(`worker.py <node> 0.1 10`); the worker's source is not public, so the normalisation below is ours, chosen
to be unit-free (accuracy in [0, 1], loss in nats, BLEU in points all give the same number) and to compare
a job with its own past rather than with other jobs:

    growth = recent pace / lifetime pace
           = slope of the window's samples (least squares)  /  (value range over the history / history span)

- 1 means the job is still improving as fast as it has on average; 0 means flat; below 0 it is going
  backwards. alpha = 0.1 therefore reads "its recent pace is under a tenth of its average pace".
- Least squares over the window, not two end points, so one noisy sample cannot flip the verdict.
- The value range (max - min) rather than "last - first" as the yardstick: for a monotone curve they are
  equal, but for a noisy flat curve "last - first" is itself noise and can be ~0, which would turn a flat
  job into a huge growth; the range keeps a flat noisy job near 0, where it belongs.
- A series that never moved (range 0) has growth 0.
- `falling` (loss-like) metrics are negated first, so "improving" is always "rising".
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["ProgressSeries", "ProgressDataError", "normalised_growth", "is_slow_growing", "progress_query",
           "series_from_prometheus_matrix", "MIN_WINDOW_POINTS", "Direction"]

log = logging.getLogger(__name__)

Direction = Literal["rising", "falling"]

# A slope through fewer than three samples is an end-point difference, which one noisy sample decides.
MIN_WINDOW_POINTS = 3

_METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class ProgressDataError(ValueError):
    """A progress series or a Prometheus answer that cannot be read; the message says what is wrong."""


@dataclass(frozen=True)
class ProgressSeries:
    """Samples (epoch seconds, metric value) of one job's progress metric.

    On construction the arrays are made float64, non-finite samples (Prometheus can return NaN/Inf) are
    dropped and the samples are sorted by time, so every consumer sees a clean, ordered series.
    """

    times: npt.NDArray[np.float64]
    values: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        times = np.asarray(self.times, dtype=np.float64)
        values = np.asarray(self.values, dtype=np.float64)
        if times.ndim != 1 or values.ndim != 1 or times.shape != values.shape:
            raise ProgressDataError(f"progress series: times {times.shape} and values {values.shape} must be "
                                    "one-dimensional and of equal length")
        keep = np.isfinite(times) & np.isfinite(values)
        times, values = times[keep], values[keep]
        order = np.argsort(times, kind="stable")
        object.__setattr__(self, "times", times[order])
        object.__setattr__(self, "values", values[order])

    def __len__(self) -> int:
        return int(self.times.shape[0])


def normalised_growth(series: ProgressSeries, window_s: float, direction: Direction, now: float) -> float | None:
    """Recent pace over the last `window_s` seconds divided by the lifetime pace (see the module docstring).

    Samples after `now` are ignored. None when the window holds fewer than MIN_WINDOW_POINTS samples or
    they all share one timestamp: there is no evidence either way, and no evidence never triggers a migration.
    """
    if direction not in ("rising", "falling"):
        raise ValueError(f"direction must be 'rising' or 'falling', got {direction!r}")
    if not window_s > 0:
        raise ValueError(f"window_s must be positive, got {window_s!r}")
    upto = np.searchsorted(series.times, now, side="right")
    times = series.times[:upto]
    values = series.values[:upto] if direction == "rising" else -series.values[:upto]
    start = np.searchsorted(times, now - window_s, side="left")
    window_t, window_v = times[start:], values[start:]
    if window_t.shape[0] < MIN_WINDOW_POINTS:
        return None
    centred_t = window_t - window_t.mean()
    spread = float(np.dot(centred_t, centred_t))
    if spread <= 0.0:
        return None
    slope = float(np.dot(centred_t, window_v - window_v.mean())) / spread
    value_range = float(values.max() - values.min())
    span = float(times[-1] - times[0])
    if value_range <= 0.0 or span <= 0.0:
        return 0.0
    return slope * span / value_range


def is_slow_growing(growth: float | None, alpha: float) -> bool:
    """True when growth is known and below alpha. Unknown growth is never slow: no evidence, no eviction."""
    return growth is not None and not math.isnan(growth) and growth < alpha


def progress_query(metric: str, job_label: str, direction: Direction) -> str:
    """PromQL for one progress series per job: the best replica's value (max rising, min falling).

    Several pods of a distributed job may export the metric; the best one is the job's progress, and one
    series per job keeps the answer small. Names are validated so a typo in configuration fails loudly.
    """
    if not _METRIC_NAME.match(metric):
        raise ValueError(f"progress metric {metric!r} is not a valid Prometheus metric name")
    if not _LABEL_NAME.match(job_label):
        raise ValueError(f"progress job label {job_label!r} is not a valid Prometheus label name")
    if direction not in ("rising", "falling"):
        raise ValueError(f"direction must be 'rising' or 'falling', got {direction!r}")
    aggregate = "max" if direction == "rising" else "min"
    return f"{aggregate} by ({job_label}) ({metric})"


def series_from_prometheus_matrix(result: Iterable[Mapping[str, Any]], job_label: str) -> dict[str, ProgressSeries]:
    """Read a range query's `data.result` (resultType matrix) into one series per job.

    Each element is `{"metric": {<job_label>: name, ...}, "values": [[<epoch>, "<value>"], ...]}` as the
    Prometheus HTTP API (and prometheus-api-client) return it. Series without the job label are skipped;
    if a job appears twice (a query without aggregation), the series with more samples is kept. A body that
    is not shaped like a matrix raises ProgressDataError naming the element.
    """
    jobs: dict[str, ProgressSeries] = {}
    for index, element in enumerate(result):
        if not isinstance(element, Mapping):
            raise ProgressDataError(f"result[{index}]: expected an object")
        labels = element.get("metric") or {}
        raw_values = element.get("values")
        if not isinstance(labels, Mapping) or not isinstance(raw_values, list):
            raise ProgressDataError(f"result[{index}]: expected 'metric' object and 'values' list (a matrix)")
        job = labels.get(job_label)
        if not isinstance(job, str) or not job:
            continue
        try:
            times = [float(pair[0]) for pair in raw_values]
            values = [float(pair[1]) for pair in raw_values]
        except (TypeError, ValueError, IndexError) as exc:
            raise ProgressDataError(f"result[{index}] (job {job}): samples must be [time, \"value\"]: {exc}") from None
        series = ProgressSeries(np.asarray(times), np.asarray(values))
        previous = jobs.get(job)
        if previous is not None:
            log.warning("progress: job %s has more than one series; keeping the longer one", job)
            if len(previous) >= len(series):
                continue
        jobs[job] = series
    return jobs
