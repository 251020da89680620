"""Migration over the wire: the controller drives the real KubeAPI adapter against the captured API answers.

`apiserver_stub` serves the bytes a real v1.36 kube-apiserver sent for evictions (201 for inference-a, 429 with
cause DisruptionBudget for etl-worker-1, 404 for does-not-exist), so this checks end to end that a budget
refusal becomes `blocked`, that the only pod-changing request is the policy/v1 Eviction (never a DELETE), and
that each decision reaches the API server as an Event.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from apiserver_stub import CAPTURES, ApiServerStub, Reply, status_body
from apiserver_stub import api_client, apiserver  # noqa: F401 - pytest fixtures used as arguments
from kubernetes import client as k8s

from guardgrid import keys
from guardgrid.config import load_settings
from guardgrid.kubeapi.real import RealKubeAPI
from guardgrid.records import PodRecord
from predictor.migration import MigrationController
from predictor.progress import ProgressSeries

NOW = 1_795_000_000.0


def flattened() -> ProgressSeries:
    times = np.arange(NOW - 3 * 3600.0, NOW + 1.0, 60.0)
    return ProgressSeries(times, 0.9 - 0.8 * np.exp(-(times - times[0]) / 900.0))


def opted_in(pod: PodRecord, job: str) -> PodRecord:
    """A captured pod as if its owner had labelled it a job and opted it in, with a checkpoint image."""
    return dataclasses.replace(
        pod, labels={**pod.labels, keys.JOB: job}, created_at=NOW - 86400.0, scheduled_at=None,
        annotations={**pod.annotations, keys.MIGRATABLE: "true",
                     keys.CHECKPOINT_IMAGE: f"registry.example.com/ckpt/{job}:latest"})


@pytest.fixture
def kube(api_client: k8s.ApiClient) -> RealKubeAPI:  # noqa: F811 - the fixture imported above
    return RealKubeAPI(api_client, page_size=3, reporting_instance="guardgrid-predictor-0", clock=lambda: NOW)


def test_captured_answers_become_evicted_blocked_and_not_found_and_nothing_is_ever_deleted(
        kube: RealKubeAPI, apiserver: ApiServerStub) -> None:  # noqa: F811
    apiserver.respond("POST", "/api/v1/namespaces/default/events", Reply(status=201, body=b"{}"))
    listed = {p.name: p for p in kube.list("pods").items}
    pods = [opted_in(listed["etl-worker-1"], "etl-a"), opted_in(listed["inference-a"], "inference-a"),
            opted_in(dataclasses.replace(listed["inference-b"], name="does-not-exist"), "ghost")]
    load = {"worker-1": 0.97, "worker-5": 0.93, "worker-6": 0.91}
    config = load_settings({}, migration_enabled=True, migration_dry_run=False)
    counted: list[tuple[str, str]] = []
    controller = MigrationController(kube, config, clock=lambda: NOW, metrics=lambda d, r: counted.append((d, r)))

    decisions = controller.run_cycle(pods, load, {}, {job: flattened() for job in ("etl-a", "inference-a", "ghost")})

    outcome = {d.pod: (d.decision, d.reason) for d in decisions}
    assert outcome == {"default/etl-worker-1": ("blocked", "disruption_budget"),
                       "default/inference-a": ("evicted", "memory_load"),
                       "default/does-not-exist": ("skipped", "not_found")}
    blocked = next(d for d in decisions if d.decision == "blocked")
    assert "etl-pdb" in blocked.message  # the budget's name, from the 429's cause
    evictions = [r for r in apiserver.requests if r.method == "POST" and r.path.endswith("/eviction")]
    assert sorted(r.path for r in evictions) == [
        "/api/v1/namespaces/default/pods/does-not-exist/eviction",
        "/api/v1/namespaces/default/pods/etl-worker-1/eviction",
        "/api/v1/namespaces/default/pods/inference-a/eviction",
    ]
    assert all(r.json()["apiVersion"] == "policy/v1" and r.json()["kind"] == "Eviction" for r in evictions)
    assert [r for r in apiserver.requests if r.method == "DELETE"] == []
    events = [r.json() for r in apiserver.requests_to("POST", "/api/v1/namespaces/default/events")]
    assert sorted((e["involvedObject"]["name"], e["reason"], e["type"]) for e in events) == [
        ("does-not-exist", "GuardGridMigrationSkipped", "Normal"),
        ("etl-worker-1", "GuardGridMigrationBlocked", "Warning"),
        ("inference-a", "GuardGridMigrating", "Normal"),
    ]
    assert sorted(counted) == [("blocked", "disruption_budget"), ("evicted", "memory_load"),
                               ("skipped", "not_found")]


def test_a_dry_run_sends_events_but_no_eviction(kube: RealKubeAPI, apiserver: ApiServerStub) -> None:  # noqa: F811
    apiserver.respond("POST", "/api/v1/namespaces/default/events", Reply(status=201, body=b"{}"))
    listed = {p.name: p for p in kube.list("pods").items}
    config = load_settings({}, migration_enabled=True, migration_dry_run=True)
    controller = MigrationController(kube, config, clock=lambda: NOW, metrics=lambda d, r: None)

    [decision] = controller.run_cycle([opted_in(listed["inference-a"], "inference-a")], {"worker-5": 0.93}, {},
                                      {"inference-a": flattened()})

    assert decision.decision == "dry_run"
    assert [r for r in apiserver.requests if r.path.endswith("/eviction") or r.method == "DELETE"] == []
    [event] = [r.json() for r in apiserver.requests_to("POST", "/api/v1/namespaces/default/events")]
    assert event["reason"] == "GuardGridMigrationDryRun" and "would evict" in event["message"]


def test_a_throttled_eviction_is_blocked_as_too_many_requests_and_retried_next_cycle(
        kube: RealKubeAPI, apiserver: ApiServerStub) -> None:  # noqa: F811
    apiserver.respond("POST", "/api/v1/namespaces/default/events", Reply(status=201, body=b"{}"))
    # The route registered last answers first: one throttled answer (API priority and fairness), then 201.
    apiserver.respond("POST", "/api/v1/namespaces/default/pods/inference-b/eviction",
                      Reply(status=201, body=(CAPTURES / "eviction-201.json").read_bytes()))
    apiserver.respond("POST", "/api/v1/namespaces/default/pods/inference-b/eviction",
                      Reply(status=429, body=status_body(429, "TooManyRequests",
                                                         "Too many requests, please try again later."), times=1))
    listed = {p.name: p for p in kube.list("pods").items}
    config = load_settings({}, migration_enabled=True, migration_dry_run=False)
    clock = [NOW]
    controller = MigrationController(kube, config, clock=lambda: clock[0], metrics=lambda d, r: None)
    pod = opted_in(listed["inference-b"], "inference-b")

    [first] = controller.run_cycle([pod], {"worker-6": 0.93}, {}, {"inference-b": flattened()})
    clock[0] += 30.0
    [second] = controller.run_cycle([pod], {"worker-6": 0.93}, {}, {"inference-b": flattened()})

    assert (first.decision, first.reason) == ("blocked", "too_many_requests")
    assert second.decision == "evicted"
    assert len(apiserver.requests_to("POST", "/api/v1/namespaces/default/pods/inference-b/eviction")) == 2
