"""Checkpoint-interval advice: the Young-Daly interval sqrt(2 * C * MTBF) per training job.

Why: the cost of a failure is the work done since the last checkpoint, and the cost of a checkpoint is the
time the job stalls writing it (C). Checkpoint too often and C eats the run; too rarely and every failure
throws hours away (the checkpoint-vs-recovery trade-off Lineage Stash studies). With failures arriving at
rate 1/MTBF, the expected waste per unit time of interval T is about C/T (checkpoints) + T/(2*MTBF) (half an
interval lost per failure); its minimum is at T = sqrt(2 * C * MTBF) (Young 1974; Daly 2006 adds higher-order
terms that matter only when C approaches MTBF, which the lower bound keeps us away from).

GuardGrid already predicts a fault rate per node, so it can give each job its own T. A job fails when ANY of
its nodes fails, so its failure rate is the sum of its nodes' rates: a job spread over more (or flakier)
nodes is told to checkpoint more often. This module is pure (no I/O): the predictor calls it each cycle and
publishes the result in the snapshot's `jobs` section, where the webhook reads it.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from guardgrid import keys
from guardgrid.config import Settings
from guardgrid.records import PodRecord
from guardgrid.snapshot import JobAdvice

__all__ = ["JobPlacement", "young_daly_interval", "job_fault_rate_per_hour", "advise_jobs",
           "checkpoint_cost_of", "parse_checkpoint_cost", "placements_from_pods", "unplaced_fault_rate_per_hour",
           "advise_unplaced"]

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class JobPlacement:
    """Where a job runs now and what one checkpoint costs it (None: not annotated, use the default)."""

    job: str
    nodes: tuple[str, ...]
    checkpoint_cost_seconds: float | None


def young_daly_interval(cost_s: float, mtbf_s: float, lower_s: float, upper_s: float) -> float:
    """sqrt(2 * C * MTBF) clamped to [lower_s, upper_s]; an infinite MTBF (no failures expected) gives upper_s.

    Raises ValueError for arguments that have no meaning (C <= 0, MTBF <= 0, NaN, lower > upper), so a bug
    upstream shows up as an error instead of a silently absurd interval.
    """
    for name, value in (("cost_s", cost_s), ("mtbf_s", mtbf_s), ("lower_s", lower_s), ("upper_s", upper_s)):
        if math.isnan(value):
            raise ValueError(f"young_daly_interval: {name} is NaN")
    if not (math.isfinite(cost_s) and cost_s > 0):
        raise ValueError(f"young_daly_interval: checkpoint cost must be a positive finite number, got {cost_s!r}")
    if mtbf_s <= 0:
        raise ValueError(f"young_daly_interval: MTBF must be positive, got {mtbf_s!r}")
    if not (0 < lower_s <= upper_s) or math.isinf(upper_s):
        raise ValueError(f"young_daly_interval: need 0 < lower <= upper < inf, got [{lower_s!r}, {upper_s!r}]")
    if math.isinf(mtbf_s):
        return float(upper_s)
    return float(min(upper_s, max(lower_s, math.sqrt(2.0 * cost_s * mtbf_s))))


def parse_checkpoint_cost(value: str | None) -> float | None:
    """The annotation's value in seconds, or None when absent or not a positive finite number."""
    if value is None:
        return None
    try:
        cost = float(value.strip())
    except ValueError:
        return None
    return cost if math.isfinite(cost) and cost > 0 else None


def checkpoint_cost_of(pod: PodRecord, default: float) -> float:
    """C for one pod: `guardgrid.io/checkpoint-cost-seconds`, else `default`.

    A bad value (not a number, zero, negative, inf/NaN) is a user typo, not a reason to stop advising the
    job: it falls back to the default with a warning that names the pod and the value.
    """
    raw = pod.annotations.get(keys.CHECKPOINT_COST_SECONDS)
    cost = parse_checkpoint_cost(raw)
    if cost is None:
        if raw is not None:
            log.warning("pod %s: %s=%r is not a positive number of seconds; using the default %ss",
                        pod.key, keys.CHECKPOINT_COST_SECONDS, raw, default)
        return default
    return cost


def placements_from_pods(pods: Iterable[PodRecord]) -> dict[str, JobPlacement]:
    """Group bound, live pods by job: the nodes each job runs on and its checkpoint cost.

    Standby slots (they serve a job, they are not part of it), job-less pods, unbound, finished and
    terminating pods are left out. When a job's pods disagree on the cost, the largest valid value wins:
    a distributed checkpoint stalls the job until its slowest member has written.
    """
    nodes: dict[str, set[str]] = {}
    costs: dict[str, float | None] = {}
    for pod in pods:
        job = pod.job
        if not job or pod.is_standby or not pod.holds_memory or pod.terminating:
            continue
        nodes.setdefault(job, set()).add(pod.node_name)
        raw = pod.annotations.get(keys.CHECKPOINT_COST_SECONDS)
        cost = parse_checkpoint_cost(raw)
        if cost is None and raw is not None:
            log.warning("pod %s: %s=%r is not a positive number of seconds; ignoring it",
                        pod.key, keys.CHECKPOINT_COST_SECONDS, raw)
        previous = costs.get(job)
        costs[job] = cost if previous is None else (previous if cost is None else max(previous, cost))
    return {job: JobPlacement(job=job, nodes=tuple(sorted(node_set)), checkpoint_cost_seconds=costs.get(job))
            for job, node_set in nodes.items()}


def job_fault_rate_per_hour(nodes: Iterable[str], node_fault_rate_per_hour: Mapping[str, float],
                            prior_rate_per_hour: float) -> float:
    """Failures per hour of a job that dies when any of its nodes does: the sum of the nodes' rates.

    A node the map does not know (or reports as negative/NaN/inf) is assumed to fail at the prior rate,
    the same assumption the predictor makes for a node with no history. A job with no node yet will land
    on one: it gets the prior rate of one node.
    """
    node_set = set(nodes)
    if not node_set:
        return prior_rate_per_hour
    total = 0.0
    for node in node_set:
        rate = node_fault_rate_per_hour.get(node)
        if rate is None or not math.isfinite(rate) or rate < 0:
            if rate is not None:
                log.warning("node %s: fault rate %r is not a non-negative number; using the prior %s/h",
                            node, rate, prior_rate_per_hour)
            rate = prior_rate_per_hour
        total += float(rate)
    return total


def advise_jobs(jobs: Mapping[str, JobPlacement], node_fault_rate_per_hour: Mapping[str, float],
                settings: Settings) -> dict[str, JobAdvice]:
    """Young-Daly advice per job, for the snapshot's `jobs` section.

    MTBF = 3600 / (sum of node rates) seconds; C = the job's annotation, else
    `settings.checkpoint_cost_default_seconds`; the interval is clamped to
    [`checkpoint_interval_min_seconds`, `checkpoint_interval_max_seconds`].
    """
    advice: dict[str, JobAdvice] = {}
    for name, placement in jobs.items():
        cost = placement.checkpoint_cost_seconds
        if cost is None or not math.isfinite(cost) or cost <= 0:
            cost = settings.checkpoint_cost_default_seconds
        rate = job_fault_rate_per_hour(placement.nodes, node_fault_rate_per_hour, settings.fault_prior_rate_per_hour)
        mtbf = 3600.0 / rate if rate > 0 else math.inf
        interval = young_daly_interval(cost, mtbf, settings.checkpoint_interval_min_seconds,
                                       settings.checkpoint_interval_max_seconds)
        advice[name] = JobAdvice(checkpoint_interval_seconds=interval,
                                 mtbf_seconds=mtbf,  # may be infinite: the snapshot writes it as null
                                 checkpoint_cost_seconds=cost)
    return advice


def unplaced_fault_rate_per_hour(node_fault_rates: Iterable[float], prior_rate_per_hour: float) -> float:
    """Failures per hour expected of a pod that will land on ONE node not chosen yet: the mean node rate.

    Why the mean and not the median: for a fixed interval T the expected waste per unit time,
    C/T + T * rate / (2 * 3600), is linear in the rate, so over an unknown node it is minimised by
    Young-Daly with the EXPECTED rate, i.e. the mean (a node picked at random). The median would drop the
    flaky minority's share of the expected failures and advise too long an interval exactly where a lost
    interval hurts. A rate that is negative or not finite counts as the prior (as in
    `job_fault_rate_per_hour`); no nodes at all (a new or empty snapshot) gives the prior.
    """
    total = 0.0
    count = 0
    for rate in node_fault_rates:
        value = float(rate)
        total += value if math.isfinite(value) and value >= 0 else prior_rate_per_hour
        count += 1
    return total / count if count else prior_rate_per_hour


def advise_unplaced(cost_s: float | None, node_fault_rates: Iterable[float], settings: Settings) -> JobAdvice:
    """Young-Daly advice for a job with no running pod yet (its first pod, at admission).

    `advise_jobs` only knows jobs with bound pods, yet the first pod is when advice matters most: it is
    written into the pod's env once, at admission. The pod will run on one node of the cluster, so its MTBF
    is 3600 / `unplaced_fault_rate_per_hour(node_fault_rates)`; C is `cost_s` (the pod's annotation), else
    `settings.checkpoint_cost_default_seconds`; the interval is clamped like `advise_jobs`'.
    """
    cost = cost_s if cost_s is not None and math.isfinite(cost_s) and cost_s > 0 \
        else settings.checkpoint_cost_default_seconds
    rate = unplaced_fault_rate_per_hour(node_fault_rates, settings.fault_prior_rate_per_hour)
    mtbf = 3600.0 / rate if rate > 0 else math.inf
    interval = young_daly_interval(cost, mtbf, settings.checkpoint_interval_min_seconds,
                                   settings.checkpoint_interval_max_seconds)
    return JobAdvice(checkpoint_interval_seconds=interval, mtbf_seconds=mtbf, checkpoint_cost_seconds=cost)
