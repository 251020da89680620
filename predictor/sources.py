"""Where the predictor's history comes from: a `MetricsSource` hands one cycle a `MetricsWindow`.

- `PrometheusSource`: the real one (predictor/queries.py), used whenever GUARDGRID_PROMETHEUS_URL is set.
- `SyntheticSource`: GUARDGRID_PROMETHEUS_URL empty (local demo only). It invents a plausible history from
  the cluster's memory requests: every node uses ~70% of what its pods request, with a slow deterministic
  wave, no failures, no OOM kills. It is labelled `synthetic` in every log line and in the snapshot
  (`"source": "synthetic"`), because forecasts built on it say nothing about the real cluster.
- `StaticSource`: a window given up front (the benchmark and tests feed arrays directly, no Prometheus).

A source raises `SourceUnavailable` when it cannot deliver; the cycle then keeps its last good forecast.
"""

from __future__ import annotations

import abc
import logging
import math
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from guardgrid.config import Settings
from guardgrid.state import ClusterState
from predictor.progress import ProgressSeries
from predictor.queries import PrometheusQuerier, QueryError

__all__ = ["MetricsWindow", "MetricsSource", "SourceUnavailable", "PrometheusSource", "SyntheticSource",
           "StaticSource", "window_times", "make_source"]

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]
PodKey = tuple[str, str]  # (namespace, pod name)


class SourceUnavailable(RuntimeError):
    """No usable history this cycle (Prometheus down, slow, erroring, or without data); says why."""


def window_times(now: float, history_seconds: float, step_seconds: float) -> FloatArray:
    """Sample times of the history window: aligned to the step, ending at or just before `now`."""
    samples = max(2, int(history_seconds // step_seconds))
    end = math.floor(now / step_seconds) * step_seconds
    return end - step_seconds * np.arange(samples - 1, -1, -1, dtype=np.float64)


@dataclass(frozen=True)
class MetricsWindow:
    """Everything one cycle reads, rows aligned to `nodes`, columns to `times` (NaN: no sample)."""

    source: str  # "prometheus" | "synthetic" | "static"
    nodes: tuple[str, ...]
    times: FloatArray
    step_seconds: float
    memory_used: FloatArray  # bytes in use (MemTotal - MemAvailable)
    ready: FloatArray  # 1 Ready, 0 not
    oom_counter: FloatArray  # node_vmstat_oom_kill
    pod_oom_kills: FloatArray  # per node: pods with an OOM-killed container in the window
    pod_peaks: Mapping[PodKey, float] = field(default_factory=dict)  # largest working set per pod
    pod_oom_killed: frozenset[PodKey] = frozenset()
    progress: Mapping[str, ProgressSeries] = field(default_factory=dict)

    @property
    def nodes_with_memory_data(self) -> int:
        return int((~np.isnan(self.memory_used)).any(axis=1).sum()) if self.memory_used.size else 0

    def aligned_to(self, nodes: Sequence[str]) -> MetricsWindow:
        """The same window with rows in the order of `nodes` (unknown nodes: no data)."""
        if tuple(nodes) == self.nodes:
            return self
        index = {name: i for i, name in enumerate(self.nodes)}
        rows = np.array([index.get(name, -1) for name in nodes], dtype=np.int64)
        known = rows >= 0

        def pick(matrix: FloatArray) -> FloatArray:
            if matrix.ndim == 1:
                return np.where(known, matrix[np.maximum(rows, 0)] if len(matrix) else 0.0, 0.0)
            out = np.full((len(nodes), matrix.shape[1]), np.nan)
            out[known] = matrix[rows[known]]
            return out

        return replace(self, nodes=tuple(nodes), memory_used=pick(self.memory_used), ready=pick(self.ready),
                       oom_counter=pick(self.oom_counter), pod_oom_kills=pick(self.pod_oom_kills))


class MetricsSource(abc.ABC):
    """One cycle's history for the given nodes, ending at `now`."""

    name: str = "unknown"

    @abc.abstractmethod
    def fetch(self, nodes: Sequence[str], now: float, want_progress: bool) -> MetricsWindow:
        """Raises SourceUnavailable when there is nothing usable."""

    def close(self) -> None:
        """Release connections (default: nothing)."""


class PrometheusSource(MetricsSource):
    """The real history, from Prometheus (all queries in predictor/queries.py)."""

    name = "prometheus"

    def __init__(self, settings: Settings, querier: PrometheusQuerier | None = None) -> None:
        self.settings = settings
        self.querier = querier or PrometheusQuerier(settings)

    def close(self) -> None:
        self.querier.close()

    def fetch(self, nodes: Sequence[str], now: float, want_progress: bool) -> MetricsWindow:
        settings = self.settings
        times = window_times(now, settings.history_seconds, settings.step_seconds)
        start, step, samples = float(times[0]), settings.step_seconds, len(times)
        q = self.querier
        try:
            memory = q.node_memory_used(nodes, start, step, samples)
            if not (~np.isnan(memory)).any():
                raise SourceUnavailable("Prometheus returned no node memory data "
                                        f"(query: {q.promql.node_memory_used}; check GUARDGRID_NODE_LABEL="
                                        f"{settings.node_label!r} against your node-exporter labels)")
            ready = q.node_ready(nodes, start, step, samples)
            oom_counter = q.node_oom_counter(nodes, start, step, samples)
            at = float(times[-1])
            pod_oom_kills = q.pod_oom_kills_by_node(nodes, at)
            peaks = q.pod_memory_peaks(at)
            killed = q.pod_oom_killed(at)
            progress = q.progress_history(start, at, step) if want_progress else {}
        except QueryError as exc:
            raise SourceUnavailable(str(exc)) from exc
        return MetricsWindow("prometheus", tuple(nodes), times, step, memory, ready, oom_counter, pod_oom_kills,
                             peaks, killed, progress)


class SyntheticSource(MetricsSource):
    """A made-up history derived from requests, for the local demo only (see the module docstring)."""

    name = "synthetic"
    UTILISATION = 0.7
    WAVE = 0.05  # +-5% over an hour
    WAVE_SECONDS = 3600.0

    def __init__(self, settings: Settings, state: Callable[[], ClusterState]) -> None:
        self.settings = settings
        self.state = state
        log.warning("GUARDGRID_PROMETHEUS_URL is empty: the predictor uses a SYNTHETIC memory history derived "
                    "from pod requests (local demo only; forecasts say nothing about real usage)")

    def fetch(self, nodes: Sequence[str], now: float, want_progress: bool) -> MetricsWindow:
        state = self.state()
        table = state.table
        times = window_times(now, self.settings.history_seconds, self.settings.step_seconds)
        base = np.zeros(len(nodes))
        for i, name in enumerate(nodes):
            j = table.index.get(name)
            if j is not None:
                base[i] = max(0.0, float(table.requested[j] - table.standby[j])) * self.UTILISATION
        phase = np.array([zlib.crc32(name.encode()) % 1000 / 1000 * 2 * math.pi for name in nodes])
        wave = 1.0 + self.WAVE * np.sin(2 * math.pi * times[None, :] / self.WAVE_SECONDS + phase[:, None])
        memory = base[:, None] * wave
        peaks = {(p.namespace, p.name): p.memory_request * self.UTILISATION for p in state.all_pods()
                 if p.holds_memory and not p.is_standby}
        shape = memory.shape
        return MetricsWindow("synthetic", tuple(nodes), times, self.settings.step_seconds, memory,
                             np.ones(shape), np.zeros(shape), np.zeros(len(nodes)), peaks)


class StaticSource(MetricsSource):
    """Serves a window fixed in advance (benchmark, tests); `fail_with` makes it unavailable on demand."""

    name = "static"

    def __init__(self, window: MetricsWindow) -> None:
        self.window = window
        self.fail_with = ""

    def fetch(self, nodes: Sequence[str], now: float, want_progress: bool) -> MetricsWindow:
        if self.fail_with:
            raise SourceUnavailable(self.fail_with)
        return self.window.aligned_to(nodes)


def make_source(settings: Settings, state: Callable[[], ClusterState]) -> MetricsSource:
    """Prometheus when GUARDGRID_PROMETHEUS_URL is set, else the synthetic demo source."""
    if settings.prometheus_url:
        return PrometheusSource(settings)
    return SyntheticSource(settings, state)
