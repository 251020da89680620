"""The simulation seen through GuardGrid's own interfaces: a `KubeAPI` and a predictor `MetricsSource`.

Why adapters and not a copy of the predictor: the GuardGrid policies run the predictor's real
`PredictorCycle` (forecast, fault rates, standby plan, reconcile, checkpoint advice, migration) unchanged.
It reads the cluster from the same `ClusterState` the simulation keeps, its history from
`SimulationSource` (what Prometheus would return for the simulated cluster: node memory in use, readiness,
OOM-kill counters, per-pod peaks, training progress), and it acts through `SimulationKubeAPI`: a created
standby pod is bound by the simulated default scheduler, a deleted one disappears, an eviction moves a job.
GuardGrid never sees the simulation's true memory model, only the history a monitoring system would have.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from evaluation.sim.cluster import EPOCH, SIM_NAMESPACE
from guardgrid import keys
from guardgrid.kubeapi.base import (EvictionOutcome, EvictionResult, Kind, KubeAPI, KubeAPIError, ListResult,
                                    WatchEvent)
from guardgrid.records import PodRecord, RecordError, pod_from_dict
from predictor.progress import ProgressSeries
from predictor.sources import MetricsSource, MetricsWindow, SourceUnavailable

if TYPE_CHECKING:
    from evaluation.sim.engine import Simulation

__all__ = ["SimulationKubeAPI", "SimulationSource"]


def _affinity_node(manifest: Mapping[str, Any]) -> str:
    """The node a required node affinity (matchFields metadata.name In [node]) pins the pod to."""
    spec = manifest.get("spec") or {}
    terms = (((spec.get("affinity") or {}).get("nodeAffinity") or {})
             .get("requiredDuringSchedulingIgnoredDuringExecution") or {}).get("nodeSelectorTerms") or []
    for term in terms:
        for field in list(term.get("matchFields") or []) + list(term.get("matchExpressions") or []):
            if field.get("operator") == "In" and field.get("values"):
                return str(field["values"][0])
    return str(spec.get("nodeName") or "")


class SimulationKubeAPI(KubeAPI):
    """GuardGrid's API calls applied to the simulated cluster (what kube-apiserver + scheduler would do)."""

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.created: list[str] = []
        self.deleted: list[str] = []
        self.evictions: list[str] = []
        self.events: list[tuple[str, str]] = []  # (pod key, reason)

    def list(self, kind: Kind) -> ListResult:
        state = self.sim.cluster.state
        items = list(state.table.nodes) if kind == "nodes" else state.all_pods()
        return ListResult(items, "1")

    def watch(self, kind: Kind, resource_version: str, timeout_seconds: float) -> Iterator[WatchEvent]:
        return iter(())  # the simulation updates the ClusterState directly; nothing to watch

    def create_pod(self, manifest: Mapping[str, Any]) -> PodRecord:
        obj = copy.deepcopy(dict(manifest))
        meta = obj.setdefault("metadata", {})
        name = meta.get("name")
        if not name:
            raise KubeAPIError("pod needs metadata.name", 422, "Invalid")
        meta.setdefault("namespace", SIM_NAMESPACE)
        meta["uid"] = name  # unique within the simulation; the state keys pods by uid
        meta["creationTimestamp"] = _rfc3339(EPOCH + self.sim.now)
        spec = obj.setdefault("spec", {})
        if spec.get("priorityClassName") == keys.PRIORITY_CLASS_STANDBY:
            spec["priority"] = keys.PRIORITY_STANDBY  # what the Priority admission plugin resolves
        obj["status"] = {"phase": "Pending"}
        try:
            record = pod_from_dict(obj)
        except RecordError as exc:
            raise KubeAPIError(f"pod rejected: {exc}", 422, "Invalid") from None
        if record.uid in self.sim.cluster.pods or record.uid in self.sim.cluster.pending:
            raise KubeAPIError(f'pods "{name}" already exists', 409, "AlreadyExists")
        if not record.is_standby:
            raise KubeAPIError("the simulation only lets GuardGrid create standby pods", 403, "Forbidden")
        # pod_from_dict keeps the created_at it parsed (whole seconds); use the exact simulated instant.
        record = _with_created(record, EPOCH + self.sim.now)
        self.sim.create_slot(record, _affinity_node(obj))
        self.created.append(record.key)
        return record

    def delete_pod(self, namespace: str, name: str, grace_period_seconds: int = 0) -> bool:
        removed = self.sim.remove_slot(name)
        if removed:
            self.deleted.append(f"{namespace}/{name}")
        return removed

    def evict_pod(self, namespace: str, name: str) -> EvictionResult:
        job = self.sim.job_of_pod(name)
        if job is None or not self.sim.evict_for_migration(job):
            return EvictionResult(EvictionOutcome.NOT_FOUND, f'pods "{name}" not found')
        self.evictions.append(f"{namespace}/{name}")
        return EvictionResult(EvictionOutcome.EVICTED)

    def create_event(self, pod: PodRecord, reason: str, message: str, event_type: str = "Normal") -> None:
        self.events.append((pod.key, reason))

    def acquire_lease(self, namespace: str, name: str, identity: str, duration_seconds: int) -> bool:
        return True


def _rfc3339(epoch: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, tz=datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _with_created(record: PodRecord, created: float) -> PodRecord:
    import dataclasses

    return dataclasses.replace(record, created_at=created)


class SimulationSource(MetricsSource):
    """The simulated cluster's monitoring history, shaped as the predictor's Prometheus queries return it."""

    name = "simulation"

    def __init__(self, sim: Simulation) -> None:
        self.sim = sim
        self.fetches = 0

    def fetch(self, nodes: Sequence[str], now: float, want_progress: bool) -> MetricsWindow:
        sim = self.sim
        self.fetches += 1
        step = sim.params.tick_seconds
        memory = sim.history(sim.mem_history)
        samples = memory.shape[1]
        if samples < 2:
            raise SourceUnavailable("the simulation has fewer than two samples of history yet")
        index = sim.cluster.index
        rows = np.array([index.get(name, -1) for name in nodes], dtype=np.int64)
        if np.any(rows < 0):
            raise SourceUnavailable("unknown node asked for")
        ready = sim.history(sim.ready_history)[rows]
        oom = sim.history(sim.oom_history)[rows]
        memory = memory[rows]
        end = EPOCH + (sim.now // step) * step
        times = end - step * np.arange(samples - 1, -1, -1, dtype=np.float64)
        window_start = sim.now - samples * step
        peaks: dict[tuple[str, str], float] = {}
        killed: set[tuple[str, str]] = set()
        for job in sim.jobs:
            for uid, ended, peak, oom_killed in reversed(job.peaks):
                if ended < window_start:
                    break  # older pods have left Prometheus' window
                key = (SIM_NAMESPACE, uid)
                peaks[key] = max(peaks.get(key, 0.0), peak)
                if oom_killed:
                    killed.add(key)
            if job.pod_uid and sim.bound[job.index]:
                key = (SIM_NAMESPACE, job.pod_uid)
                peaks[key] = max(peaks.get(key, 0.0), float(sim.max_usage[job.index]))
        progress: dict[str, ProgressSeries] = {}
        if want_progress:
            oldest = EPOCH + window_start
            for job in sim.jobs:
                if job.progress_t and job.progress_t[-1] >= oldest:
                    progress[job.name] = ProgressSeries(np.asarray(job.progress_t), np.asarray(job.progress_v))
        return MetricsWindow(source=self.name, nodes=tuple(nodes), times=times, step_seconds=step,
                             memory_used=memory, ready=ready, oom_counter=oom,
                             pod_oom_kills=np.zeros(len(nodes)), pod_peaks=peaks, pod_oom_killed=frozenset(killed),
                             progress=progress)
