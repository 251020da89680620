"""One predictor cycle: query -> forecast -> fault rates -> risk -> plan -> reconcile -> advice -> migration ->
snapshot.

Degradation (Prometheus down, slow, erroring or without data): the cycle keeps the last good per-node
forecast, publishes it with `stale: true` and its original `generated_at`, sets guardgrid_prometheus_up to 0,
logs why (once per outage, then when it ends), keeps the mode, and does not touch standby slots at all: a
slot is never deleted because data is missing. Nodes that simply have no series (a new node, a node-exporter
gap) are left out of the snapshot's `nodes`, so the extender judges them on requests, and count in the plan
with their requested memory as their use.

Every replica runs the cycle and serves its snapshot; only the leader reconciles slots and migrates.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from guardgrid.checkpoint import advise_jobs, placements_from_pods
from guardgrid.config import Settings
from guardgrid.faults import counter_increase, fault_rates, notready_episodes, observed_hours
from guardgrid.forecast import PeakSample, forecast_memory, learn_workload_peaks
from guardgrid.kubeapi.base import KubeAPI
from guardgrid.records import PodRecord
from guardgrid.risk import oom_risk
from guardgrid.snapshot import NodeForecast, Snapshot, StandbySlot, WorkloadPeak
from guardgrid.standby import (ExistingSlot, Mode, NodeInputs, Plan, ProtectedJob, is_protected, plan_standby,
                               protected_jobs)
from guardgrid.state import ClusterState
from predictor import metrics
from predictor.migration import MigrationController
from predictor.reconcile import ReconcileResult, SlotStatus, StandbyReconciler, is_managed_slot
from predictor.sources import MetricsSource, MetricsWindow, SourceUnavailable

__all__ = ["PredictorCycle", "CycleReport", "NodeFigures", "AVOID_NODE_SECONDS", "JOB_GONE_GRACE_SECONDS"]

log = logging.getLogger(__name__)
FloatArray = npt.NDArray[np.float64]

AVOID_NODE_SECONDS = 3600.0  # a node where a slot stayed pending too long gets no new slot for this long
# A job seen with pods this recently keeps its slots while it has none (its replacement pod is on its way).
# After a restart, jobs known only from their slots count as seen at the first cycle: the grace restarts too.
JOB_GONE_GRACE_SECONDS = 600.0


@dataclass(frozen=True)
class NodeFigures:
    """Per-node results of the last good forecast, by node name."""

    index: Mapping[str, int]
    mean: FloatArray  # NaN: no data for the node
    spread: FloatArray
    failures: FloatArray  # failures counted in the window
    hours: FloatArray  # hours of observation
    at: float

    def aligned(self, names: Sequence[str]) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        rows = np.array([self.index.get(name, -1) for name in names], dtype=np.int64)
        known = rows >= 0
        safe = np.maximum(rows, 0)

        def pick(values: FloatArray, missing: float) -> FloatArray:
            if not len(values):
                return np.full(len(names), missing)
            return np.where(known, values[safe], missing)

        return pick(self.mean, np.nan), pick(self.spread, np.nan), pick(self.failures, 0.0), pick(self.hours, 0.0)


@dataclass
class PodView:
    """The cluster's pods sorted once per cycle into what each step needs (one pass over 150k pods, not six)."""

    all: list[PodRecord]
    slots: list[PodRecord]  # GuardGrid's own standby pods, any phase
    protected: list[PodRecord]  # training pods of protected jobs, bound or pending
    with_job: list[PodRecord]  # live, bound pods of any job (checkpoint advice)
    jobs_of_bound: dict[tuple[str, str], str]  # (namespace, pod) -> job, for pods holding memory now

    @classmethod
    def of(cls, pods: list[PodRecord]) -> PodView:
        slots, protected, with_job = [], [], []
        jobs_of_bound: dict[tuple[str, str], str] = {}
        for pod in pods:
            if pod.is_standby:
                if is_managed_slot(pod):
                    slots.append(pod)
                continue
            job = pod.job
            if not job:
                continue
            if pod.holds_memory and not pod.terminating:
                with_job.append(pod)
                jobs_of_bound[(pod.namespace, pod.name)] = job
            if is_protected(pod):
                protected.append(pod)
        return cls(pods, slots, protected, with_job, jobs_of_bound)


@dataclass
class CycleReport:
    snapshot: Snapshot
    source: str
    stale: bool
    reason: str = ""
    leader: bool = False
    plan: Plan | None = None
    reconcile: ReconcileResult | None = None
    slots: list[SlotStatus] = field(default_factory=list)
    duration_seconds: float = 0.0


class PredictorCycle:
    """Holds what must survive between cycles: last good forecast, mode, learned peaks, pod->job names."""

    def __init__(self, settings: Settings, state: ClusterState, source: MetricsSource, api: KubeAPI,
                 leader: Callable[[], bool] = lambda: True, clock: Callable[[], float] = time.time,
                 migration: MigrationController | None = None) -> None:
        self.settings = settings
        self.state = state
        self.source = source
        self.api = api
        self.leader = leader
        self.clock = clock
        self.reconciler = StandbyReconciler(api, clock)
        self.migration = migration if migration is not None else MigrationController(api, settings, clock)
        self.mode: Mode = "proactive"
        self.last_good: NodeFigures | None = None
        self.workloads: dict[str, float] = {}
        self.stale_reason = ""
        self._pod_jobs: dict[tuple[str, str], tuple[str, float]] = {}  # (ns, pod) -> (job, last seen)
        self._avoid_until: dict[str, float] = {}
        self._job_seen: dict[str, float] = {}  # protected job -> last time it had pods

    # --- the cycle ----------------------------------------------------------------------------------------
    def run(self) -> CycleReport:
        started = time.perf_counter()
        settings = self.settings
        now = self.clock()
        table = self.state.table
        names = [node.name for node in table.nodes]
        pods = PodView.of(self.state.all_pods())
        self._remember_jobs(pods.jobs_of_bound, now)

        window: MetricsWindow | None = None
        reason = ""
        try:
            if not names:
                raise SourceUnavailable("the cluster has no nodes yet")
            window = self.source.fetch(names, now, want_progress=settings.migration_enabled)
            if window.nodes_with_memory_data == 0:
                raise SourceUnavailable(f"{self.source.name} returned no node memory data")
        except SourceUnavailable as exc:
            window, reason = None, str(exc)
        stale = window is None
        self._log_staleness(reason)

        allocatable = table.allocatable.copy()
        requested_use = np.maximum(table.requested - table.standby, 0.0)
        if window is not None:
            forecast = forecast_memory(window.memory_used, window.step_seconds, settings.horizon_seconds)
            failures = notready_episodes(window.ready) + np.maximum(counter_increase(window.oom_counter),
                                                                     window.pod_oom_kills)
            hours = np.maximum(observed_hours(window.ready, window.step_seconds),
                               observed_hours(window.memory_used, window.step_seconds))
            self.last_good = NodeFigures({n: i for i, n in enumerate(names)}, forecast.mean, forecast.spread,
                                         failures, hours, now)
            mean, spread = forecast.mean, forecast.spread
            self.workloads = self._learn_peaks(window, now)
        elif self.last_good is not None:
            mean, spread, failures, hours = self.last_good.aligned(names)
        else:
            mean = spread = np.full(len(names), np.nan)
            failures, hours = np.zeros(len(names)), np.zeros(len(names))
        covered = np.isfinite(mean) & np.isfinite(spread)
        use = np.where(np.isfinite(mean), mean, requested_use)
        sigma = np.where(np.isfinite(spread), spread, settings.fallback_spread * allocatable)
        with np.errstate(divide="ignore", invalid="ignore"):
            load = np.where(allocatable > 0, use / allocatable, 1.0)
        rates = fault_rates(failures, hours, load, settings.fault_prior_rate_per_hour, settings.fault_prior_hours)
        risk = oom_risk(use, allocatable, sigma)

        jobs = protected_jobs(pods.protected)
        is_leader = bool(self.leader())
        plan: Plan | None = None
        result: ReconcileResult | None = None
        if not stale:
            ready = table.ready.copy()
            for name, until in list(self._avoid_until.items()):
                if until <= now:
                    del self._avoid_until[name]
                elif name in table.index:
                    ready[table.index[name]] = False
            inputs = NodeInputs(names, allocatable, use, sigma, rates, allocatable - table.requested, ready,
                                table.index)
            existing = self.reconciler.existing(pods.slots)
            plan = plan_standby(inputs, jobs, existing, self.mode, settings,
                                self._held_jobs(jobs, pods, existing, now))
            if plan.mode != self.mode:
                log.warning("mode %s -> %s: cluster memory load %.2f (enter reactive above %.2f, leave below %.2f)",
                            self.mode, plan.mode, plan.load, settings.reactive_enter_load,
                            settings.reactive_exit_load)
            self.mode = plan.mode
            if is_leader:
                result = self.reconciler.reconcile(plan, jobs, pods.slots, allow_delete=True)
                for node in result.timed_out_nodes:
                    self._avoid_until[node] = now + AVOID_NODE_SECONDS
        if result is not None:
            slots = result.slots
        else:
            planned = [SlotStatus(s.job, s.node, s.memory, "", "planned") for s in plan.slots if not s.keep] \
                if plan is not None else []
            slots = self.reconciler.observe(pods.slots, planned)

        rate_by_node = {name: float(rates[i]) for i, name in enumerate(names)}
        risk_by_node = {name: float(risk[i]) for i, name in enumerate(names)}
        advice = advise_jobs(placements_from_pods(pods.with_job), rate_by_node, settings)
        if is_leader and not stale and window is not None and settings.migration_enabled:
            load_by_node = {name: float(load[i]) for i, name in enumerate(names)}
            try:
                self.migration.run_cycle(pods.all, load_by_node, risk_by_node, window.progress)
            except Exception:  # noqa: BLE001 - migration is optional; the snapshot must still be published
                log.exception("speculative migration failed this cycle")

        generated_at = now if not stale else (self.last_good.at if self.last_good is not None else now)
        nodes = {}
        for i in np.flatnonzero(covered):
            nodes[names[i]] = NodeForecast(forecast_mean_bytes=float(mean[i]), forecast_std_bytes=float(spread[i]),
                                           fault_rate_per_hour=float(rates[i]),
                                           allocatable_bytes=float(allocatable[i]), oom_risk=float(risk[i]))
        ready_mask = table.ready & np.isfinite(use)
        capacity = float(allocatable[ready_mask].sum())
        snapshot = Snapshot(
            generated_at=generated_at, horizon_seconds=settings.horizon_seconds, stale=stale, mode=self.mode,
            cluster_memory_load=float(use[ready_mask].sum()) / capacity if capacity > 0 else 0.0,
            nodes=nodes,
            workloads={name: WorkloadPeak(peak) for name, peak in self.workloads.items()},
            standby=tuple(StandbySlot(s.job, s.node, s.memory, s.pod, s.state) for s in slots),
            jobs=advice,
            source=window.source if window is not None else self.source.name,
        )
        duration = time.perf_counter() - started
        report = CycleReport(snapshot, window.source if window is not None else self.source.name, stale, reason,
                             is_leader, plan, result, slots, duration)
        self._publish_metrics(report, risk_by_node, rate_by_node, now)
        return report

    # --- helpers ------------------------------------------------------------------------------------------
    def _remember_jobs(self, jobs_of_bound: Mapping[tuple[str, str], str], now: float) -> None:
        """pod -> job names outlive the pods for one history window: peaks of finished pods still count."""
        for key, job in jobs_of_bound.items():
            self._pod_jobs[key] = (job, now)
        horizon = now - self.settings.history_seconds
        for key in [k for k, (_, last) in self._pod_jobs.items() if last < horizon]:
            del self._pod_jobs[key]

    def _held_jobs(self, jobs: Sequence[ProtectedJob], pods: PodView, existing: Sequence[ExistingSlot],
                   now: float) -> set[str]:
        """Jobs whose slots stay whatever the plan says: recovering (pending pod) or briefly without pods."""
        protected = {job.name for job in jobs}
        for name in protected:
            self._job_seen[name] = now
        for slot in existing:
            self._job_seen.setdefault(slot.job, now)
        for name in [n for n, seen in self._job_seen.items() if now - seen > JOB_GONE_GRACE_SECONDS]:
            del self._job_seen[name]
        recovering = {p.job for p in pods.protected if not p.node_name}
        return recovering | (set(self._job_seen) - protected)

    def _learn_peaks(self, window: MetricsWindow, now: float) -> dict[str, float]:
        samples = []
        for key, peak in window.pod_peaks.items():
            entry = self._pod_jobs.get(key)
            if entry is not None:
                samples.append(PeakSample(entry[0], peak, key in window.pod_oom_killed))
        return learn_workload_peaks(samples)

    def _log_staleness(self, reason: str) -> None:
        if reason and reason != self.stale_reason:
            kept = "keeping the last good forecast (stale)" if self.last_good is not None else "no forecast yet"
            log.warning("metrics source %s unavailable: %s; %s, standby slots left untouched", self.source.name,
                        reason, kept)
        elif not reason and self.stale_reason:
            log.info("metrics source %s is back; forecasts are fresh again", self.source.name)
        self.stale_reason = reason

    def _publish_metrics(self, report: CycleReport, risk: Mapping[str, float], rate: Mapping[str, float],
                         now: float) -> None:
        metrics.publish_nodes(risk, rate)
        counts = {"ready": 0, "pending": 0}
        for slot in report.slots:
            if slot.state in counts:
                counts[slot.state] += 1
        wanted = report.plan.wanted if report.plan is not None else counts["ready"] + counts["pending"]
        metrics.STANDBY_SLOTS.labels("wanted").set(wanted)
        metrics.STANDBY_SLOTS.labels("ready").set(counts["ready"])
        metrics.STANDBY_SLOTS.labels("pending").set(counts["pending"])
        metrics.MODE.set(1 if self.mode == "reactive" else 0)
        metrics.PROMETHEUS_UP.set(1 if not report.stale and report.source == "prometheus" else 0)
        if not report.stale:
            metrics.LAST_SUCCESS.set(now)
        metrics.CYCLE_DURATION.observe(report.duration_seconds)
