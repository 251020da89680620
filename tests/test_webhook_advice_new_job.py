"""A job's first pod gets checkpoint advice even though the predictor's snapshot does not list the job yet.

The predictor advises only jobs that already run (its `jobs` section comes from bound pods), yet the first
pod is when the advice matters most: the env is written once, at admission. These tests go the way the API
server does: a captured AdmissionReview (tests/fixtures/admission/) through `answer_review`, with the real
`AdviceCache` reading a snapshot that went through its JSON wire form, and the patch applied with jsonpatch.
"""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path
from typing import Any

import jsonpatch
import pytest

from guardgrid import keys
from guardgrid.checkpoint import advise_unplaced, unplaced_fault_rate_per_hour
from guardgrid.config import Settings, load_settings
from guardgrid.snapshot import JobAdvice, NodeForecast, Snapshot
from guardgrid.snapshot_client import SnapshotFetch
from webhook.advice import UNAVAILABLE_WARNING, AdviceCache
from webhook.handler import answer_review

ADMISSION = Path(__file__).parent / "fixtures" / "admission"
BERT_POD = "pod-create-by-job-controller.json"  # job bert-finetune, guardgrid.io/checkpoint-cost-seconds: "45"
RESNET_POD = "pod-create-training-with-priority.json"  # job resnet50-train, no checkpoint-cost annotation
SETTINGS = load_settings({})


def node(fault_rate_per_hour: float) -> NodeForecast:
    return NodeForecast(forecast_mean_bytes=1e9, forecast_std_bytes=1e8, fault_rate_per_hour=fault_rate_per_hour,
                        allocatable_bytes=64e9)


def snapshot(rates: list[float], jobs: dict[str, JobAdvice] | None = None, stale: bool = False) -> Snapshot:
    """A snapshot as the webhook receives it: serialised by the predictor's code and parsed back."""
    built = Snapshot(generated_at=1_795_000_000.0, stale=stale,
                     nodes={f"worker-{i}": node(rate) for i, rate in enumerate(rates)}, jobs=jobs or {})
    return Snapshot.from_json(built.to_json())


def admit(fixture: str, fetched: SnapshotFetch, settings: Settings = SETTINGS) -> tuple[dict[str, Any], list[str]]:
    """The pod as stored after our patch, and the warnings shown to the user."""
    cache = AdviceCache("", settings.http_timeout_seconds, settings.advice_cache_seconds, fetch=lambda: fetched)
    review = json.loads((ADMISSION / fixture).read_bytes())
    answer = answer_review(json.dumps(review).encode(), settings, cache.lookup)
    assert answer.status == 200
    response = json.loads(answer.body)["response"]
    assert response["allowed"] is True
    patch = json.loads(base64.b64decode(response["patch"])) if "patch" in response else []
    return jsonpatch.apply_patch(review["request"]["object"], patch), response.get("warnings", [])


def interval_env(pod: dict[str, Any]) -> str | None:
    values = {entry["name"]: entry.get("value") for entry in pod["spec"]["containers"][0].get("env", [])}
    return values.get(keys.ENV_CHECKPOINT_INTERVAL)


def test_a_pod_of_a_job_unknown_to_the_snapshot_gets_the_interval_from_the_mean_rate_and_its_own_cost() -> None:
    # Mean rate (0.02 + 0.04 + 0.24) / 3 = 0.1/h -> MTBF 36000 s; C = 45 s from the pod's annotation;
    # sqrt(2 * 45 * 36000) = 1800. (The median, 0.04/h, would have said 2846 s.)
    pod, warnings = admit(BERT_POD, SnapshotFetch(snapshot([0.02, 0.04, 0.24])))
    assert interval_env(pod) == "1800"
    assert not any("checkpoint advice" in warning for warning in warnings)


def test_a_job_the_snapshot_knows_keeps_the_snapshots_own_advice() -> None:
    known = snapshot([0.02, 0.04, 0.24], jobs={"bert-finetune": JobAdvice(2700.0, 18000.0, 45.0)})
    pod, _ = admit(BERT_POD, SnapshotFetch(known))
    assert interval_env(pod) == "2700"


def test_with_no_nodes_in_the_snapshot_the_prior_rate_and_the_default_cost_are_used() -> None:
    # Prior 0.1/h -> MTBF 36000 s; no annotation, so C = the default 20 s; sqrt(2 * 20 * 36000) = 1200.
    settings = load_settings({}, fault_prior_rate_per_hour=0.1, checkpoint_cost_default_seconds=20.0)
    pod, _ = admit(RESNET_POD, SnapshotFetch(snapshot([])), settings)
    assert interval_env(pod) == "1200"


@pytest.mark.parametrize(("rates", "bound"), [
    ([50.0, 50.0], "checkpoint_interval_min_seconds"),  # MTBF 72 s: sqrt(2 * 45 * 72) = 80 s, below the floor
    ([1e-6], "checkpoint_interval_max_seconds"),  # MTBF 3.6e9 s: 569210 s, above the ceiling
    ([0.0, 0.0, 0.0], "checkpoint_interval_max_seconds"),  # nodes that never fail: infinite MTBF
])
def test_the_interval_for_a_new_job_is_clamped_to_the_configured_bounds(rates: list[float], bound: str) -> None:
    settings = load_settings({}, checkpoint_interval_min_seconds=600.0, checkpoint_interval_max_seconds=7200.0)
    pod, _ = admit(BERT_POD, SnapshotFetch(snapshot(rates)), settings)
    assert interval_env(pod) == str(round(getattr(settings, bound)))


def test_a_stale_snapshot_still_advises_a_new_job() -> None:
    pod, _ = admit(BERT_POD, SnapshotFetch(snapshot([0.02, 0.04, 0.24], stale=True)))
    assert interval_env(pod) == "1800"


def test_an_unreachable_predictor_still_means_no_env_and_a_warning_for_a_new_job() -> None:
    pod, warnings = admit(BERT_POD, SnapshotFetch(None, "predictor unreachable at http://x: ConnectTimeout"))
    assert interval_env(pod) is None
    assert UNAVAILABLE_WARNING in warnings


def test_a_new_jobs_pod_admitted_once_gets_an_empty_patch_on_reinvocation() -> None:
    pod, _ = admit(BERT_POD, SnapshotFetch(snapshot([0.02, 0.04, 0.24])))
    cache = AdviceCache("", 1.0, 30.0, fetch=lambda: SnapshotFetch(snapshot([5.0])))  # rates moved meanwhile
    review = json.loads((ADMISSION / BERT_POD).read_bytes())
    review["request"]["object"] = pod
    response = json.loads(answer_review(json.dumps(review).encode(), SETTINGS, cache.lookup).body)["response"]
    assert "patch" not in response and cache.fetches == 0  # the env is there: the predictor is not even asked


# --- the pure computation the predictor and the simulation can reuse -------------------------------------

def test_an_unplaced_pods_rate_is_the_mean_with_unusable_rates_counted_as_the_prior() -> None:
    assert unplaced_fault_rate_per_hour([0.02, 0.04, 0.24], 0.5) == pytest.approx(0.1)
    assert unplaced_fault_rate_per_hour([0.1, -1.0, math.inf, math.nan], 0.5) == pytest.approx((0.1 + 1.5) / 4)
    assert unplaced_fault_rate_per_hour([], 0.5) == 0.5


def test_advise_unplaced_reports_the_mtbf_and_cost_it_used() -> None:
    advice = advise_unplaced(None, [0.1], load_settings({}, checkpoint_cost_default_seconds=45.0))
    assert advice == JobAdvice(checkpoint_interval_seconds=pytest.approx(1800.0), mtbf_seconds=pytest.approx(36000.0),
                               checkpoint_cost_seconds=45.0)
    assert advise_unplaced(2.0, [0.0], SETTINGS).mtbf_seconds == math.inf
