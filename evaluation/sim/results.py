"""What a simulation run records, and the per-policy figures the report shows.

Every failure gets a `RecoveryRecord` whose outcome is one of: recovered (training resumed), failed_again
(the job failed once more before resuming; the new failure has its own record), or unfinished (the run
ended first). Nothing is dropped: `Summary` counts each outcome, and the tests check that failures =
recovered + failed_again + unfinished.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from evaluation.sim.params import GiB

__all__ = ["RecoveryRecord", "JobOutcome", "SimResult", "Summary", "STAGES", "CAUSES", "summarise"]

STAGES = ("reschedule", "node_start", "image_pull", "dataset_load", "model_load")
CAUSES = ("oom", "node")


@dataclass
class RecoveryRecord:
    job: str
    cause: str  # "oom", "node" or "migration" (a planned move, not a failure)
    failed_at: float
    node: str
    lost_work: float  # seconds of training to redo
    pending_at: float = math.nan  # the replacement pod exists
    bound_at: float = math.nan
    resumed_at: float = math.nan
    stages: dict[str, float] = field(default_factory=dict)
    outcome: str = "unfinished"
    standby_used: bool = False  # took over its own standby slot (preempted it)
    on_slot_node: bool = False  # bound onto a node holding (or just freed by preempting) its own standby slot
    replacement_ready_at: float = math.nan  # node failures: when the failed node's replacement is Ready
    image_warm: bool = False

    @property
    def recovery_seconds(self) -> float:
        return self.resumed_at - self.failed_at


@dataclass(frozen=True)
class JobOutcome:
    job: str
    submit: float
    finish: float  # NaN: unfinished when the run ended
    work: float
    restarts: int


@dataclass
class SimResult:
    workload: str
    policy: str
    seed: int
    end_time: float
    cluster_memory: float
    recoveries: list[RecoveryRecord]
    jobs: list[JobOutcome]
    oom_kills: int
    node_failures: int
    job_seconds: float  # time jobs held a pod (loading or training)
    standby_byte_seconds: float
    lost_work_seconds: float
    checkpoint_seconds: float  # time spent writing checkpoints
    migrations: int
    standby_takeovers: int
    calls: dict[str, int] = field(default_factory=dict)  # core GuardGrid functions called, by name


@dataclass(frozen=True)
class Summary:
    """One row of the results table."""

    workload: str
    policy: str
    failures: int
    oom_kills: int
    node_failures: int
    recovered: int
    failed_again: int
    unrecovered: int
    recovery_mean_s: float
    recovery_median_s: float
    recovery_p95_s: float
    stage_mean_s: dict[str, float]
    by_cause: dict[str, tuple[int, float, float]]  # cause -> (recovered, mean s, median s)
    oom_per_1000_job_hours: float
    jct_mean_h: float
    makespan_h: float
    unfinished_jobs: int
    standby_mean_gib: float
    standby_pct: float
    lost_work_h: float
    checkpoint_h: float
    migrations: int
    standby_takeovers: int
    warm_from_slot: int  # recoveries that landed on their own standby slot's node
    reactive_pct: float  # share of predictor cycles in reactive mode (NaN without a predictor)
    seeds: int
    job_hours: float

    def as_row(self) -> dict[str, str]:
        """CSV row with fixed formatting, so the same result always gives the same bytes."""
        row = {
            "workload": self.workload, "policy": self.policy,
            "failures": str(self.failures), "oom_kills": str(self.oom_kills),
            "node_failures": str(self.node_failures), "recovered": str(self.recovered),
            "failed_again": str(self.failed_again), "unrecovered": str(self.unrecovered),
            "recovery_mean_s": _fmt(self.recovery_mean_s), "recovery_median_s": _fmt(self.recovery_median_s),
            "recovery_p95_s": _fmt(self.recovery_p95_s),
        }
        for cause in CAUSES:
            count, mean, median = self.by_cause.get(cause, (0, math.nan, math.nan))
            row[f"{cause}_recovered"] = str(count)
            row[f"{cause}_recovery_mean_s"] = _fmt(mean)
            row[f"{cause}_recovery_median_s"] = _fmt(median)
        for stage in STAGES:
            row[f"{stage}_mean_s"] = _fmt(self.stage_mean_s.get(stage, math.nan))
        row.update({
            "oom_per_1000_job_hours": _fmt(self.oom_per_1000_job_hours), "jct_mean_h": _fmt(self.jct_mean_h),
            "makespan_h": _fmt(self.makespan_h), "unfinished_jobs": str(self.unfinished_jobs),
            "standby_mean_gib": _fmt(self.standby_mean_gib), "standby_pct_of_cluster": _fmt(self.standby_pct),
            "lost_work_h": _fmt(self.lost_work_h), "checkpoint_h": _fmt(self.checkpoint_h),
            "migrations": str(self.migrations), "standby_takeovers": str(self.standby_takeovers),
            "recoveries_on_slot_node": str(self.warm_from_slot), "reactive_pct": _fmt(self.reactive_pct),
            "job_hours": _fmt(self.job_hours),
            "seeds": str(self.seeds),
        })
        return row


def _fmt(value: float) -> str:
    return "nan" if value is None or math.isnan(value) else f"{value:.3f}"


def _mean(values: Sequence[float]) -> float:
    return float(np.mean(values)) if len(values) else math.nan


def _by_cause(recovered: Sequence[RecoveryRecord], cause: str) -> tuple[int, float, float]:
    times = [r.recovery_seconds for r in recovered if r.cause == cause]
    return len(times), _mean(times), float(np.median(times)) if times else math.nan


def summarise(results: SimResult | Sequence[SimResult]) -> Summary:
    """The table row for one (workload, policy), pooled over the runs given (one per seed)."""
    runs = [results] if isinstance(results, SimResult) else list(results)
    if not runs:
        raise ValueError("summarise: no results")
    first = runs[0]
    if any(r.workload != first.workload or r.policy != first.policy for r in runs):
        raise ValueError("summarise: results of different workloads or policies cannot be pooled")
    recoveries = [rec for r in runs for rec in r.recoveries]
    failures = [rec for rec in recoveries if rec.cause != "migration"]
    recovered = [rec for rec in failures if rec.outcome == "recovered"]
    times = [rec.recovery_seconds for rec in recovered]
    jct: list[float] = []
    makespans: list[float] = []
    unfinished = 0
    for r in runs:
        finished = [j for j in r.jobs if not math.isnan(j.finish)]
        unfinished += len(r.jobs) - len(finished)
        jct.extend((j.finish - j.submit) / 3600.0 for j in finished)
        if finished:
            makespans.append((max(j.finish for j in finished) - min(j.submit for j in r.jobs)) / 3600.0)
    job_hours = sum(r.job_seconds for r in runs) / 3600.0
    oom = sum(r.oom_kills for r in runs)
    elapsed = sum(r.end_time for r in runs)
    standby_mean = sum(r.standby_byte_seconds for r in runs) / elapsed / GiB if elapsed > 0 else 0.0
    cluster = first.cluster_memory
    cycles = sum(r.calls.get("predictor.cycle", 0) for r in runs)
    return Summary(
        workload=first.workload, policy=first.policy,
        failures=len(failures), oom_kills=oom, node_failures=sum(r.node_failures for r in runs),
        recovered=len(recovered),
        failed_again=sum(1 for rec in failures if rec.outcome == "failed_again"),
        unrecovered=sum(1 for rec in failures if rec.outcome == "unfinished"),
        recovery_mean_s=_mean(times),
        recovery_median_s=float(np.median(times)) if times else math.nan,
        recovery_p95_s=float(np.percentile(times, 95)) if times else math.nan,
        by_cause={cause: _by_cause(recovered, cause) for cause in CAUSES},
        stage_mean_s={stage: _mean([rec.stages.get(stage, 0.0) for rec in recovered]) for stage in STAGES},
        oom_per_1000_job_hours=oom / job_hours * 1000.0 if job_hours > 0 else math.nan,
        jct_mean_h=_mean(jct), makespan_h=_mean(makespans),
        unfinished_jobs=unfinished,
        standby_mean_gib=standby_mean,
        standby_pct=100.0 * standby_mean * GiB / cluster if cluster else 0.0,
        lost_work_h=sum(r.lost_work_seconds for r in runs) / 3600.0,
        checkpoint_h=sum(r.checkpoint_seconds for r in runs) / 3600.0,
        migrations=sum(r.migrations for r in runs), standby_takeovers=sum(r.standby_takeovers for r in runs),
        warm_from_slot=sum(1 for rec in recovered if rec.on_slot_node),
        reactive_pct=100.0 * sum(r.calls.get("predictor.reactive", 0) for r in runs) / cycles if cycles else math.nan,
        seeds=len(runs), job_hours=job_hours,
    )
