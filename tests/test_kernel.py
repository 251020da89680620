"""The compiled filter (guardgrid/_kernel.c) answers exactly as the Python decision (guardgrid.placement).

Random clusters, snapshots, settings and candidate lists, each decided both ways and compared: passed names
in order, every rejection message byte for byte, the passed nodes' scores and the rejection counts. The
figures include the hard cases of the text: sizes that fall exactly halfway between two printed decimals,
zero and huge allocatable, nodes the predictor does not know, names the cache does not know, duplicates.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter

import numpy as np
import orjson
import pytest
from conftest import SCHEDULER, load_json

from extender.wire import ExtenderArgs, filter_result, priority_list
from guardgrid import kernel
from guardgrid.config import Settings, load_settings
from guardgrid.keys import STANDBY_FOR
from guardgrid.placement import (
    ForecastAligner,
    PodDemand,
    evaluate,
    explain_filter,
    inflight_since,
    passed_mask,
    score_array,
)
from guardgrid.records import NodeRecord, PodRecord, pod_from_dict
from guardgrid.snapshot import NodeForecast, Snapshot
from guardgrid.state import ClusterState

GiB = 2**30
NOW = 1_800_000_000.0
SETTINGS = load_settings({})
JOB = "train-a"
BERT = pod_from_dict(load_json(SCHEDULER / "node-cache" / "filter-args.json")["Pod"])  # only its shape matters


def test_the_compiled_kernel_is_built():
    """`make` builds it (scripts/build_kernel.py); without it every test below would compare Python with
    itself, and the extender would silently run at the old speed."""
    assert kernel.available()


def _size(rng: random.Random) -> float:
    """Memory figures, half of them on exact binary fractions where "%.1f" must round a tie to even."""
    choice = rng.random()
    if choice < 0.3:
        return rng.randrange(1, 4000) * GiB / 20  # x.x5 Gi: exact ties at one decimal
    if choice < 0.4:
        return float(rng.choice([0, 1, 1023, 1024, 1025, 2**20 - 1, 2**20, 2**40, 2**40 * 3.25, 2**50]))
    if choice < 0.5:
        return float(rng.randrange(0, 2**12)) * 2**18  # quarter MiB steps
    return rng.uniform(0, 512 * GiB)


def _scenario(seed: int, plain: bool = False) -> tuple[ClusterState, Snapshot | None, PodDemand, list[str], Settings,
                                                       float]:
    """A random filter; `plain`: as kube-scheduler sends them, ASCII names each sent once."""
    rng = random.Random(seed)
    names = [f"node-{i}" if plain or rng.random() < 0.9 else f"nöde-{i}-Ω" for i in range(rng.randint(1, 40))]
    nodes = [NodeRecord(name=name, uid=name, allocatable_memory=int(_size(rng)) if rng.random() < 0.95 else 0)
             for name in names]
    pods: list[PodRecord] = []
    for i in range(rng.randint(0, 60)):
        labels = {STANDBY_FOR: rng.choice([JOB, "train-b"])} if rng.random() < 0.2 else {}
        pods.append(PodRecord(uid=f"pod-{i}", namespace="ml", name=f"p{i}", node_name=rng.choice(names),
                              memory_request=int(_size(rng) / 8), phase="Running", labels=labels,
                              scheduled_at=NOW - rng.choice([3600, 30, 5, 1])))
    state = ClusterState()
    state.replace_nodes(nodes)
    state.replace_pods(pods)
    uid = rng.choice([p.uid for p in pods]) if pods and rng.random() < 0.2 else "the-pod"  # maybe already bound
    peak = _size(rng) / 4
    demand = PodDemand(uid=uid, job=rng.choice([JOB, "", "train-b"]), request=peak, peak=peak)
    snapshot = None
    if rng.random() < 0.75:
        covered = [n for n in names if rng.random() < 0.85]
        snapshot = Snapshot(generated_at=NOW - rng.choice([5, 20, 100_000]), stale=rng.random() < 0.1, nodes={
            name: NodeForecast(forecast_mean_bytes=_size(rng), forecast_std_bytes=rng.choice([0.0, _size(rng) / 16]),
                               fault_rate_per_hour=rng.choice([0.0, 0.001, rng.uniform(0, 0.2)]),
                               allocatable_bytes=0) for name in covered})
    candidates = [n for n in names if rng.random() < 0.8] + [f"ghost-{i}" for i in range(rng.randint(0, 3))]
    if not plain:
        candidates += rng.sample(candidates, min(len(candidates), rng.randint(0, 2)))  # the odd duplicate
    rng.shuffle(candidates)
    settings = dataclasses.replace(
        SETTINGS, risk_threshold=rng.choice([0.0, 0.05, 0.1, 0.125, 0.5, 1.0, rng.random()]),
        filter_keep_least_risky=rng.random() < 0.3,
        weight_risk=rng.choice([0.0, 0.5, rng.uniform(0, 3)]), weight_balance=rng.choice([0.0, 0.3, rng.uniform(0, 3)]),
        weight_fault=rng.choice([0.0, 0.2, rng.uniform(0, 3)]),
        fault_rate_reference_per_hour=rng.choice([0.05, rng.uniform(0.001, 1)]),
        fallback_spread=rng.choice([0.0, 0.05, rng.random()]))
    return state, snapshot, demand, candidates, settings, NOW


def _python(state, snapshot, aligner, demand, candidates, settings, now):
    evaluation = evaluate(state, snapshot, aligner, demand, candidates, settings, now)
    keep = passed_mask(evaluation, settings.risk_threshold, settings.filter_keep_least_risky)
    passed, failed, reasons = explain_filter(evaluation, keep, settings.risk_threshold)
    return passed, failed, score_array(evaluation, settings)[keep].tolist(), reasons


def _names_body(candidates: list[str]) -> tuple[bytes, int, int]:
    """A node-cache body around `candidates`, and where its NodeNames array starts and ends."""
    head = b'{"Pod":{},"Nodes":null,"NodeNames":'
    body = head + orjson.dumps(candidates) + b"}"
    return body, len(head), len(body) - 1


RANDOM_BODIES = [(seed, seed % 4 != 0) for seed in range(400)]  # (seed, plain): 3 in 4 as the scheduler writes


@pytest.mark.parametrize(("seed", "plain"), RANDOM_BODIES)
def test_the_kernel_answers_a_random_body_with_the_bytes_python_writes(seed, plain):
    state, snapshot, demand, candidates, settings, now = _scenario(seed, plain)
    aligner = ForecastAligner(settings.fault_prior_rate_per_hour)
    since = inflight_since(snapshot, now, settings)
    if since is not None:
        state.inflight_by_node(since)
    body, start, end = _names_body(candidates)
    compiled = kernel.filter_body_decision(state, snapshot, aligner, demand, body, start, end, settings, since)
    passed, failed, scores, reasons = _python(state, snapshot, aligner, demand, candidates, settings, now)
    if len(set(candidates)) < len(candidates) or not all(n.isascii() for n in candidates):
        assert compiled is None  # a name sent twice, or one JSON may escape: Python answers those
        return
    assert compiled is not None
    expected = filter_result(ExtenderArgs(BERT, candidates, None, None), passed, failed)
    assert compiled.answer == expected
    assert compiled.names_json == orjson.dumps(passed)
    assert compiled.priority_list == priority_list(passed, scores)
    assert (compiled.passed, compiled.oom_risk, compiled.unknown) == (
        len(passed), Counter(reasons.values())["oom_risk"], Counter(reasons.values())["unknown_node"])


@pytest.mark.parametrize("names", [b'[ "a"]', b'["a" ,"b"]', b'["a\\u0062"]', b'["a","b",]', b'["a""b"]',
                                   b'["\xc3\xa9"]', b'["a\tb"]', b"[]x", b'"a"', b"[1]"])
def test_a_names_array_not_written_as_the_scheduler_writes_it_is_left_to_python(names):
    state, _, demand, _, settings, _ = _scenario(11)
    body = b'{"Pod":{},"Nodes":null,"NodeNames":' + names + b"}"
    start = body.index(b"NodeNames") + len(b'NodeNames":')
    assert kernel.filter_body_decision(state, None, ForecastAligner(0.01), demand, body, start, len(body) - 1,
                                       settings, None) is None


def test_an_empty_names_array_passes_nothing_and_rejects_nothing():
    state, _, demand, _, settings, _ = _scenario(11)
    body, start, end = _names_body([])
    compiled = kernel.filter_body_decision(state, None, ForecastAligner(0.01), demand, body, start, end, settings,
                                           None)
    assert compiled is not None
    assert compiled.answer == filter_result(ExtenderArgs(BERT, [], None, None), [], {})
    assert (compiled.names_json, compiled.priority_list, compiled.passed) == (b"[]", b"[]", 0)


def test_the_random_filters_cover_rejections_passes_ties_and_unknown_nodes():
    """The comparison above is only as good as its cases: make sure they reach every branch."""
    seen: Counter[str] = Counter()
    for seed, plain in RANDOM_BODIES:
        state, snapshot, demand, candidates, settings, now = _scenario(seed, plain)
        passed, failed, _, reasons = _python(state, snapshot, ForecastAligner(settings.fault_prior_rate_per_hour),
                                             demand, candidates, settings, now)
        seen["passed"] += bool(passed)
        seen["oom_risk"] += "oom_risk" in reasons.values()
        seen["unknown_node"] += "unknown_node" in reasons.values()
        seen["forecast message"] += any("(forecast " in m for m in failed.values())
        seen["requested message"] += any("(requested " in m for m in failed.values())
        seen["tie at one decimal"] += any(".5Gi" in m or ".2Gi" in m for m in failed.values())
        seen["a body left to Python"] += len(set(candidates)) < len(candidates) or not all(
            n.isascii() for n in candidates)
    assert min(seen.values()) >= 20, seen


def _decided(state, snapshot, aligner, demand, names, settings, now):
    """The kernel's answer for a body around `names`, with the in-flight cut-off applied as the service does."""
    since = inflight_since(snapshot, now, settings)
    body, start, end = _names_body(names)
    return kernel.filter_body_decision(state, snapshot, aligner, demand, body, start, end, settings, since)


def test_a_figure_the_kernel_cannot_reproduce_sends_the_decision_back_to_python():
    state, _, demand, _, settings, now = _scenario(3)
    names = list(state.table.index)
    broken = Snapshot(generated_at=now - 5, nodes={
        name: NodeForecast(forecast_mean_bytes=math.nan, forecast_std_bytes=GiB, fault_rate_per_hour=0.0,
                           allocatable_bytes=0) for name in names})
    aligner = ForecastAligner(settings.fault_prior_rate_per_hour)
    assert _decided(state, broken, aligner, demand, names, settings, now) is None


def test_a_name_table_with_exact_lookups_is_left_to_python(monkeypatch):
    state, _, demand, candidates, settings, now = _scenario(5, plain=True)
    monkeypatch.setattr(type(state.table.name_index), "exact", property(lambda self: True))
    assert _decided(state, None, ForecastAligner(0.01), demand, candidates, settings, now) is None


def test_the_kernel_refuses_arrays_of_the_wrong_shape_loudly():
    state, _, _, candidates, _, _ = _scenario(7, plain=True)
    index = state.table.name_index
    body, start, end = _names_body(candidates)
    with pytest.raises(TypeError, match="memory must be a C-contiguous float64 array"):
        kernel._kernel.filter_body(body, start, end, index.bucket_hashes, index.slot_rows, index.mask,
                                   np.zeros((len(state.table), 2)), None, {}, {}, -1, 0.0, 1.0, 0.1, False, 0.05,
                                   0.01, 0.05, 0.5, 0.3, 0.2, "unknown")


def test_sizes_exactly_halfway_between_two_printed_decimals_read_as_python_prints_them():
    halves = [0.25, 0.75, 2.25, 2.75, 1023.75, 0.05]  # in GiB; all but the last are exact binary ties
    sizes = [h * GiB for h in halves] + [h * 2**20 for h in halves] + [h * 2**10 for h in halves] + [2.5, 1536.0]
    names = [f"node-{i}" for i in range(len(sizes))]
    state = ClusterState()
    state.replace_nodes([NodeRecord(name=n, uid=n, allocatable_memory=int(s)) for n, s in zip(names, sizes)])
    snapshot = Snapshot(generated_at=NOW - 5, nodes={
        n: NodeForecast(forecast_mean_bytes=s, forecast_std_bytes=0.0, fault_rate_per_hour=0.0, allocatable_bytes=0)
        for n, s in zip(names, sizes)})
    settings = dataclasses.replace(SETTINGS, risk_threshold=0.0)  # reject everything: every figure is printed
    demand = PodDemand(uid="p", job="", request=0.125 * GiB, peak=0.125 * GiB)
    aligner = ForecastAligner(0.0)
    compiled = _decided(state, snapshot, aligner, demand, names, settings, NOW)
    _, failed, _, _ = _python(state, snapshot, aligner, demand, names, settings, NOW)
    assert compiled is not None and len(failed) == len(names)
    assert compiled.answer == filter_result(ExtenderArgs(BERT, names, None, None), [], failed)
    assert "of 2.2Gi" in failed["node-2"] and "of 2.8Gi" in failed["node-3"]  # ties to even, as "%.1f" rounds
