"""Placement decisions (core, shared by the extender and the simulation) on the captured cluster."""

import re

import numpy as np
import pytest

from conftest import SCHEDULER, captured_state, load_json
from guardgrid.config import load_settings
from guardgrid.placement import (MAX_SCORE, MEAN, ForecastAligner, PodDemand, VictimSet, evaluate, filter_decisions,
                                 preemption_candidates, score_array, scores)
from guardgrid.records import pod_from_dict
from guardgrid.snapshot import NodeForecast, Snapshot, WorkloadPeak

GiB = 2**30
NOW = 1_800_000_000.0
NODES = ["worker-1", "worker-2", "worker-3", "worker-4", "worker-5", "worker-6"]
SETTINGS = load_settings({})


_state = captured_state


def _pod(name):
    return pod_from_dict(load_json(SCHEDULER / "node-cache" / name)["Pod"])


BERT = _pod("filter-args.json")  # 8Gi, job bert-finetune
RESNET = _pod("preempt-args.json")  # 96Gi, job resnet50-train, whose slot is on worker-3


def _evaluate(pod, snapshot=None, state=None, nodes=NODES, settings=SETTINGS):
    return evaluate(state or _state(), snapshot, ForecastAligner(settings.fault_prior_rate_per_hour),
                    PodDemand.of(pod, snapshot), nodes, settings, NOW)


def _snapshot(means_gib, std_gib=2.0, fault=None, generated_at=NOW - 5, **kwargs):
    return Snapshot(generated_at=generated_at, nodes={
        name: NodeForecast(forecast_mean_bytes=mean * GiB, forecast_std_bytes=std_gib * GiB,
                           fault_rate_per_hour=(fault or {}).get(name, 0.001), allocatable_bytes=0)
        for name, mean in means_gib.items()}, **kwargs)


def test_without_a_snapshot_a_small_pod_passes_everywhere_on_requests():
    passed, failed, _ = filter_decisions(_evaluate(BERT), SETTINGS.risk_threshold)
    assert passed == NODES and failed == {}


def test_the_jobs_own_standby_memory_counts_as_free_but_another_jobs_does_not():
    evaluation = _evaluate(RESNET)
    passed, failed, _ = filter_decisions(evaluation, SETTINGS.risk_threshold)
    assert passed == ["worker-3"]  # its own 96Gi slot makes room for exactly this pod
    assert set(failed) == set(NODES) - {"worker-3"}
    other_job = pod_from_dict({**load_json(SCHEDULER / "node-cache" / "preempt-args.json")["Pod"],
                               "metadata": {"name": "x", "labels": {"guardgrid.io/job": "other"}}})
    passed, _, _ = filter_decisions(_evaluate(other_job), SETTINGS.risk_threshold)
    assert "worker-3" not in passed


def test_a_rejection_message_carries_the_risk_threshold_and_memory_figures():
    snapshot = _snapshot({"worker-5": 58.2}, std_gib=4.0)
    _, failed, reasons = filter_decisions(_evaluate(BERT, snapshot, nodes=["worker-5"]), 0.10)
    assert reasons == {"worker-5": "oom_risk"}
    assert re.fullmatch(r"GuardGrid: predicted OOM risk 0\.\d\d > 0\.10 \(forecast 58\.2Gi \+ pod 8Gi of 64Gi\)",
                        failed["worker-5"]), failed["worker-5"]


def test_a_forecast_near_capacity_rejects_a_node_that_requests_alone_would_accept():
    snapshot = _snapshot({name: 10 for name in NODES} | {"worker-5": 60})
    passed, failed, _ = filter_decisions(_evaluate(BERT, snapshot), 0.10)
    assert "worker-5" in failed and "worker-6" in passed


def test_a_stale_snapshot_falls_back_to_requests():
    stale = _snapshot({"worker-5": 60}, generated_at=NOW - SETTINGS.snapshot_max_age_seconds - 1)
    passed, _, _ = filter_decisions(_evaluate(BERT, stale), 0.10)
    assert "worker-5" in passed
    marked = _snapshot({"worker-5": 60}, stale=True)
    assert "worker-5" in filter_decisions(_evaluate(BERT, marked), 0.10)[0]


def test_a_learned_workload_peak_above_the_request_raises_the_risk():
    base = _snapshot({"worker-5": 52})  # 52 + 8Gi of 64Gi: risk 0.02
    peaked = _snapshot({"worker-5": 52}, workloads={"bert-finetune": WorkloadPeak(11 * GiB)})  # 0.31
    assert _evaluate(BERT, peaked, nodes=["worker-5"]).risk[0] > _evaluate(BERT, base, nodes=["worker-5"]).risk[0]
    assert filter_decisions(_evaluate(BERT, peaked, nodes=["worker-5"]), 0.10)[0] == []


def test_a_learned_peak_never_exceeds_the_pods_memory_limit():
    # bert: request 8Gi, limit 12Gi. An OOM-bumped peak of 20Gi cannot happen on the node: the kernel stops
    # the container at 12Gi, so counting 20Gi would only keep the pod off nodes where it fits.
    peaked = _snapshot({"worker-5": 10}, workloads={"bert-finetune": WorkloadPeak(20 * GiB)})
    assert _evaluate(BERT, peaked, nodes=["worker-5"]).peak == 12 * GiB


def test_when_every_candidate_is_too_risky_the_least_risky_one_is_kept_if_configured():
    snapshot = _snapshot({"worker-5": 58, "worker-6": 57})
    evaluation = _evaluate(BERT, snapshot, nodes=["worker-5", "worker-6", "ghost"])
    assert filter_decisions(evaluation, 0.10)[0] == []  # the strict rule: Pending until forecasts change
    passed, failed, reasons = filter_decisions(evaluation, 0.10, keep_least_risky=True)
    assert passed == ["worker-6"]
    assert reasons == {"worker-5": "oom_risk", "ghost": "unknown_node"}


def test_keeping_the_least_risky_node_never_overrides_a_safe_one():
    snapshot = _snapshot({"worker-5": 58, "worker-6": 10})
    passed, failed, _ = filter_decisions(_evaluate(BERT, snapshot, nodes=["worker-5", "worker-6"]), 0.10,
                                         keep_least_risky=True)
    assert passed == ["worker-6"] and "worker-5" in failed


def test_pods_bound_after_the_forecast_count_as_in_flight_so_a_burst_spreads():
    state = _state()
    snapshot = _snapshot({name: 30 for name in NODES}, generated_at=NOW - 10)
    before = _evaluate(BERT, snapshot, state=state, nodes=["worker-5", "worker-6"])
    burst = pod_from_dict({"metadata": {"name": "burst", "uid": "burst-1"}, "spec": {
        "nodeName": "worker-5", "containers": [{"resources": {"requests": {"memory": "20Gi"}}}]},
        "status": {"phase": "Running"}})
    state.upsert_pod(burst, now=NOW - 2)
    after = _evaluate(BERT, snapshot, state=state, nodes=["worker-5", "worker-6"])
    assert after.inflight[0] == 20 * GiB and after.inflight[1] == 0
    assert after.risk[0] > before.risk[0]
    assert scores(after, SETTINGS)[0] < scores(after, SETTINGS)[1]


def test_a_node_missing_from_the_cache_fails_with_a_reason_and_the_rest_is_decided():
    passed, failed, reasons = filter_decisions(_evaluate(BERT, nodes=["worker-1", "ghost"]), 0.10)
    assert passed == ["worker-1"] and reasons == {"ghost": "unknown_node"}
    assert "not in GuardGrid's node cache" in failed["ghost"]


def test_the_own_standby_slot_scores_highest_and_everything_stays_in_range():
    evaluation = _evaluate(RESNET)
    graded = dict(zip(NODES, scores(evaluation, SETTINGS)))
    assert graded["worker-3"] == MAX_SCORE
    assert all(0 <= s < MAX_SCORE for name, s in graded.items() if name != "worker-3")


def test_more_headroom_and_a_lower_fault_rate_score_higher():
    graded = dict(zip(NODES, scores(_evaluate(BERT), SETTINGS)))
    assert graded["worker-5"] > graded["worker-1"]  # 48/64 used after placement vs 108/128
    snapshot = _snapshot({"worker-5": 20, "worker-6": 20}, fault={"worker-5": 0.0, "worker-6": 0.2})
    faulty = dict(zip(["worker-5", "worker-6"], scores(_evaluate(BERT, snapshot, nodes=["worker-5", "worker-6"]),
                                                        SETTINGS)))
    assert faulty["worker-5"] > faulty["worker-6"]


@pytest.mark.parametrize("weights", [(0, 0, 0), (100, 0, 0), (0, 100, 0), (0, 0, 100), (100, 100, 100)])
def test_scores_are_integers_from_0_to_10_whatever_the_weights(weights):
    settings = load_settings({}, weight_risk=weights[0], weight_balance=weights[1], weight_fault=weights[2])
    graded = scores(_evaluate(RESNET, settings=settings), settings)
    assert all(isinstance(s, int) and 0 <= s <= MAX_SCORE for s in graded)


def test_preemption_keeps_only_standby_victims_and_prefers_the_jobs_own_slot():
    state = _state()
    own = state.pods["469f5c63-ce80-465e-bfab-a466f8eda9ae"]
    etl = next(p for p in state.pods.values() if p.name == "etl-worker-1")
    other_slot = pod_from_dict({"metadata": {"name": "standby-other-0", "uid": "o1",
                                             "labels": {"guardgrid.io/standby-for": "other"}},
                                "spec": {"priorityClassName": "guardgrid-standby", "containers": []}})
    candidates = [VictimSet("worker-1", (etl.uid,), (etl,), 0),
                  VictimSet("worker-3", (own.uid,), (own,), 0),
                  VictimSet("worker-5", ("o1",), (other_slot,), 0),
                  VictimSet("worker-6", ("nobody",), (None,), 0)]
    kept, dropped = preemption_candidates("resnet50-train", candidates)
    assert [c.node for c in kept] == ["worker-3"]
    assert "not a GuardGrid standby slot" in dropped["worker-1"]
    assert "unknown victim UID" in dropped["worker-6"]
    assert "own standby slot" in dropped["worker-5"]
    kept, _ = preemption_candidates("job-without-slot", candidates)
    assert [c.node for c in kept] == ["worker-3", "worker-5"]


def test_a_new_snapshot_is_realigned_even_when_it_reuses_the_old_ones_memory():
    state = _state()
    aligner = ForecastAligner(SETTINGS.fault_prior_rate_per_hour)
    first = aligner.align(_snapshot({"worker-5": 10}), state.table)  # that snapshot is freed right away
    second = aligner.align(_snapshot({"worker-5": 50}), state.table)  # and may get the same id()
    row = state.table.index["worker-5"]
    assert first.columns[row, MEAN] == 10 * GiB and second.columns[row, MEAN] == 50 * GiB


@pytest.mark.parametrize("nodes", [NODES, NODES + ["ghost"], ["worker-5", "ghost", "worker-1"]])
def test_scoring_all_candidates_then_picking_some_equals_scoring_those_alone(nodes):
    """The filter prepares prioritize's answer by scoring every candidate and picking the passed ones."""
    evaluation = _evaluate(RESNET, _snapshot({"worker-1": 120, "worker-2": 60, "worker-5": 57}), nodes=nodes)
    for picked in ([0], list(range(len(nodes)))[::2], list(range(len(nodes)))):
        positions = np.array(picked, dtype=np.int64)
        alone = scores(evaluation.take(positions, [nodes[p] for p in picked]), SETTINGS)
        assert score_array(evaluation, SETTINGS)[positions].tolist() == alone


def test_candidates_the_snapshot_does_not_cover_are_judged_on_requests_beside_covered_ones():
    """A node added after the predictor's last cycle: the rest keep their forecasts, it gets requests."""
    state = _state()
    snapshot = _snapshot({name: 10 for name in NODES if name != "worker-2"})
    mixed = _evaluate(BERT, snapshot, state=state)
    on_requests = _evaluate(BERT, None, state=state)
    covered = [name != "worker-2" for name in NODES]
    assert mixed.forecast.tolist() == covered
    assert mixed.base[1] == on_requests.base[1] and mixed.spread[1] == on_requests.spread[1]
    everywhere = _evaluate(BERT, _snapshot({name: 10 for name in NODES}), state=state)
    assert mixed.base[0] == everywhere.base[0] != on_requests.base[0]  # covered nodes keep their forecast
    assert mixed.risk[1] == on_requests.risk[1] and mixed.risk[0] == everywhere.risk[0]
