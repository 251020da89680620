"""Every PromQL query the predictor runs, and the one client that runs them.

Why one module: the queries encode assumptions about the cluster's exporters (node-exporter, kube-state-metrics,
cAdvisor) and its relabelling; an operator adapting GuardGrid to a cluster reads and changes them here.

Label joins. kube-state-metrics always names the node in a `node` label. node-exporter series carry whatever
the scrape configuration gave them, so `GUARDGRID_NODE_LABEL` says which label holds the node name:
- `node` (kube-prometheus relabels node-exporter targets with the Kubernetes node name; the default),
- `instance` (plain scrape configs: `host:9100`; `GUARDGRID_INSTANCE_STRIP_PORT` drops the `:9100`),
- `nodename`: join with `node_uname_info`, whose `nodename` is the host name, which equals the node name on
  most distributions: `... * on(instance) group_left(nodename) node_uname_info`.
Values that match no node of the cluster are ignored (and counted in the log).

Caching: answers are kept in a cachetools TTLCache for half a cycle, keyed by the query and its time range
(aligned to the step), so consumers within one cycle share one request and the next cycle asks again.
Timeouts: `GUARDGRID_HTTP_TIMEOUT_SECONDS` both client-side and as Prometheus' own `timeout` parameter, and
no retries: the next cycle is the retry, and a slow Prometheus must not stretch a cycle.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from typing import Any

import numpy as np
import numpy.typing as npt
import requests
from cachetools import TTLCache
from prometheus_api_client import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect
from urllib3.util.retry import Retry

from guardgrid.config import Settings
from predictor.progress import (ProgressDataError, ProgressSeries, progress_query,
                                series_from_prometheus_matrix)

__all__ = ["PromQL", "PrometheusQuerier", "QueryError", "node_name_from_label", "matrix_rows"]

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]

_LABEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_]*$")


class QueryError(RuntimeError):
    """Prometheus could not answer (unreachable, slow, HTTP error, malformed body); the message says which."""


def node_name_from_label(value: str, strip_port: bool) -> str:
    """`worker-1:9100` -> `worker-1`, `[fd00::1]:9100` -> `fd00::1`; an IPv6 address without port stays."""
    if not strip_port:
        return value
    if value.startswith("["):
        end = value.find("]")
        return value[1:end] if end > 0 else value
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host
    return value


class PromQL:
    """The query texts, built once from settings."""

    def __init__(self, settings: Settings) -> None:
        if not _LABEL_NAME.match(settings.node_label):
            raise ValueError(f"GUARDGRID_NODE_LABEL={settings.node_label!r} is not a Prometheus label name")
        self.node_label = settings.node_label
        self.window = f"{int(settings.history_seconds)}s"
        self.step = f"{max(1, int(round(settings.step_seconds)))}s"
        self._progress = progress_query(settings.progress_metric, settings.progress_job_label,
                                        settings.progress_direction)  # type: ignore[arg-type]

    def _by_node(self, expr: str) -> str:
        """One series per node of a node-exporter expression, joined per GUARDGRID_NODE_LABEL."""
        if self.node_label == "nodename":
            return f"max by (nodename) (({expr}) * on(instance) group_left(nodename) node_uname_info)"
        return f"max by ({self.node_label}) ({expr})"

    @property
    def node_memory_used(self) -> str:
        """Bytes in use per node: what the kernel cannot hand out without reclaiming (range query)."""
        return self._by_node("node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes")

    @property
    def node_oom_kill_counter(self) -> str:
        """The kernel's OOM-kill counter per node (range query; increases counted in numpy)."""
        return self._by_node("node_vmstat_oom_kill")

    @property
    def node_ready(self) -> str:
        """1 while the node's Ready condition is true, else 0 (range query; NotReady episodes in numpy)."""
        return 'max by (node) (kube_node_status_condition{condition="Ready",status="true"})'

    @property
    def pod_oom_kills_by_node(self) -> str:
        """Pods with an OOM-killed container in the window, per node (instant query)."""
        return (f"count by (node) ("
                f"(max by (namespace, pod) (max_over_time("
                f'kube_pod_container_status_last_terminated_reason{{reason="OOMKilled"}}[{self.window}])) > 0)'
                f" * on(namespace, pod) group_left(node) "
                f'max by (namespace, pod, node) (max_over_time(kube_pod_info{{node!=""}}[{self.window}])))')

    @property
    def pod_oom_killed(self) -> str:
        """Pods with an OOM-killed container in the window (instant query)."""
        return (f"max by (namespace, pod) (max_over_time("
                f'kube_pod_container_status_last_terminated_reason{{reason="OOMKilled"}}[{self.window}])) > 0')

    @property
    def pod_memory_peak(self) -> str:
        """Largest working set of each pod in the window (instant query over a subquery).

        Containers summed per pod at each instant (`container!=""` drops the pod-level cgroup, `POD` the pause
        container); `max by (container)` first, because cAdvisor briefly exports a restarted container twice.
        """
        inner = ('sum by (namespace, pod) (max by (namespace, pod, container) ('
                 'container_memory_working_set_bytes{container!="",container!="POD"}))')
        return f"max_over_time({inner}[{self.window}:{self.step}])"

    @property
    def progress(self) -> str:
        """One progress series per job (range query), the metric and label configurable."""
        return self._progress


def matrix_rows(result: Sequence[Mapping[str, Any]], key: Any, index: Mapping[str, int], start: float, step: float,
                samples: int) -> tuple[FloatArray, int]:
    """A range query's matrix as a (rows x samples) array aligned to `index`; NaN where there is no sample.

    `key(labels) -> str` names the row; several series for one row are merged by max. Returns the array and
    the number of series whose name matched no row.
    """
    out = np.full((len(index), samples), np.nan)
    unmatched = 0
    for element in result:
        row = index.get(key(element.get("metric") or {}))
        if row is None:
            unmatched += 1
            continue
        values = element.get("values") or []
        if not values:
            continue
        pairs = np.asarray(values, dtype=object)
        times = pairs[:, 0].astype(np.float64)
        numbers = pairs[:, 1].astype(np.float64)
        columns = np.rint((times - start) / step).astype(np.int64)
        keep = (columns >= 0) & (columns < samples) & np.isfinite(numbers)
        current = out[row, columns[keep]]
        out[row, columns[keep]] = np.fmax(current, numbers[keep])
    return out, unmatched


def _instant_value(element: Mapping[str, Any]) -> float:
    return float((element.get("value") or [0, "nan"])[1])


class PrometheusQuerier:
    """Runs PromQL through prometheus-api-client, with the per-cycle cache and the label joins."""

    def __init__(self, settings: Settings, session: requests.Session | None = None) -> None:
        self.settings = settings
        self.promql = PromQL(settings)
        self._timeout = settings.http_timeout_seconds
        self._client = PrometheusConnect(url=settings.prometheus_url.rstrip("/"), disable_ssl=False,
                                         retry=Retry(total=0, read=False, raise_on_status=False), session=session,
                                         timeout=self._timeout)
        self._cache: TTLCache[tuple[Any, ...], list[dict[str, Any]]] = TTLCache(
            maxsize=64, ttl=max(0.05, settings.cycle_seconds / 2))
        self._lock = threading.Lock()

    def close(self) -> None:
        self._client.close()

    def node_name(self, labels: Mapping[str, str]) -> str:
        label = "nodename" if self.promql.node_label == "nodename" else self.promql.node_label
        return node_name_from_label(str(labels.get(label, "")), self.settings.instance_strip_port)

    # --- transport ----------------------------------------------------------------------------------------
    def _params(self) -> dict[str, str]:
        return {"timeout": f"{self._timeout:g}s"}

    def _cached(self, key: tuple[Any, ...], run: Any) -> list[dict[str, Any]]:
        with self._lock:
            hit = self._cache.get(key)
        if hit is not None:
            return hit
        try:
            result = run()
        except requests.Timeout as exc:
            raise QueryError(f"Prometheus did not answer within {self._timeout:g}s: {key[1]}") from exc
        except requests.RequestException as exc:
            raise QueryError(f"Prometheus unreachable at {self.settings.prometheus_url}: "
                             f"{exc.__class__.__name__}") from exc
        except PrometheusApiClientException as exc:
            raise QueryError(f"Prometheus refused {key[1]!r}: {str(exc)[:300]}") from exc
        except (ValueError, KeyError, TypeError) as exc:
            raise QueryError(f"Prometheus answer to {key[1]!r} is not a query result: {exc}") from exc
        except Exception as exc:  # noqa: BLE001 - any transport surprise is an unavailable source, not a crash
            log.exception("unexpected error querying Prometheus")
            raise QueryError(f"unexpected error querying Prometheus: {exc.__class__.__name__}: {exc}") from exc
        if not isinstance(result, list):
            raise QueryError(f"Prometheus answer to {key[1]!r} is not a list of series")
        with self._lock:
            self._cache[key] = result
        return result

    def range_query(self, query: str, start: float, end: float, step: float) -> list[dict[str, Any]]:
        begin = datetime.fromtimestamp(start, tz=timezone.utc)
        finish = datetime.fromtimestamp(end, tz=timezone.utc)
        return self._cached(("range", query, start, end, step), lambda: self._client.custom_query_range(
            query, begin, finish, f"{step:g}s", params=self._params()))

    def instant_query(self, query: str, at: float) -> list[dict[str, Any]]:
        return self._cached(("instant", query, at), lambda: self._client.custom_query(
            query, params={**self._params(), "time": f"{at:.3f}"}))

    # --- the predictor's data ----------------------------------------------------------------------------
    def node_matrix(self, query: str, nodes: Sequence[str], start: float, step: float, samples: int,
                    kube_state: bool = False) -> FloatArray:
        """(nodes x samples) of a per-node range query; `kube_state` series name the node in `node`."""
        end = start + (samples - 1) * step
        result = self.range_query(query, start, end, step)
        index = {name: i for i, name in enumerate(nodes)}
        key = (lambda labels: str(labels.get("node", ""))) if kube_state else self.node_name
        matrix, unmatched = matrix_rows(result, key, index, start, step, samples)
        if unmatched:
            log.debug("%d series of %s named no known node", unmatched, query)
        return matrix

    def node_memory_used(self, nodes: Sequence[str], start: float, step: float, samples: int) -> FloatArray:
        return self.node_matrix(self.promql.node_memory_used, nodes, start, step, samples)

    def node_oom_counter(self, nodes: Sequence[str], start: float, step: float, samples: int) -> FloatArray:
        return self.node_matrix(self.promql.node_oom_kill_counter, nodes, start, step, samples)

    def node_ready(self, nodes: Sequence[str], start: float, step: float, samples: int) -> FloatArray:
        return self.node_matrix(self.promql.node_ready, nodes, start, step, samples, kube_state=True)

    def pod_oom_kills_by_node(self, nodes: Sequence[str], at: float) -> FloatArray:
        counts = np.zeros(len(nodes))
        index = {name: i for i, name in enumerate(nodes)}
        for element in self.instant_query(self.promql.pod_oom_kills_by_node, at):
            i = index.get(str((element.get("metric") or {}).get("node", "")))
            if i is not None:
                counts[i] = max(counts[i], _instant_value(element))
        return counts

    def pod_oom_killed(self, at: float) -> frozenset[tuple[str, str]]:
        killed = set()
        for element in self.instant_query(self.promql.pod_oom_killed, at):
            labels = element.get("metric") or {}
            if _instant_value(element) > 0:
                killed.add((str(labels.get("namespace", "")), str(labels.get("pod", ""))))
        return frozenset(killed)

    def pod_memory_peaks(self, at: float) -> dict[tuple[str, str], float]:
        peaks: dict[tuple[str, str], float] = {}
        for element in self.instant_query(self.promql.pod_memory_peak, at):
            labels = element.get("metric") or {}
            value = _instant_value(element)
            if np.isfinite(value):
                peaks[(str(labels.get("namespace", "")), str(labels.get("pod", "")))] = value
        return peaks

    def progress_history(self, start: float, end: float, step: float) -> dict[str, ProgressSeries]:
        """Training progress per job (label GUARDGRID_PROGRESS_JOB_LABEL) from GUARDGRID_PROGRESS_METRIC."""
        result = self.range_query(self.promql.progress, start, end, step)
        try:
            return series_from_prometheus_matrix(result, self.settings.progress_job_label)
        except ProgressDataError as exc:
            raise QueryError(f"progress metric answer unreadable: {exc}") from exc
