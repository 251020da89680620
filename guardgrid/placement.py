"""Placement decisions: filter, score and preemption-candidate choice for one pod over candidate nodes.

This is the extender's brain, kept in core so the evaluation's simulation runs the very same code. It
combines three sources, all read without I/O:
- the cluster state (allocatable, requested and standby memory per node, recent binds),
- the predictor snapshot, aligned to the state's node order once per (snapshot, node set) and cached,
- the pod (its memory request, its job, its workload's learned peak).

Memory held by a standby slot of the pod's *own* job counts as available to the pod everywhere: the slot
exists to be taken over by it (preemption evicts it). Other jobs' slots count as used: they are promised.

Two modes per node:
- forecast (fresh snapshot covering the node): base = forecast mean + other jobs' standby reservations;
  pods bound after the forecast was made, or within the in-flight window, add their requests on top.
- requests fallback (no snapshot, a stale one, or a node the predictor does not know yet): base = the
  node's requested memory minus the pod's own slot, spread = a fixed fraction of allocatable. This fails
  open: it never rejects a node the scheduler's own resource fit would accept with margin.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from itertools import compress, repeat

import numpy as np
import numpy.typing as npt

from guardgrid.config import Settings
from guardgrid.quantity import format_bytes
from guardgrid.records import PodEssentials, PodRecord
from guardgrid.risk import oom_risk
from guardgrid.snapshot import Snapshot
from guardgrid.state import ALLOCATABLE, REQUESTED, STANDBY, ClusterState, NodeTable

__all__ = ["PodDemand", "Evaluation", "ForecastAligner", "COVERED", "MEAN", "SPREAD", "FAULT_RATE", "evaluate",
           "filter_decisions", "passed_mask", "explain_filter", "scores", "score_array", "inflight_since",
           "preemption_candidates", "MAX_SCORE", "VictimSet", "UNKNOWN_NODE_MESSAGE"]

FloatArray = npt.NDArray[np.float64]
MAX_SCORE = 10
# ndarray.all()/.any()/np.flatnonzero run a few lines of numpy's Python wrappers per call; on the extender's
# path, with cold caches between requests, every distinct line executed costs (docs/bench-extender.md), so the
# hot path calls the C reductions directly.
_all = np.logical_and.reduce
_any = np.logical_or.reduce  # kube-scheduler's MaxExtenderPriority; it does not clamp, so we must


@dataclass(frozen=True, slots=True)
class PodDemand:
    """What a decision needs from the incoming pod."""

    uid: str
    job: str
    request: float  # bytes
    peak: float  # expected peak: max(request, learned peak of its workload)

    @classmethod
    def of(cls, pod: PodRecord | PodEssentials, snapshot: Snapshot | None) -> PodDemand:
        peak = float(pod.memory_request)
        job = pod.job
        if snapshot is not None and job in snapshot.workloads:
            peak = max(peak, snapshot.workloads[job].peak_memory_bytes)
            if pod.memory_limit:  # the kernel stops the pod at its limit: it never needs more on the node
                peak = min(peak, max(float(pod.memory_limit), float(pod.memory_request)))
        return cls(uid=pod.uid, job=job, request=float(pod.memory_request), peak=peak)


@dataclass(frozen=True)
class _Aligned:
    """Snapshot columns in the order of one NodeTable, one row per node (one cache line to gather per node)."""

    columns: FloatArray  # (nodes, 4): COVERED (1.0/0.0), MEAN, SPREAD, FAULT_RATE


COVERED, MEAN, SPREAD, FAULT_RATE = 0, 1, 2, 3


class ForecastAligner:
    """Aligns a snapshot's per-node figures to a NodeTable once, not once per request.

    Keyed by the snapshot object itself (held, and compared with `is`) and the table version: a new snapshot
    or node set realigns. Not by `id()`: CPython reuses the id of a freed snapshot for the next one, which
    served a new snapshot the previous one's forecasts (found as non-determinism in the evaluation).
    """

    def __init__(self, prior_fault_rate: float) -> None:
        self._prior = prior_fault_rate
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self._version = -1
        self._value: _Aligned | None = None

    def align(self, snapshot: Snapshot, table: NodeTable) -> _Aligned:
        with self._lock:
            if self._snapshot is snapshot and self._version == table.version and self._value is not None:
                return self._value
        columns = np.zeros((len(table), 4))
        columns[:, FAULT_RATE] = self._prior
        for i, node in enumerate(table.nodes):
            forecast = snapshot.nodes.get(node.name)
            if forecast is not None:
                columns[i] = (1.0, forecast.forecast_mean_bytes, forecast.forecast_std_bytes,
                              forecast.fault_rate_per_hour)
        value = _Aligned(columns)
        with self._lock:
            self._snapshot, self._version, self._value = snapshot, table.version, value
        return value


@dataclass(frozen=True)
class Evaluation:
    """Per-candidate figures, in the order the scheduler sent the candidates."""

    names: Sequence[str]
    known: npt.NDArray[np.bool_]  # in the cache
    forecast: npt.NDArray[np.bool_]  # judged on a forecast (else on requests)
    allocatable: FloatArray
    base: FloatArray  # memory in use/promised before the pod, own slot excluded
    inflight: FloatArray
    own_slot: FloatArray
    spread: FloatArray
    fault_rate: FloatArray
    peak: float
    risk: FloatArray

    def take(self, positions: npt.NDArray[np.int64], names: Sequence[str]) -> Evaluation:
        """The figures of the candidates at `positions`, named `names` (the same nodes, in that order)."""
        return Evaluation(names, self.known[positions], self.forecast[positions], self.allocatable[positions],
                          self.base[positions], self.inflight[positions], self.own_slot[positions],
                          self.spread[positions], self.fault_rate[positions], self.peak, self.risk[positions])

    @property
    def utilisation_after(self) -> FloatArray:
        """Memory use after placement over allocatable; +inf on a node without allocatable memory."""
        used = self.base + self.inflight
        used += self.peak
        if _all(self.allocatable > 0):  # the usual case: one division, no masked copy
            used /= self.allocatable
            return used
        return np.divide(used, self.allocatable, out=np.full(len(self.allocatable), np.inf),
                         where=self.allocatable > 0)


def inflight_since(snapshot: Snapshot | None, now: float, settings: Settings) -> float | None:
    """None when decisions fall back to requests (no snapshot, or a stale one); else the time after which a
    bind is in flight: not yet in the forecast (made at generated_at) or within the in-flight window."""
    if snapshot is None or snapshot.stale or snapshot.age(now) > settings.snapshot_max_age_seconds:
        return None
    return min(snapshot.generated_at, now - settings.inflight_window_seconds)


def _per_candidate(amounts: Mapping[str, float], index: dict[str, int], rows: npt.NDArray[np.int64],
                   candidates: Sequence[str]) -> FloatArray:
    """Spread a small node-name -> bytes map over the candidates (by row, so unknown names get nothing).

    Why two ways: the map is usually a node or two (a job's standby slot, a few recent binds), where one
    vector compare per entry beats 500 dict lookups; after a burst of binds it can span most nodes, where
    one lookup per candidate is cheaper.
    """
    out = np.zeros(len(rows))
    if len(amounts) <= 8:
        for name, amount in amounts.items():
            row = index.get(name)
            if row is not None:
                out[rows == row] += amount
        return out
    out[:] = np.fromiter(map(amounts.get, candidates, repeat(0.0)), dtype=np.float64, count=len(candidates))
    out[rows < 0] = 0.0
    return out


def _requests_based(state: ClusterState, pod: PodDemand, index: dict[str, int], rows: npt.NDArray[np.int64],
                    candidates: Sequence[str], requested: FloatArray, own_slot: FloatArray, allocatable: FloatArray,
                    settings: Settings) -> tuple[FloatArray, FloatArray]:
    """(base, spread) from requests: the fallback, computed only when some candidate needs it."""
    base = requested - own_slot
    # The pod itself may already be in the cache on some node (a retried cycle, a stale bind): don't count it.
    existing = state.pods.get(pod.uid)
    if existing is not None and existing.holds_memory:
        base -= _per_candidate({existing.node_name: float(existing.memory_request)}, index, rows, candidates)
    np.maximum(base, 0.0, out=base)
    return base, settings.fallback_spread * allocatable


def evaluate(state: ClusterState, snapshot: Snapshot | None, aligner: ForecastAligner, pod: PodDemand,
             candidates: Sequence[str], settings: Settings, now: float) -> Evaluation:
    """Risk and the figures behind it for `pod` on each candidate node.

    Written for the extender's budget (~500 candidates in well under 0.1 ms): every step is a whole-vector
    numpy operation or a C-level map; per-node Python runs only over the few nodes a map names.
    """
    table = state.table
    index = table.index
    count = len(candidates)
    if len(table) == 0:
        zeros = np.zeros(count)
        return Evaluation(candidates, np.zeros(count, np.bool_), np.zeros(count, np.bool_), zeros, zeros, zeros,
                          zeros, zeros + 1, zeros, pod.peak, np.ones(count))
    rows = table.name_index.rows(candidates)
    known = rows >= 0
    all_known = bool(_all(known))
    safe_rows = rows if all_known else np.where(known, rows, 0)
    memory = table.memory.take(safe_rows, axis=0)  # take(): the same gather as memory[rows], less overhead
    allocatable = memory[:, ALLOCATABLE]
    if not all_known:
        allocatable[~known] = 0.0
    requested = memory[:, REQUESTED]
    standby = memory[:, STANDBY]

    own_slot = _per_candidate(state.own_standby(pod.job), index, rows, candidates)
    since = inflight_since(snapshot, now, settings)
    if since is not None:
        assert snapshot is not None
        forecast = aligner.align(snapshot, table).columns.take(safe_rows, axis=0)
        covered = forecast[:, COVERED] > 0.0
        if not all_known:
            covered &= known
        base = forecast[:, MEAN] + np.maximum(standby - own_slot, 0.0)
        spread = forecast[:, SPREAD]
        if not _all(covered):  # some candidates the predictor does not know yet: judged on requests
            fallback_base, fallback_spread = _requests_based(state, pod, index, rows, candidates, requested,
                                                             own_slot, allocatable, settings)
            base = np.where(covered, base, fallback_base)
            spread = np.where(covered, spread, fallback_spread)
        fault_rate = forecast[:, FAULT_RATE]
        recent = state.inflight_by_node(since)
        inflight = _per_candidate(recent, index, rows, candidates) if recent else np.zeros(count)
        inflight[~covered] = 0.0
    else:
        covered = np.zeros(count, dtype=np.bool_)
        base, spread = _requests_based(state, pod, index, rows, candidates, requested, own_slot, allocatable,
                                       settings)
        fault_rate = np.full(count, settings.fault_prior_rate_per_hour)
        inflight = np.zeros(count)
    risk = oom_risk(base + inflight + pod.peak, allocatable, spread)
    if not all_known:
        risk[~known] = 1.0
    return Evaluation(candidates, known, covered, allocatable, base, inflight, own_slot, spread, fault_rate,
                      pod.peak, risk)


UNKNOWN_NODE_MESSAGE = "GuardGrid: node not in GuardGrid's node cache yet; retry shortly"


def passed_mask(evaluation: Evaluation, threshold: float, keep_least_risky: bool = False) -> npt.NDArray[np.bool_]:
    """Which candidates pass the filter (see filter_decisions)."""
    known = evaluation.known
    rejected = (evaluation.risk > threshold) | ~known
    if keep_least_risky:
        known_risk = evaluation.risk[known]
        if known_risk.size and bool(rejected[known].all()):
            rejected = rejected & ~(known & (evaluation.risk <= known_risk.min()))
    return ~rejected


def filter_decisions(evaluation: Evaluation, threshold: float, keep_least_risky: bool = False,
                     ) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """(passed names, failed name -> message, reason label per failed name for metrics).

    `keep_least_risky` (off by default): when every known candidate is above the threshold, the least risky
    ones pass anyway. The candidates already fit by requests, and rejecting them all leaves the pod Pending
    until forecasts change; but a pod that fits nowhere safely then runs where it is likely to be OOM-killed,
    again and again (the evaluation's openb seed 2: 40 kills with it, none without). A trade-off, not a fix.

    """
    return explain_filter(evaluation, passed_mask(evaluation, threshold, keep_least_risky), threshold)


def explain_filter(evaluation: Evaluation, passed: npt.NDArray[np.bool_], threshold: float,
                   ) -> tuple[list[str], dict[str, str], dict[str, str]]:
    """filter_decisions for an already decided `passed_mask`: the passed names and each rejection's reason.

    Messages carry the figures behind each rejection; a typical filter rejects ~50 of 500 nodes, so the
    figures are gathered and formatted per vector, not read element by element from numpy.
    """
    known = evaluation.known
    rejected = ~passed
    names = evaluation.names
    if not _any(rejected):  # the common case: no per-node Python work at all
        return list(names), {}, {}
    positions = rejected.nonzero()[0]
    head = "GuardGrid: predicted OOM risk "
    over = f" > {threshold:.2f} ("
    pod_part = f" + pod {format_bytes(evaluation.peak)} of "
    sources = ("requested ", "forecast ")
    # One comprehension, not a loop of statements: a filter that rejects 200 nodes is the latency tail, and
    # this is its per-node cost. The figures' text is cached by value: allocatable sizes repeat across a
    # fleet, and a node's memory in use stays the same number from request to request until its forecast or
    # its pods change.
    rejected_names = [names[p] for p in positions.tolist()]
    rejected_known = known[positions].tolist()
    failed = {name: f"{head}{risk:.2f}{over}{sources[on_forecast]}{_size_text(used)}{pod_part}{_size_text(size)})"
              if is_known else UNKNOWN_NODE_MESSAGE
              for name, is_known, risk, on_forecast, used, size in zip(
                  rejected_names, rejected_known,
                  evaluation.risk[positions].tolist(), evaluation.forecast[positions].tolist(),
                  (evaluation.base + evaluation.inflight)[positions].tolist(),
                  evaluation.allocatable[positions].tolist())}
    # By name, as `failed` is (a name sent twice is one rejection; both copies share their known flag).
    reasons = dict(zip(rejected_names, map(_REASONS.__getitem__, rejected_known)))
    return list(compress(names, passed.tolist())), failed, reasons


_REASONS = {True: "oom_risk", False: "unknown_node"}  # by whether the node is in the cache
_size_text = lru_cache(maxsize=16384)(format_bytes)  # a few versions of every node's figures


def scores(evaluation: Evaluation, settings: Settings) -> list[int]:
    """`score_array` as a list, as the wire format wants it."""
    return score_array(evaluation, settings).tolist()


def score_array(evaluation: Evaluation, settings: Settings) -> npt.NDArray[np.int64]:
    """Integer scores 0..10: 10 for a node holding the pod's own standby slot, else 0..9 by the weighted terms.

    Terms, each in [0, 1]: low risk (relative to the filter threshold), low memory utilisation after placement
    (spreads load, leaving headroom for growth), low node fault rate (relative to a reference rate).
    """
    threshold = max(settings.risk_threshold, 1e-9)
    # In place and with minimum/maximum rather than clip: ~500 elements, so numpy's per-call overhead and
    # temporaries are the cost. Same operations in the same order as the plain formulas, so the same scores.
    risk_term = np.divide(evaluation.risk, threshold)
    np.minimum(risk_term, 1.0, out=risk_term)
    np.subtract(1.0, risk_term, out=risk_term)  # 1 - min(risk / threshold, 1)
    balance_term = evaluation.utilisation_after
    np.maximum(balance_term, 0.0, out=balance_term)
    np.minimum(balance_term, 1.0, out=balance_term)
    np.subtract(1.0, balance_term, out=balance_term)  # 1 - clip(utilisation after, 0, 1)
    fault_term = np.divide(evaluation.fault_rate, settings.fault_rate_reference_per_hour)
    np.minimum(fault_term, 1.0, out=fault_term)
    np.subtract(1.0, fault_term, out=fault_term)  # 1 - min(fault rate / reference, 1)
    weights = settings.weight_risk + settings.weight_balance + settings.weight_fault
    if weights <= 0:
        combined = np.zeros(len(evaluation.names))
    else:
        combined = np.multiply(risk_term, settings.weight_risk)
        balance_term *= settings.weight_balance
        combined += balance_term
        fault_term *= settings.weight_fault
        combined += fault_term
        combined /= weights
    np.maximum(combined, 0.0, out=combined)
    np.minimum(combined, 1.0, out=combined)
    combined *= MAX_SCORE - 1
    graded = np.rint(combined).astype(np.int64)
    graded[evaluation.own_slot > 0] = MAX_SCORE
    graded[~evaluation.known] = 0
    np.maximum(graded, 0, out=graded)
    np.minimum(graded, MAX_SCORE, out=graded)
    return graded


@dataclass(frozen=True, slots=True)
class VictimSet:
    """One preemption candidate as the scheduler proposed it."""

    node: str
    uids: tuple[str, ...]
    victims: tuple[PodRecord | None, ...]  # resolved victims; None where a UID is unknown
    pdb_violations: int


def preemption_candidates(job: str, candidates: Sequence[VictimSet]) -> tuple[list[VictimSet], dict[str, str]]:
    """Keep candidates whose victims are all GuardGrid standby slots; prefer those holding the job's own slot.

    Returns the kept candidates and, for the log, why each other one was dropped. A victim we cannot
    resolve makes its node unsafe: we would not know what we let the scheduler kill.
    """
    kept: list[VictimSet] = []
    dropped: dict[str, str] = {}
    for candidate in candidates:
        unknown = [uid for uid, victim in zip(candidate.uids, candidate.victims) if victim is None]
        if unknown:
            dropped[candidate.node] = f"unknown victim UID {unknown[0]}"
            continue
        precious = [v for v in candidate.victims if v is not None and not v.is_standby]
        if precious:
            dropped[candidate.node] = f"victim {precious[0].key} is not a GuardGrid standby slot"
            continue
        kept.append(candidate)
    if job:
        own = [c for c in kept if any(v is not None and v.standby_for == job for v in c.victims)]
        if own:
            for candidate in kept:
                if candidate not in own:
                    dropped[candidate.node] = "another node holds this job's own standby slot"
            kept = own
    return kept, dropped
