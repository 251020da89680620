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

import numpy as np
import numpy.typing as npt

from extender import metrics
from extender.wire import (
    ExtenderArgs,
    PreemptionArgs,
    Victims,
    filter_result,
    node_cache_request,
    parse_extender_args,
    preemption_result,
    priority_list,
)
from guardgrid.config import Settings
from guardgrid.filter_memory import FilterMemory
from guardgrid.kernel import filter_decision
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
from guardgrid.records import PodRecord, RecordError, pod_from_dict
from guardgrid.snapshot import Snapshot
from guardgrid.state import ClusterState

__all__ = ["ExtenderService"]

log = logging.getLogger(__name__)


class ExtenderService:
    """Answers filter, prioritize and preempt from the cluster state and the latest snapshot."""

    def __init__(self, state: ClusterState, settings: Settings,
                 snapshot: Callable[[], Snapshot | None] = lambda: None,
                 clock: Callable[[], float] = time.time, compiled: bool = True) -> None:
        """`compiled`: filter with the compiled kernel when it is built (guardgrid.kernel); the answers are
        the same either way, so only tests of the Python path and of FilterMemory.recall turn it off."""
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

    def filter_then(self, args: ExtenderArgs) -> tuple[bytes, Callable[[], None]]:
        """The filter's answer, and the work that may wait until the answer is on the wire: preparing the
        prioritize answer (FilterMemory), remembering the figures, counting rejections.

        Why split: the HTTP app runs the second part after the response is sent (the WSGI response's close(),
        extender.hot_path), while kube-scheduler reads the answer and builds its prioritize request, so the
        filter's latency no longer includes it. gunicorn reads the connection's next request only after that, so the prioritize
        that follows always finds it done.
        """
        snapshot, now = self.snapshot(), self.clock()
        demand = PodDemand.of(args.pod, snapshot)
        since = inflight_since(snapshot, now, self.settings)
        if since is not None:
            self.state.inflight_by_node(since)  # expire old binds first, so that evaluate changes nothing
        generation = self.state.generation
        decided = None if args.full_mode or not self.compiled else filter_decision(self.state, snapshot, self.aligner, demand,
                                                                args.node_names, self.settings, since)
        evaluation: Evaluation | None = None
        keep: npt.NDArray[np.bool_] | None = None
        if decided is not None:  # the compiled kernel: the same answer as below, in one pass of C
            passed, failed = decided.passed, decided.failed
            rejections: Mapping[str, int] = {"unknown_node": decided.unknown,
                                             "oom_risk": len(failed) - decided.unknown}
        else:
            evaluation = evaluate(self.state, snapshot, self.aligner, demand, args.node_names, self.settings, now)
            keep = passed_mask(evaluation, self.settings.risk_threshold, self.settings.filter_keep_least_risky)
            passed, failed, reasons = explain_filter(evaluation, keep, self.settings.risk_threshold)
            rejections = Counter(reasons.values())

        def passed_scores() -> list[int]:
            if decided is not None:
                return decided.scores
            assert evaluation is not None and keep is not None
            # Scored over all candidates, then the passed picked out: element-wise, so the same scores as
            # for the passed alone, without gathering every figure of the evaluation first.
            return score_array(evaluation, self.settings)[keep].tolist()

        def after() -> None:
            request = answer = b""
            if args.pod_json and not args.full_mode and len(passed) >= 2 and self.recent.keeps(
                    self.state, generation, demand):
                # The prioritize call that follows, answered now while the figures are still warm.
                # kube-scheduler skips prioritize for a single feasible node: nothing to prepare then.
                request = node_cache_request(args.pod_json, passed)
                answer = priority_list(passed, passed_scores())
            self.recent.remember(self.state, generation, demand, snapshot, since is not None, evaluation, keep,
                                 passed, request, answer)
            for reason, count in rejections.items():
                if count:
                    metrics.rejected(reason).inc(count)

        return filter_result(args, passed, failed), after

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
