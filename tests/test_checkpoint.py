"""Checkpoint-interval advice (guardgrid/checkpoint.py): Young-Daly, its bounds, and the job's fault rate."""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guardgrid import keys
from guardgrid.checkpoint import (JobPlacement, advise_jobs, checkpoint_cost_of,
                                  job_fault_rate_per_hour, placements_from_pods, young_daly_interval)
from guardgrid.config import load_settings
from guardgrid.kubeapi.memory import InMemoryKubeAPI
from guardgrid.records import PodRecord
from guardgrid.snapshot import Snapshot

CLUSTER = Path(__file__).parent / "fixtures" / "kube-scheduler" / "cluster.json"
LOWER, UPPER = 300.0, 14400.0


def fixture_pods() -> list[PodRecord]:
    return InMemoryKubeAPI.from_file(CLUSTER).list("pods").items


@settings(max_examples=200, deadline=None)
@given(cost=st.floats(1e-3, 86400.0), mtbf=st.floats(1.0, 1e9))
def test_the_interval_is_sqrt_two_c_mtbf_clamped_to_its_bounds(cost: float, mtbf: float) -> None:
    interval = young_daly_interval(cost, mtbf, LOWER, UPPER)
    raw = math.sqrt(2.0 * cost * mtbf)
    if LOWER <= raw <= UPPER:
        assert interval == pytest.approx(raw)
    else:
        assert interval == (LOWER if raw < LOWER else UPPER)


def test_a_cheap_checkpoint_on_a_flaky_node_is_held_at_the_lower_bound() -> None:
    assert young_daly_interval(1.0, 3600.0, LOWER, UPPER) == LOWER  # sqrt(7200) = 85 s < 300 s


def test_an_expensive_checkpoint_on_a_solid_node_is_held_at_the_upper_bound() -> None:
    assert young_daly_interval(600.0, 3600.0 * 1000, LOWER, UPPER) == UPPER


def test_an_infinite_mtbf_gives_the_upper_bound() -> None:
    assert young_daly_interval(60.0, math.inf, LOWER, UPPER) == UPPER


@pytest.mark.parametrize(("cost", "mtbf", "lower", "upper", "message"), [
    (0.0, 3600.0, LOWER, UPPER, "checkpoint cost"),
    (-5.0, 3600.0, LOWER, UPPER, "checkpoint cost"),
    (math.nan, 3600.0, LOWER, UPPER, "NaN"),
    (60.0, 0.0, LOWER, UPPER, "MTBF"),
    (60.0, 3600.0, UPPER, LOWER, "lower <= upper"),
])
def test_meaningless_arguments_raise_instead_of_advising_nonsense(cost: float, mtbf: float, lower: float,
                                                                   upper: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        young_daly_interval(cost, mtbf, lower, upper)


def test_advice_for_a_job_follows_the_formula_with_its_nodes_fault_rate_and_its_cost() -> None:
    config = load_settings({})
    advice = advise_jobs({"bert": JobPlacement("bert", ("worker-4",), 45.0)}, {"worker-4": 0.02}, config)["bert"]
    assert advice.mtbf_seconds == pytest.approx(3600.0 / 0.02)
    assert advice.checkpoint_cost_seconds == 45.0
    assert advice.checkpoint_interval_seconds == pytest.approx(math.sqrt(2 * 45.0 * 3600.0 / 0.02))


def test_a_job_spread_over_two_nodes_is_told_to_checkpoint_more_often_than_on_one() -> None:
    config = load_settings({})
    rates = {"worker-1": 0.02, "worker-2": 0.02}
    advice = advise_jobs({"one": JobPlacement("one", ("worker-1",), 60.0),
                          "two": JobPlacement("two", ("worker-1", "worker-2"), 60.0)}, rates, config)
    assert advice["two"].mtbf_seconds == pytest.approx(advice["one"].mtbf_seconds / 2)
    assert advice["two"].checkpoint_interval_seconds < advice["one"].checkpoint_interval_seconds
    assert advice["two"].checkpoint_interval_seconds == pytest.approx(
        advice["one"].checkpoint_interval_seconds / math.sqrt(2))


def test_a_node_without_a_predicted_rate_fails_at_the_prior_rate() -> None:
    config = load_settings({}, fault_prior_rate_per_hour=0.05)
    assert job_fault_rate_per_hour(["worker-1", "unknown"], {"worker-1": 0.01}, 0.05) == pytest.approx(0.06)
    assert job_fault_rate_per_hour(["worker-1"], {"worker-1": math.nan}, 0.05) == pytest.approx(0.05)
    advice = advise_jobs({"j": JobPlacement("j", ("new-node",), None)}, {}, config)["j"]
    assert advice.mtbf_seconds == pytest.approx(3600.0 / 0.05)
    assert advice.checkpoint_cost_seconds == config.checkpoint_cost_default_seconds


def test_the_configured_bounds_are_applied_to_the_advice() -> None:
    config = load_settings({}, checkpoint_interval_min_seconds=1000.0, checkpoint_interval_max_seconds=2000.0)
    advice = advise_jobs({"flaky": JobPlacement("flaky", ("n1",), 1.0),
                          "solid": JobPlacement("solid", ("n2",), 3600.0)}, {"n1": 10.0, "n2": 0.001}, config)
    assert advice["flaky"].checkpoint_interval_seconds == 1000.0
    assert advice["solid"].checkpoint_interval_seconds == 2000.0


def test_a_zero_fault_rate_gives_the_upper_bound_and_still_survives_the_snapshot_wire_format() -> None:
    config = load_settings({}, fault_prior_rate_per_hour=0.0)
    advice = advise_jobs({"j": JobPlacement("j", ("n1",), 60.0)}, {"n1": 0.0}, config)
    assert advice["j"].checkpoint_interval_seconds == config.checkpoint_interval_max_seconds
    assert math.isinf(advice["j"].mtbf_seconds)
    decoded = Snapshot.from_json(Snapshot(generated_at=1.0, jobs=advice).to_json())
    assert decoded.jobs["j"] == advice["j"]


def test_placements_come_from_the_running_job_pods_of_the_captured_cluster() -> None:
    placements = placements_from_pods(fixture_pods())
    # The etl/inference/feature-store pods belong to no job; the standby slot serves one but is not part of it.
    assert placements == {"bert-finetune": JobPlacement("bert-finetune", ("worker-4",), 45.0)}


def test_a_job_over_several_nodes_is_placed_on_all_of_them_with_its_largest_cost() -> None:
    bert = next(p for p in fixture_pods() if p.job == "bert-finetune")
    other = dataclasses.replace(bert, name="bert-finetune-2", node_name="worker-2",
                                annotations={**bert.annotations, keys.CHECKPOINT_COST_SECONDS: "90"})
    finished = dataclasses.replace(bert, name="bert-finetune-old", node_name="worker-6", phase="Succeeded")
    unbound = dataclasses.replace(bert, name="bert-finetune-pending", node_name="")
    placement = placements_from_pods([bert, other, finished, unbound])["bert-finetune"]
    assert placement.nodes == ("worker-2", "worker-4")
    assert placement.checkpoint_cost_seconds == 90.0


@pytest.mark.parametrize("bad", ["sixty", "", "-3", "0", "inf", "nan"])
def test_a_bad_checkpoint_cost_annotation_falls_back_to_the_default(bad: str, caplog: pytest.LogCaptureFixture) -> None:
    bert = next(p for p in fixture_pods() if p.job == "bert-finetune")
    pod = dataclasses.replace(bert, annotations={**bert.annotations, keys.CHECKPOINT_COST_SECONDS: bad})
    with caplog.at_level(logging.WARNING, logger="guardgrid.checkpoint"):
        assert checkpoint_cost_of(pod, 60.0) == 60.0
    assert pod.key in caplog.text and keys.CHECKPOINT_COST_SECONDS in caplog.text
    config = load_settings({})
    placement = placements_from_pods([pod])["bert-finetune"]
    assert placement.checkpoint_cost_seconds is None
    advice = advise_jobs({"bert-finetune": placement}, {"worker-4": 0.01}, config)["bert-finetune"]
    assert advice.checkpoint_cost_seconds == config.checkpoint_cost_default_seconds


def test_a_good_checkpoint_cost_annotation_is_used() -> None:
    bert = next(p for p in fixture_pods() if p.job == "bert-finetune")
    assert checkpoint_cost_of(bert, 60.0) == 45.0
    no_annotation = dataclasses.replace(bert, annotations={})
    assert checkpoint_cost_of(no_annotation, 60.0) == 60.0
