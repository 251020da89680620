"""Speculative migration (SpeCon): evict slow-growing, resumable jobs from contended nodes.

Why: on a node short of memory, every job slows every other. SpeCon showed that moving the jobs whose
progress has flattened lets the fast growers finish much sooner (up to 41.5% shorter completion). GuardGrid
"moves" a pod the Kubernetes way: it evicts it through the Eviction API (PodDisruptionBudgets respected,
never a plain delete), the job's controller recreates it, the scheduler (with GuardGrid's extender) places
it by OOM risk, and the webhook's checkpoint init container restores its state.

Rules, in the order they are applied each cycle (docs/migration.md explains the thresholds):
1. A node is contended when its predicted OOM risk exceeds `migration_contended_risk` or its memory load
   exceeds `migration_contended_load`.
2. Considered: bound, live, non-standby pods of a job, on a contended node, whose pod opted in
   (`guardgrid.io/migratable: "true"`) and whose job's progress growth is below alpha. Everything else is
   not a decision at all (a fast job is never touched, an un-opted pod is never even reported).
3. Slowest first. Each considered pod is vetoed (decision `skipped`) when it cannot resume (no
   `guardgrid.io/checkpoint-image`: the webhook stages a checkpoint only from an image, and
   `checkpoint-image-path` is merely a directory inside it), its job is in cool-down, the pod has run
   less than one growth window (the window would still measure its restore, not its training; unlike the
   cool-down, this rule survives a predictor restart because it reads the pod's own timestamps), or a
   per-node / cluster-wide hourly limit is spent.
4. Otherwise it is evicted (`evicted`), or in dry-run mode only reported (`dry_run`, and counted against
   the limits and cool-down exactly as an eviction would be, so a dry run shows what a real run would do).
   A 429 (PDB or API throttling) is `blocked`: no cool-down, no limit consumed, retried next cycle.
   At most one eviction per node per cycle: after it, the node's load figure is stale until the next one.
5. Every decision increments `guardgrid_migrations_total{decision,reason}` and is announced as an Event on
   the pod; the same (pod, decision, reason) is not re-announced within EVENT_REPEAT_SECONDS, so a pod
   blocked for an hour gets a handful of events rather than one per cycle.

State (cool-downs, the last hour's evictions, announced events) lives in memory: a restart forgets it.
GuardGrid cannot persist it on the objects: its RBAC allows only creating events and evictions (no pod
or job patch). The pod-age rule above bounds the damage: a freshly migrated pod is at least one window old
before it can be moved again, restart or not.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from guardgrid import keys
from guardgrid.config import Settings
from guardgrid.kubeapi.base import EvictionOutcome, KubeAPI, KubeAPIError
from guardgrid.records import PodRecord
from predictor.migration_metrics import count_decision
from predictor.progress import Direction, ProgressSeries, is_slow_growing, normalised_growth

__all__ = ["MigrationController", "MigrationDecision", "DecisionKind", "EVENT_REASONS", "EVENT_REPEAT_SECONDS"]

log = logging.getLogger(__name__)

DecisionKind = Literal["evicted", "blocked", "dry_run", "skipped"]
MetricsHook = Callable[[str, str], None]

EVENT_REASONS: Mapping[str, str] = {
    "evicted": "GuardGridMigrating",
    "blocked": "GuardGridMigrationBlocked",
    "dry_run": "GuardGridMigrationDryRun",
    "skipped": "GuardGridMigrationSkipped",
}
# Skips that need a human (a misconfigured pod, a refused call) are warnings; the rest is routine.
_WARNING_REASONS = frozenset({"no_checkpoint", "api_error"})
EVENT_REPEAT_SECONDS = 600.0
_HOUR = 3600.0


@dataclass(frozen=True)
class MigrationDecision:
    """One decision about one pod in one cycle; `reason` is the metric label, `message` the Event text."""

    job: str
    pod: str  # namespace/name
    node: str
    decision: DecisionKind
    reason: str
    growth: float
    message: str = ""


@dataclass(frozen=True)
class _Candidate:
    pod: PodRecord
    growth: float
    cause: str  # "oom_risk" or "memory_load"


class MigrationController:
    """Runs one migration cycle at a time; keeps cool-downs and rate-limit windows between cycles."""

    def __init__(self, api: KubeAPI, settings: Settings, clock: Callable[[], float] = time.time,
                 metrics: MetricsHook | None = None) -> None:
        self._api = api
        self._settings = settings
        self._clock = clock
        self._count = metrics if metrics is not None else count_decision
        self._lock = threading.Lock()
        self._recent: deque[tuple[float, str]] = deque()  # (time, node) of evictions (and dry-run ones)
        self._cooldown_until: dict[str, float] = {}  # job -> epoch seconds
        self._last_migrated: dict[str, float] = {}  # job -> epoch seconds of its last eviction
        self._announced: dict[tuple[str, str, str], float] = {}  # (pod, decision, reason) -> last event time

    # --- the cycle ---------------------------------------------------------------------------------------
    def run_cycle(self, pods: Sequence[PodRecord], node_load: Mapping[str, float], node_risk: Mapping[str, float],
                  progress: Mapping[str, ProgressSeries]) -> list[MigrationDecision]:
        """Decide (and, unless dry-run, evict) for this cycle; returns every decision made, in order.

        Returns [] when `migration_enabled` is false. Never raises for API refusals: they become decisions.
        """
        if not self._settings.migration_enabled:
            return []
        with self._lock:
            now = self._clock()
            self._forget_old(now)
            candidates = self._candidates(pods, node_load, node_risk, progress, now)
            decisions: list[MigrationDecision] = []
            relieved: set[str] = set()
            for candidate in candidates:
                if candidate.pod.node_name in relieved:
                    continue  # reconsidered next cycle, with a load figure that reflects this one's eviction
                decision = self._decide(candidate, node_load, node_risk, now)
                if decision.decision in ("evicted", "dry_run"):
                    relieved.add(candidate.pod.node_name)
                self._record(candidate.pod, decision, now)
                decisions.append(decision)
            return decisions

    def _candidates(self, pods: Sequence[PodRecord], node_load: Mapping[str, float],
                    node_risk: Mapping[str, float], progress: Mapping[str, ProgressSeries],
                    now: float) -> list[_Candidate]:
        settings = self._settings
        direction: Direction = "falling" if settings.progress_direction == "falling" else "rising"
        contended = self._contended_nodes(node_load, node_risk)
        growth_of: dict[str, float | None] = {}
        candidates: list[_Candidate] = []
        for pod in pods:
            cause = contended.get(pod.node_name)
            if cause is None or not pod.holds_memory or pod.terminating or pod.is_standby:
                continue
            job = pod.job
            if not job or pod.annotations.get(keys.MIGRATABLE, "").strip().lower() != "true":
                continue
            if job not in growth_of:
                series = progress.get(job)
                growth_of[job] = None if series is None else normalised_growth(
                    series, settings.migration_window_seconds, direction, now)
            growth = growth_of[job]
            if growth is None or not is_slow_growing(growth, settings.migration_alpha):
                continue
            candidates.append(_Candidate(pod, growth, cause))
        candidates.sort(key=lambda c: (c.growth, c.pod.key))
        return candidates

    def _contended_nodes(self, node_load: Mapping[str, float], node_risk: Mapping[str, float]) -> dict[str, str]:
        """Node -> why it is contended. NaN figures compare false: an unknown node is never contended."""
        contended: dict[str, str] = {}
        for node, load in node_load.items():
            if load > self._settings.migration_contended_load:
                contended[node] = "memory_load"
        for node, risk in node_risk.items():
            if risk > self._settings.migration_contended_risk:
                contended[node] = "oom_risk"
        return contended

    def _decide(self, candidate: _Candidate, node_load: Mapping[str, float], node_risk: Mapping[str, float],
                now: float) -> MigrationDecision:
        pod, settings = candidate.pod, self._settings
        why = (f"job {pod.job} progress growth {candidate.growth:.3f} < alpha {settings.migration_alpha:g} over the "
               f"last {settings.migration_window_seconds:.0f}s; node {pod.node_name} contended (memory load "
               f"{node_load.get(pod.node_name, math.nan):.2f}, limit {settings.migration_contended_load:g}; "
               f"OOM risk {node_risk.get(pod.node_name, math.nan):.3f}, limit {settings.migration_contended_risk:g})")
        veto = self._veto(pod, now)
        if veto is not None:
            reason, detail = veto
            return self._decision(candidate, "skipped", reason, f"{why}; not migrated: {detail}")
        if settings.migration_dry_run:
            self._note_eviction(pod, now)
            return self._decision(candidate, "dry_run", candidate.cause,
                                  f"{why}; dry run (GUARDGRID_MIGRATION_DRY_RUN=true): would evict it")
        try:
            result = self._api.evict_pod(pod.namespace, pod.name)
        except KubeAPIError as exc:
            log.warning("migration: evicting %s failed: %s (status %s)", pod.key, exc, exc.status)
            return self._decision(candidate, "skipped", "api_error",
                                  f"{why}; eviction failed: {exc} (HTTP {exc.status}); retrying next cycle")
        if result.outcome is EvictionOutcome.EVICTED:
            self._note_eviction(pod, now)
            return self._decision(candidate, "evicted", candidate.cause,
                                  f"{why}; evicted through the Eviction API to resume from "
                                  f"{_checkpoint_source(pod)} elsewhere; no new migration of the job for "
                                  f"{settings.migration_cooldown_seconds:.0f}s")
        if result.outcome is EvictionOutcome.BLOCKED:
            reason = "disruption_budget" if "budget" in result.message.lower() else "too_many_requests"
            return self._decision(candidate, "blocked", reason,
                                  f"{why}; eviction refused: {result.message or '429 Too Many Requests'}; "
                                  "retrying next cycle")
        return self._decision(candidate, "skipped", "not_found", f"{why}; the pod is already gone")

    def _veto(self, pod: PodRecord, now: float) -> tuple[str, str] | None:
        """(reason, explanation) when this pod must not be migrated now; None when it may."""
        settings = self._settings
        if not pod.annotations.get(keys.CHECKPOINT_IMAGE, "").strip():
            only_path = f" ({keys.CHECKPOINT_IMAGE_PATH} alone names a directory inside that image and has no " \
                        "effect without it)" if pod.annotations.get(keys.CHECKPOINT_IMAGE_PATH) else ""
            return ("no_checkpoint", f"it opted in but has no {keys.CHECKPOINT_IMAGE} annotation{only_path}, so "
                                     "its replacement could not resume")
        until = self._cooldown_until.get(pod.job)
        if until is not None and now < until:
            return ("cooldown", f"job migrated {now - self._last_migrated.get(pod.job, now):.0f}s ago; cool-down "
                                f"ends in {until - now:.0f}s")
        started = pod.scheduled_at if pod.scheduled_at is not None else pod.created_at
        if started is not None and now - started < settings.migration_window_seconds:
            return ("pod_too_young", f"pod has run {max(0.0, now - started):.0f}s, less than one growth window "
                                     f"({settings.migration_window_seconds:.0f}s)")
        on_node = sum(1 for _, node in self._recent if node == pod.node_name)
        if on_node >= settings.migration_max_per_node_per_hour:
            return ("node_rate_limit", f"{on_node} migration(s) from node {pod.node_name} in the last hour "
                                       f"(limit {settings.migration_max_per_node_per_hour})")
        if len(self._recent) >= settings.migration_max_per_hour:
            return ("cluster_rate_limit", f"{len(self._recent)} migration(s) cluster-wide in the last hour "
                                          f"(limit {settings.migration_max_per_hour})")
        return None

    # --- state -------------------------------------------------------------------------------------------
    def _note_eviction(self, pod: PodRecord, now: float) -> None:
        self._recent.append((now, pod.node_name))
        self._last_migrated[pod.job] = now
        self._cooldown_until[pod.job] = now + self._settings.migration_cooldown_seconds

    def _forget_old(self, now: float) -> None:
        while self._recent and self._recent[0][0] <= now - _HOUR:
            self._recent.popleft()
        for job in [job for job, until in self._cooldown_until.items() if until <= now]:
            del self._cooldown_until[job]
            self._last_migrated.pop(job, None)
        for key in [key for key, at in self._announced.items() if at <= now - EVENT_REPEAT_SECONDS]:
            del self._announced[key]

    # --- reporting ---------------------------------------------------------------------------------------
    @staticmethod
    def _decision(candidate: _Candidate, kind: DecisionKind, reason: str, message: str) -> MigrationDecision:
        pod = candidate.pod
        return MigrationDecision(job=pod.job, pod=pod.key, node=pod.node_name, decision=kind, reason=reason,
                                 growth=candidate.growth, message=message)

    def _record(self, pod: PodRecord, decision: MigrationDecision, now: float) -> None:
        """Metric always; log always; Event unless the same one was announced within EVENT_REPEAT_SECONDS."""
        self._count(decision.decision, decision.reason)
        level = logging.INFO if decision.decision in ("evicted", "dry_run") else logging.DEBUG
        log.log(level, "migration %s (%s) %s: %s", decision.decision, decision.reason, decision.pod, decision.message)
        key = (decision.pod, decision.decision, decision.reason)
        if key in self._announced:
            return
        warning = decision.decision == "blocked" or decision.reason in _WARNING_REASONS
        try:
            self._api.create_event(pod, EVENT_REASONS[decision.decision], decision.message,
                                   "Warning" if warning else "Normal")
        except KubeAPIError as exc:
            # An event is a courtesy to the user; failing to record one must not undo or stop a decision.
            log.warning("migration: could not record an event on %s: %s", pod.key, exc)
            return
        self._announced[key] = now


def _checkpoint_source(pod: PodRecord) -> str:
    source = f"checkpoint image {pod.annotations.get(keys.CHECKPOINT_IMAGE, '')}"
    path = pod.annotations.get(keys.CHECKPOINT_IMAGE_PATH)
    return f"{source} (path {path})" if path else source
