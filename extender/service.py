"""The extender's decisions: wire requests in, core placement decisions out. No Flask here.

Why a separate layer: the HTTP app stays a thin adapter, and tests and the benchmark's no-op baseline can
drive the same service object directly.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from extender import metrics
from extender.wire import (
    ExtenderArgs,
    PreemptionArgs,
    Victims,
    filter_result,
    node_cache_layout,
    node_cache_request,
    parse_extender_args,
    preemption_result,
    priority_list,
)
from guardgrid.config import Settings
from guardgrid.filter_memory import FilterMemory
from guardgrid.kernel import filter_body_decision
from guardgrid.placement import (
    Evaluation,
    ForecastAligner,
    PodDemand,
    VictimSet,
    evaluate,
    explain_filter,
    inflight_since,
    passed_mask,
    preemption_candidates,
    score_array,
    scores,
)
from guardgrid.records import PodEssentials, PodRecord, RecordError, pod_from_dict
from guardgrid.snapshot import Snapshot
from guardgrid.state import ClusterState

__all__ = ["ExtenderService"]


class _FilterContext(NamedTuple):
    """What one filter decides against, read once: the snapshot, the clock, the pod's demand, the in-flight
    cut-off (already applied to the state) and the state generation they were read at. A tuple: one is made
    per filter request."""

    snapshot: Snapshot | None
    now: float
    demand: PodDemand
    since: float | None
    recent: dict[str, float]  # in-flight memory by node as of `since` (empty without a fresh snapshot)
    generation: int


log = logging.getLogger(__name__)


class ExtenderService:
    """Answers filter, prioritize and preempt from the cluster state and the latest snapshot."""

    def __init__(self, state: ClusterState, settings: Settings,
                 snapshot: Callable[[], Snapshot | None] = lambda: None,
                 clock: Callable[[], float] = time.time, compiled: bool = True) -> None:
        """`compiled`: filter kube-scheduler's bodies with the compiled kernel when it is built
        (guardgrid.kernel); the answers are the same either way, so only tests of the Python path turn it
        off."""
        self.state = state
        self.compiled = compiled
        self.settings = settings
        self.snapshot = snapshot
        self.clock = clock
        self.aligner = ForecastAligner(settings.fault_prior_rate_per_hour)
        self.recent = FilterMemory()  # each filter's figures, for the prioritize call that follows it

    def snapshot_age(self) -> float:
        current = self.snapshot()
        return current.age(self.clock()) if current is not None else math.inf

    def filter(self, args: ExtenderArgs) -> bytes:
        answer, after = self.filter_then(args)
        after()
        return answer

    def filter_body_then(self, body: bytes) -> tuple[bytes, Callable[[], None]]:
        """`filter_then` for a raw request body: from bytes to bytes when the body is in kube-scheduler's own
        node-cache layout and the compiled kernel is built (guardgrid.kernel.filter_body_decision); otherwise
        parsed, then decided as `filter_then` decides. The answers are the same either way."""
        layout = node_cache_layout(body) if self.compiled else None
        if layout is not None:
            context = self._context(layout.pod)
            decided = filter_body_decision(self.state, context.snapshot, self.aligner, context.demand, body,
                                           layout.names_start, layout.names_end, self.settings, context.since,
                                           context.recent)
            if decided is not None:
                def prepare() -> tuple[bytes, bytes]:
                    return node_cache_request(layout.pod_json, decided.names_json), decided.priority_list

                rejections = {"unknown_node": decided.unknown, "oom_risk": decided.oom_risk}
                return decided.answer, self._afterwards(context, decided.passed, rejections, prepare)
        return self.filter_then(parse_extender_args(body))

    def filter_then(self, args: ExtenderArgs) -> tuple[bytes, Callable[[], None]]:
        """The filter's answer, and the work that may wait until the answer is on the wire: preparing the
        prioritize answer (FilterMemory), remembering the figures, counting rejections. Decided in Python
        (guardgrid.placement): the compiled path is `filter_body_then`'s, for kube-scheduler's own bytes.

        Why split: the HTTP app runs the second part after the response is sent (the WSGI response's close(),
        extender.hot_path), while kube-scheduler reads the answer and builds its prioritize request, so the
        filter's latency no longer includes it. gunicorn reads the connection's next request only after that,
        so the prioritize that follows always finds it done.
        """
        context = self._context(args.pod)
        evaluation = evaluate(self.state, context.snapshot, self.aligner, context.demand, args.node_names,
                              self.settings, context.now)
        keep = passed_mask(evaluation, self.settings.risk_threshold, self.settings.filter_keep_least_risky)
        passed, failed, reasons = explain_filter(evaluation, keep, self.settings.risk_threshold)

        def prepare() -> tuple[bytes, bytes]:
            # Scored over all candidates, then the passed picked out: element-wise, so the same scores as
            # for the passed alone, without gathering every figure of the evaluation first.
            scored = score_array(evaluation, self.settings)[keep].tolist()
            return node_cache_request(args.pod_json, passed), priority_list(passed, scored)

        preparable = bool(args.pod_json) and not args.full_mode
        after = self._afterwards(context, len(passed), Counter(reasons.values()), prepare if preparable else None,
                                 evaluation, keep, passed)
        return filter_result(args, passed, failed), after

    def _context(self, pod: PodRecord | PodEssentials) -> _FilterContext:
        snapshot, now = self.snapshot(), self.clock()
        demand = PodDemand.of(pod, snapshot)
        since = inflight_since(snapshot, now, self.settings)
        # Expires old binds first, so that evaluating changes nothing (and the generation read after holds).
        recent = self.state.inflight_by_node(since) if since is not None else {}
        return _FilterContext(snapshot, now, demand, since, recent, self.state.generation)

    def _afterwards(self, context: _FilterContext, passed_count: int, rejections: Mapping[str, int],
                    prepare: Callable[[], tuple[bytes, bytes]] | None, evaluation: Evaluation | None = None,
                    keep: npt.NDArray[np.bool_] | None = None, passed: list[str] | None = None,
                    ) -> Callable[[], None]:
        """The filter's work once its answer is sent: `prepare` (the prioritize request kube-scheduler will
        send next, and its answer) into FilterMemory, with the figures `recall` may reuse; rejection counts."""
        def after() -> None:
            request = answer = b""
            # kube-scheduler skips prioritize for a single feasible node: nothing to prepare then.
            if prepare is not None and passed_count >= 2 and self.recent.keeps(self.state, context.generation,
                                                                               context.demand):
                request, answer = prepare()
            self.recent.remember(self.state, context.generation, context.demand, context.snapshot,
                                 context.since is not None, evaluation, keep, passed or [], request, answer)
            for reason, count in rejections.items():
                if count:
                    metrics.TALLY.rejected(reason, count)
        return after

    def prioritize_body(self, body: bytes) -> bytes:
        """Prioritize from the raw request: the answer the filter before it prepared, when this is byte for
        byte the request it predicted and nothing it depends on changed; otherwise parsed and scored."""
        answer = self.recent.answer(self.state, self.snapshot(), body, self.settings, self.clock())
        if answer is not None:
            return answer
        return self.prioritize(parse_extender_args(body))

    def prioritize(self, args: ExtenderArgs) -> bytes:
        snapshot, now = self.snapshot(), self.clock()
        demand = PodDemand.of(args.pod, snapshot)
        evaluation = self.recent.recall(self.state, snapshot, demand, args.node_names, self.settings, now)
        if evaluation is None:
            evaluation = evaluate(self.state, snapshot, self.aligner, demand, args.node_names, self.settings, now)
        return priority_list(args.node_names, scores(evaluation, self.settings))

    def preempt(self, args: PreemptionArgs) -> bytes:
        candidates = [VictimSet(v.node, tuple(v.uids), tuple(self._resolve(v)), v.pdb_violations)
                      for v in args.candidates]
        kept, dropped = preemption_candidates(args.pod.job, candidates)
        for node, why in dropped.items():
            log.info("preempt %s: dropping candidate %s: %s", args.pod.key, node, why)
        keep = {c.node for c in kept}
        return preemption_result([v for v in args.candidates if v.node in keep])

    def _resolve(self, victims: Victims) -> list[PodRecord | None]:
        """Victim records: from the request's whole pods when sent, else from our pod cache by UID."""
        resolved: list[PodRecord | None] = []
        for position, uid in enumerate(victims.uids):
            record = self.state.pods.get(uid) if uid else None
            if record is None and victims.pods is not None:
                try:
                    record = pod_from_dict(victims.pods[position])
                except RecordError:
                    record = None
            resolved.append(record)
        return resolved
