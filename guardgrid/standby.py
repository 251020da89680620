"""The standby plan: how many warm slots to keep, for which jobs, on which nodes; and when to keep none.

A pure function of plain arrays and dataclasses (no I/O): the predictor calls it every cycle and the
evaluation's simulation calls the same function.

Protected job: the pods of one GuardGrid job (label `guardgrid.io/managed: "true"` or a `guardgrid.io/job`
name, see `PodRecord.job`) with PriorityClass `guardgrid-training`, bound or still pending (`protected_jobs`).

1. Mode, with hysteresis. Cluster memory load = sum of forecast use / sum of allocatable over ready nodes.
   Proactive turns reactive above `reactive_enter_load` and back only below `reactive_exit_load`, so a
   load hovering at one threshold cannot make the plan flap. Reactive: zero slots (standby capacity on a
   tight cluster would itself push nodes into OOM kills).
2. How many. A job fails when any of its nodes does, so its rate is the sum of its nodes' fault rates;
   over the horizon it expects lambda_j = rate_j * horizon failures. Failures across jobs are independent
   Poisson events, so their total N is Poisson(lambda = sum lambda_j). The plan wants the smallest k with
   P(N > k) <= `shortfall_target`, capped by `max_standby_slots` and by the protected pods.
3. For whom. The k slots go to jobs greedily by the marginal value of one more slot, P(N_j > s_j), the
   chance that job j needs more than the s_j slots it already has. The first slot of each job is worth
   its failure probability, so jobs are served in order of failure probability; a second slot for a very
   flaky job beats a first slot for a very safe one. (Greedy is optimal here: the marginal values fall
   with s_j, so it minimises the expected number of failures left without a slot.)
4. Where. Outside the job's failure domain (none of the job's own nodes), on ready nodes whose free memory
   by requests (allocatable - requested, standby slots included) holds the job's pod, whose OOM risk with
   the replacement pod's memory stays under `risk_threshold`, preferring the lowest risk plus node failure
   probability. A node never gets more slots than its free memory holds.
5. Stability. Existing slots that still serve (right job, node still ready, outside the job's nodes, big
   enough, risk under twice the threshold) are kept rather than moved; a slot that already exists counts
   double in step 3; and the slot count only falls when even a twice stricter target would not need the
   existing slots. Small changes in the forecast therefore do not churn pods every cycle.
6. Jobs in recovery. A job whose pod just died may have no pod at all until its controller creates the
   replacement, and then a pending replacement pod: the moment its slot matters most. Every existing slot
   of the caller's `held_jobs` (jobs seen recently that now have no pods, jobs with a pending pod) is kept
   untouched in proactive mode, on top of the plan; held slots do not count towards the target.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

from guardgrid import keys
from guardgrid.config import Settings
from guardgrid.records import OwnerRef, PodRecord
from guardgrid.risk import oom_risk

__all__ = ["Mode", "NodeInputs", "ProtectedJob", "ExistingSlot", "PlannedSlot", "Plan", "plan_standby",
           "next_mode", "cluster_load", "poisson_sf", "slots_needed", "protected_jobs", "is_protected", "job_images",
           "STICKINESS", "KEEP_RISK_FACTOR"]

FloatArray = npt.NDArray[np.float64]
Mode = Literal["proactive", "reactive"]

STICKINESS = 2.0  # an existing slot's marginal value counts this many times in the allocation
KEEP_RISK_FACTOR = 2.0  # an existing slot is kept while its node's risk is under this many thresholds
SPREAD_PENALTY = 0.01  # per slot already planned on a node: spreads slots when nodes are otherwise equal


@dataclass(frozen=True)
class NodeInputs:
    """Per-node arrays, all in the order of `names`."""

    names: Sequence[str]
    allocatable: FloatArray  # bytes
    mean: FloatArray  # forecast memory use at the horizon, bytes (the caller fills nodes without data)
    spread: FloatArray  # forecast standard deviation, bytes
    fault_rate: FloatArray  # failures per hour
    free: FloatArray  # allocatable - requested (every pod's request, standby slots included), bytes
    ready: npt.NDArray[np.bool_]
    index: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.index:
            object.__setattr__(self, "index", {name: i for i, name in enumerate(self.names)})
        count = len(self.names)
        for name in ("allocatable", "mean", "spread", "fault_rate", "free", "ready"):
            if np.shape(getattr(self, name)) != (count,):
                raise ValueError(f"NodeInputs.{name}: expected shape ({count},), got {np.shape(getattr(self, name))}")


@dataclass(frozen=True)
class ProtectedJob:
    name: str
    namespace: str
    pod_memory: float  # memory request of one of its pods (the largest), bytes
    images: tuple[str, ...]
    nodes: tuple[str, ...]  # where its pods run: its failure domain
    pods: int = 1
    owner: OwnerRef | None = None  # controller owner of its pods, for the slots' garbage collection


@dataclass(frozen=True)
class ExistingSlot:
    job: str
    node: str
    memory: float
    pod: str  # namespace/name


@dataclass(frozen=True)
class PlannedSlot:
    job: str
    node: str
    memory: float
    keep: str = ""  # namespace/name of the existing pod that already is this slot; "" for a new one


@dataclass(frozen=True)
class Plan:
    mode: Mode
    load: float
    expected_failures: float  # lambda over the horizon
    wanted: int  # slots the target asks for (after caps and hysteresis)
    slots: tuple[PlannedSlot, ...]
    shortfall_probability: float  # P(N > number of slots placed)
    job_failure_probability: Mapping[str, float] = field(default_factory=dict)
    placed: int = 0  # slots of protected jobs in `slots` (the rest are held slots of jobs in passing)

    @property
    def unplaced(self) -> int:
        """Slots wanted but without a node that can hold them."""
        return max(0, self.wanted - self.placed)


STAGING_IMAGE_KEYS = (keys.DEPS_IMAGE, keys.DATASET_IMAGE, keys.CHECKPOINT_IMAGE)


def is_protected(pod: PodRecord) -> bool:
    """A training pod of a GuardGrid job (managed or named, PriorityClass guardgrid-training), bound or still
    pending: a job whose replacement pod waits for the scheduler is exactly the job whose slot must stay."""
    if pod.is_standby or pod.terminating or not pod.job or pod.phase in ("Succeeded", "Failed"):
        return False
    if pod.priority_class != keys.PRIORITY_CLASS_TRAINING:
        return False
    return pod.labels.get(keys.MANAGED) == "true" or bool(pod.labels.get(keys.JOB) or pod.annotations.get(keys.JOB))


def job_images(pods: Iterable[PodRecord]) -> tuple[str, ...]:
    """App images, then deps/dataset/checkpoint staging images, of a job's pods: each once, first seen first.

    The slot pulls all of them, because the replacement pod's init containers (added by the webhook) run the
    staging images before its app containers start.
    """
    images: dict[str, None] = {}
    for pod in pods:
        for image in pod.images:
            if image:
                images.setdefault(image, None)
        for key in STAGING_IMAGE_KEYS:
            image = pod.annotations.get(key, "")
            if image:
                images.setdefault(image, None)
    return tuple(images)


def protected_jobs(pods: Iterable[PodRecord]) -> list[ProtectedJob]:
    """Protected jobs from the cluster's pods, by name: the largest pod's memory, all nodes, all images."""
    groups: dict[str, list[PodRecord]] = {}
    for pod in pods:
        if is_protected(pod):
            groups.setdefault(pod.job, []).append(pod)
    jobs = []
    for name in sorted(groups):
        members = sorted(groups[name], key=lambda p: p.key)
        owner = next((p.owner for p in members if p.owner is not None), None)
        jobs.append(ProtectedJob(name=name, namespace=members[0].namespace,
                                 pod_memory=float(max(p.memory_request for p in members)),
                                 images=job_images(members),
                                 nodes=tuple(sorted({p.node_name for p in members if p.node_name})),
                                 pods=len(members), owner=owner))
    return jobs


def cluster_load(nodes: NodeInputs) -> float:
    """Sum of forecast use over sum of allocatable, ready nodes only (0 when there are none)."""
    ready = nodes.ready & np.isfinite(nodes.mean)
    capacity = float(nodes.allocatable[ready].sum())
    return float(nodes.mean[ready].sum()) / capacity if capacity > 0 else 0.0


def next_mode(previous: Mode, load: float, enter: float, exit_: float) -> Mode:
    """Hysteresis: reactive above `enter`; proactive again only below `exit_`."""
    if previous == "proactive":
        return "reactive" if load > enter else "proactive"
    return "proactive" if load < exit_ else "reactive"


def poisson_sf(k: int, lam: float) -> float:
    """P(N > k) for N ~ Poisson(lam), summed in log space so large lambdas do not underflow."""
    if lam <= 0:
        return 0.0
    if k < 0:
        return 1.0
    log_pmf = -lam
    cdf = math.exp(log_pmf)
    for i in range(1, k + 1):
        log_pmf += math.log(lam) - math.log(i)
        cdf += math.exp(log_pmf)
    return max(0.0, 1.0 - cdf)


def slots_needed(lam: float, target: float, cap: int) -> int:
    """Smallest k <= cap with P(N > k) <= target (cap when even that is not enough); one pass over k."""
    cap = max(cap, 0)
    if lam <= 0:
        return 0
    log_pmf = -lam
    cdf = math.exp(log_pmf)
    for k in range(cap + 1):
        if 1.0 - cdf <= target:
            return k
        log_pmf += math.log(lam) - math.log(k + 1)
        cdf += math.exp(log_pmf)
    return cap


def _job_rates(jobs: Sequence[ProtectedJob], nodes: NodeInputs, prior_rate: float) -> list[float]:
    rates = []
    for job in jobs:
        total = 0.0
        for name in set(job.nodes) or {""}:
            i = nodes.index.get(name)
            rate = float(nodes.fault_rate[i]) if i is not None else prior_rate
            total += rate if math.isfinite(rate) and rate >= 0 else prior_rate
        rates.append(total)
    return rates


def _allocate(lams: Sequence[float], caps: Sequence[int], existing: Sequence[int], total: int) -> list[int]:
    """Greedy by marginal value P(N_j > s_j); already existing slots count STICKINESS times."""
    counts = [0] * len(lams)
    heap: list[tuple[float, int]] = []

    def push(j: int) -> None:
        if counts[j] < caps[j]:
            gain = poisson_sf(counts[j], lams[j]) * (STICKINESS if counts[j] < existing[j] else 1.0)
            heapq.heappush(heap, (-gain, j))

    for j in range(len(lams)):
        push(j)
    for _ in range(total):
        if not heap:
            break
        gain, j = heapq.heappop(heap)
        if -gain <= 0:
            break
        counts[j] += 1
        push(j)
    return counts


def plan_standby(nodes: NodeInputs, jobs: Sequence[ProtectedJob], existing: Sequence[ExistingSlot],
                 previous_mode: Mode, settings: Settings, held_jobs: Collection[str] = ()) -> Plan:
    """The plan for this cycle (see the module docstring for every rule)."""
    load = cluster_load(nodes)
    mode = next_mode(previous_mode, load, settings.reactive_enter_load, settings.reactive_exit_load)
    horizon_h = settings.horizon_seconds / 3600.0
    rates = _job_rates(jobs, nodes, settings.fault_prior_rate_per_hour)
    lams = [rate * horizon_h for rate in rates]
    lam = float(sum(lams))
    failure_probability = {job.name: 1.0 - math.exp(-lj) for job, lj in zip(jobs, lams)}
    if mode == "reactive":
        return Plan(mode, load, lam, 0, (), poisson_sf(0, lam), failure_probability)
    if not jobs:
        return Plan(mode, load, lam, 0, _held(existing, held_jobs, set()), poisson_sf(0, lam), failure_probability)

    threshold = settings.risk_threshold
    node_fail = 1.0 - np.exp(-np.maximum(np.nan_to_num(nodes.fault_rate), 0.0) * horizon_h)
    job_index = {job.name: j for j, job in enumerate(jobs)}

    # Existing slots that still serve their job, per job, lowest risk first.
    valid: dict[str, list[ExistingSlot]] = {}
    for slot in sorted(existing, key=lambda s: s.pod):
        j = job_index.get(slot.job)
        i = nodes.index.get(slot.node)
        if j is None or i is None or not nodes.ready[i] or slot.node in jobs[j].nodes:
            continue
        if slot.memory < jobs[j].pod_memory:
            continue
        risk = float(oom_risk(nodes.mean[i] + jobs[j].pod_memory, nodes.allocatable[i], nodes.spread[i]))
        if risk <= KEEP_RISK_FACTOR * threshold:
            valid.setdefault(slot.job, []).append(slot)
    existing_counts = [len(valid.get(job.name, ())) for job in jobs]

    caps = [max(job.pods, 1) for job in jobs]
    cap = min(settings.max_standby_slots, sum(caps))
    wanted = slots_needed(lam, settings.shortfall_target, cap)
    keep_limit = slots_needed(lam, settings.shortfall_target / 2.0, cap)
    wanted = max(wanted, min(sum(existing_counts), keep_limit))
    counts = _allocate(lams, caps, existing_counts, wanted)

    free_left = np.array(nodes.free, dtype=np.float64, copy=True)
    extra_use = np.zeros(len(nodes.names))
    slots_on = np.zeros(len(nodes.names))
    planned: list[PlannedSlot] = []
    order = sorted(range(len(jobs)), key=lambda j: (-lams[j], jobs[j].name))
    for j in order:
        job = jobs[j]
        kept = valid.get(job.name, [])[:counts[j]]
        for slot in kept:
            i = nodes.index[slot.node]
            slots_on[i] += 1
            extra_use[i] += job.pod_memory
            planned.append(PlannedSlot(job.name, slot.node, slot.memory, keep=slot.pod))
        missing = counts[j] - len(kept)
        if missing <= 0:
            continue
        outside = np.ones(len(nodes.names), dtype=np.bool_)
        for name in job.nodes:
            i = nodes.index.get(name)
            if i is not None:
                outside[i] = False
        for _ in range(missing):
            risk = oom_risk(nodes.mean + extra_use + job.pod_memory, nodes.allocatable, nodes.spread)
            eligible = nodes.ready & outside & (free_left >= job.pod_memory) & (risk <= threshold)
            if not eligible.any():
                break
            score = np.where(eligible, risk + node_fail + SPREAD_PENALTY * slots_on, np.inf)
            i = int(np.argmin(score))
            free_left[i] -= job.pod_memory
            extra_use[i] += job.pod_memory
            slots_on[i] += 1
            planned.append(PlannedSlot(job.name, nodes.names[i], job.pod_memory))
    held = _held(existing, held_jobs, {slot.keep for slot in planned if slot.keep})
    return Plan(mode, load, lam, wanted, tuple(planned) + held, poisson_sf(len(planned), lam), failure_probability,
                placed=len(planned))


def _held(existing: Sequence[ExistingSlot], held_jobs: Collection[str], kept: set[str]) -> tuple[PlannedSlot, ...]:
    return tuple(PlannedSlot(s.job, s.node, s.memory, keep=s.pod) for s in sorted(existing, key=lambda s: s.pod)
                 if s.job in held_jobs and s.pod not in kept)
