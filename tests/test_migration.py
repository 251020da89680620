"""Speculative migration (predictor/migration.py) against the in-memory API server and the captured pods."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from guardgrid import keys
from guardgrid.config import Settings, load_settings
from guardgrid.kubeapi.base import EvictionResult, KubeAPIError
from guardgrid.kubeapi.memory import InMemoryKubeAPI
from guardgrid.records import PodRecord, parse_time
from predictor.migration import EVENT_REASONS, MigrationController, MigrationDecision
from predictor.progress import ProgressSeries

FIXTURES = Path(__file__).parent / "fixtures"
CLUSTER = FIXTURES / "kube-scheduler" / "cluster.json"
RESNET_REVIEW = FIXTURES / "admission" / "pod-create-training-with-priority.json"
CAPTURED_AT = parse_time("2026-11-23T12:09:25Z")
assert CAPTURED_AT is not None
NAMESPACE = "ml-team"
CONTENDED = "worker-3"


class Clock:
    """An injected clock the controller and the in-memory API share."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Decisions:
    """The metrics hook: every (decision, reason) the controller counted, in order."""

    def __init__(self) -> None:
        self.counted: list[tuple[str, str]] = []

    def __call__(self, decision: str, reason: str) -> None:
        self.counted.append((decision, reason))


def training_pod(name: str, job: str, *, drop: tuple[str, ...] = (),
                 extra: dict[str, str] | None = None) -> dict[str, Any]:
    """The captured resnet50 pod (migratable, with a checkpoint image), renamed into job `job`."""
    pod = copy.deepcopy(json.loads(RESNET_REVIEW.read_text())["request"]["object"])
    meta = pod["metadata"]
    meta.pop("generateName", None)
    meta.pop("managedFields", None)
    meta["name"] = name
    meta["labels"][keys.JOB] = job
    for key in drop:
        meta["annotations"].pop(key, None)
    meta["annotations"].update(extra or {})
    return pod


def flattened(now: float) -> ProgressSeries:
    """Accuracy that climbed early and has been flat for the last hours: growth far below 0.1."""
    times = np.arange(now - 3 * 3600.0, now + 1.0, 60.0)
    return ProgressSeries(times, 0.9 - 0.8 * np.exp(-(times - times[0]) / 900.0))


def slowing(now: float, tau: float) -> ProgressSeries:
    """Accuracy still creeping up; a larger tau means a higher (but, up to ~2500 s, still slow) growth."""
    times = np.arange(now - 3 * 3600.0, now + 1.0, 60.0)
    return ProgressSeries(times, 0.9 - 0.8 * np.exp(-(times - times[0]) / tau))


def steady(now: float) -> ProgressSeries:
    """Accuracy rising at the same pace all along: growth 1."""
    times = np.arange(now - 3 * 3600.0, now + 1.0, 60.0)
    return ProgressSeries(times, 0.1 + 0.8 * (times - times[0]) / (times[-1] - times[0]))


def migration_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {"migration_enabled": True, "migration_dry_run": False}
    values.update(overrides)
    return load_settings({}, **values)


class World:
    """The captured cluster plus training pods, a shared clock, and a controller."""

    def __init__(self, config: Settings, api_factory: Callable[..., InMemoryKubeAPI] = InMemoryKubeAPI) -> None:
        self.clock = Clock(CAPTURED_AT)
        self.api = api_factory(json.loads(CLUSTER.read_text())["items"], clock=self.clock)
        self.metrics = Decisions()
        self.config = config
        self.controller = MigrationController(self.api, config, clock=self.clock, metrics=self.metrics)
        self.load = {f"worker-{i}": 0.5 for i in range(1, 7)}
        self.load[CONTENDED] = 0.95
        self.risk: dict[str, float] = {}

    def run(self, name: str, job: str, node: str = CONTENDED, **kwargs: Any) -> None:
        self.api.create_pod(training_pod(name, job, **kwargs))
        self.api.bind_pod(NAMESPACE, name, node)

    def pods(self) -> list[PodRecord]:
        return self.api.list("pods").items

    def cycle(self, progress: dict[str, ProgressSeries]) -> list[MigrationDecision]:
        return self.controller.run_cycle(self.pods(), self.load, self.risk, progress)

    def events_for(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.api.events if e["involvedObject"]["name"] == name]


@pytest.fixture
def world() -> World:
    return World(migration_settings())


def test_a_slow_resumable_job_on_a_contended_node_is_evicted_with_an_event_and_a_metric(world: World) -> None:
    world.run("resnet50-train-a1", "resnet50-train")
    world.clock.advance(2 * 3600)
    decisions = world.cycle({"resnet50-train": flattened(world.clock.now)})
    assert [(d.pod, d.decision, d.reason) for d in decisions] == \
        [(f"{NAMESPACE}/resnet50-train-a1", "evicted", "memory_load")]
    assert decisions[0].growth < world.config.migration_alpha
    assert world.api.evictions == [f"{NAMESPACE}/resnet50-train-a1"]
    assert world.api.get_raw("pods", f"{NAMESPACE}/resnet50-train-a1") is None
    # The standby slot on the same contended node is never a candidate.
    assert world.api.get_raw("pods", f"{NAMESPACE}/standby-resnet50-train-0") is not None
    [event] = world.events_for("resnet50-train-a1")
    assert event["reason"] == EVENT_REASONS["evicted"] == "GuardGridMigrating"
    assert event["type"] == "Normal"
    assert f"{decisions[0].growth:.3f}" in event["message"] and "registry.example.com/ckpt/resnet50" in event["message"]
    assert world.metrics.counted == [("evicted", "memory_load")]


def test_high_oom_risk_alone_makes_a_node_contended(world: World) -> None:
    world.run("resnet50-train-a1", "resnet50-train")
    world.clock.advance(2 * 3600)
    world.load[CONTENDED] = 0.3
    world.risk[CONTENDED] = 0.5
    [decision] = world.cycle({"resnet50-train": flattened(world.clock.now)})
    assert (decision.decision, decision.reason) == ("evicted", "oom_risk")


def test_a_fast_growing_job_is_never_evicted_even_on_a_contended_node(world: World) -> None:
    world.run("resnet50-train-a1", "resnet50-train")
    world.clock.advance(2 * 3600)
    for _ in range(5):
        assert world.cycle({"resnet50-train": steady(world.clock.now)}) == []
        world.clock.advance(600)
    assert world.api.evictions == [] and world.api.events == [] and world.metrics.counted == []


def test_with_a_falling_loss_metric_the_flattened_loss_is_evicted_and_the_falling_one_kept() -> None:
    world = World(migration_settings(progress_direction="falling", migration_max_per_node_per_hour=5))
    world.run("job-flat-0", "job-flat")
    world.run("job-learning-0", "job-learning")
    world.clock.advance(2 * 3600)
    now = world.clock.now
    loss_flat = ProgressSeries(flattened(now).times, 3.0 - 2.0 * flattened(now).values)
    loss_learning = ProgressSeries(steady(now).times, 3.0 - 2.0 * steady(now).values)
    [decision] = world.cycle({"job-flat": loss_flat, "job-learning": loss_learning})
    assert (decision.pod, decision.decision) == (f"{NAMESPACE}/job-flat-0", "evicted")
    world.clock.advance(600)
    later = world.clock.now
    assert world.cycle({"job-learning": ProgressSeries(steady(later).times, 3.0 - 2.0 * steady(later).values)}) == []
    assert world.api.evictions == [f"{NAMESPACE}/job-flat-0"]


def test_a_job_on_an_uncontended_node_is_left_alone(world: World) -> None:
    world.run("resnet50-train-a1", "resnet50-train", node="worker-1")
    world.clock.advance(2 * 3600)
    assert world.cycle({"resnet50-train": flattened(world.clock.now)}) == []
    assert world.api.evictions == []


def test_a_job_without_progress_data_is_never_evicted(world: World) -> None:
    world.run("resnet50-train-a1", "resnet50-train")
    world.clock.advance(2 * 3600)
    assert world.cycle({}) == []
    stale = flattened(world.clock.now - 3 * 3600)  # the job stopped exporting hours ago
    assert world.cycle({"resnet50-train": stale}) == []
    assert world.api.evictions == []


def test_a_job_without_a_checkpoint_is_never_evicted(world: World) -> None:
    world.run("resnet50-train-a1", "resnet50-train", drop=(keys.CHECKPOINT_IMAGE,))
    world.clock.advance(2 * 3600)
    [decision] = world.cycle({"resnet50-train": flattened(world.clock.now)})
    assert (decision.decision, decision.reason) == ("skipped", "no_checkpoint")
    assert world.api.evictions == []
    [event] = world.events_for("resnet50-train-a1")
    assert event["type"] == "Warning" and keys.CHECKPOINT_IMAGE in event["message"]


def test_a_checkpoint_path_without_a_checkpoint_image_cannot_resume_so_is_not_evicted(world: World) -> None:
    world.run("resnet50-train-a1", "resnet50-train", drop=(keys.CHECKPOINT_IMAGE,),
              extra={keys.CHECKPOINT_IMAGE_PATH: "/checkpoints/resnet50"})
    world.clock.advance(2 * 3600)
    [decision] = world.cycle({"resnet50-train": flattened(world.clock.now)})
    assert (decision.decision, decision.reason) == ("skipped", "no_checkpoint")
    assert "has no effect without it" in decision.message
    assert world.api.evictions == []


def test_a_checkpoint_image_with_a_path_is_evicted_and_the_event_names_both(world: World) -> None:
    world.run("resnet50-train-a1", "resnet50-train", extra={keys.CHECKPOINT_IMAGE_PATH: "/ckpt/resnet50"})
    world.clock.advance(2 * 3600)
    [decision] = world.cycle({"resnet50-train": flattened(world.clock.now)})
    assert decision.decision == "evicted"
    assert "registry.example.com/ckpt/resnet50:epoch-41 (path /ckpt/resnet50)" in decision.message


def test_a_pod_that_did_not_opt_in_is_never_evicted_nor_reported() -> None:
    world = World(migration_settings())
    world.load["worker-4"] = 0.99  # the captured bert pod runs there, with no guardgrid.io/migratable
    world.clock.advance(2 * 3600)
    assert world.cycle({"bert-finetune": flattened(world.clock.now)}) == []
    world.run("resnet50-train-a1", "resnet50-train", extra={keys.MIGRATABLE: "false"})
    world.clock.advance(2 * 3600)
    assert world.cycle({"resnet50-train": flattened(world.clock.now)}) == []
    assert world.api.evictions == [] and world.api.events == []


def test_a_pdb_blocked_eviction_is_retried_next_cycle_and_succeeds_once_the_budget_allows(world: World) -> None:
    pdb = {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
           "metadata": {"name": "resnet50-pdb", "namespace": NAMESPACE},
           "spec": {"minAvailable": 1, "selector": {"matchLabels": {keys.JOB: "resnet50-train"}}}}
    world.api.upsert_raw(pdb)
    world.run("resnet50-train-a1", "resnet50-train")
    world.clock.advance(2 * 3600)

    first = world.cycle({"resnet50-train": flattened(world.clock.now)})
    assert [(d.decision, d.reason) for d in first] == [("blocked", "disruption_budget")]
    assert "resnet50-pdb" in first[0].message
    world.clock.advance(30)
    second = world.cycle({"resnet50-train": flattened(world.clock.now)})
    assert [(d.decision, d.reason) for d in second] == [("blocked", "disruption_budget")]
    assert world.api.evictions == []
    # Retried each cycle and counted each time, announced once (no event storm).
    blocked_events = world.events_for("resnet50-train-a1")
    assert [e["reason"] for e in blocked_events] == ["GuardGridMigrationBlocked"]
    assert blocked_events[0]["type"] == "Warning"

    world.api.upsert_raw({**pdb, "spec": {**pdb["spec"], "minAvailable": 0}})
    world.clock.advance(30)
    third = world.cycle({"resnet50-train": flattened(world.clock.now)})
    assert [d.decision for d in third] == ["evicted"]
    assert world.api.evictions == [f"{NAMESPACE}/resnet50-train-a1"]
    assert world.metrics.counted == [("blocked", "disruption_budget")] * 2 + [("evicted", "memory_load")]


def test_the_cool_down_keeps_a_migrated_job_in_place_until_it_expires() -> None:
    world = World(migration_settings(migration_max_per_node_per_hour=100, migration_max_per_hour=100,
                                     migration_cooldown_seconds=7200.0))
    world.run("resnet50-train-a1", "resnet50-train")
    world.clock.advance(2 * 3600)
    assert [d.decision for d in world.cycle({"resnet50-train": flattened(world.clock.now)})] == ["evicted"]

    # The Job controller recreates the pod; the scheduler happens to put it on the same contended node.
    world.run("resnet50-train-b2", "resnet50-train")
    world.clock.advance(world.config.migration_window_seconds + 60)  # old enough, but within the cool-down
    [held] = world.cycle({"resnet50-train": flattened(world.clock.now)})
    assert (held.pod, held.decision, held.reason) == (f"{NAMESPACE}/resnet50-train-b2", "skipped", "cooldown")

    world.clock.advance(7200 - world.config.migration_window_seconds)  # the cool-down has now expired
    [moved] = world.cycle({"resnet50-train": flattened(world.clock.now)})
    assert (moved.pod, moved.decision) == (f"{NAMESPACE}/resnet50-train-b2", "evicted")
    assert world.api.evictions == [f"{NAMESPACE}/resnet50-train-a1", f"{NAMESPACE}/resnet50-train-b2"]


def test_a_pod_younger_than_one_growth_window_is_not_moved_even_by_a_freshly_restarted_controller(world: World) -> None:
    world.run("resnet50-train-a1", "resnet50-train")
    world.clock.advance(120)
    restarted = MigrationController(world.api, world.config, clock=world.clock, metrics=world.metrics)
    [decision] = restarted.run_cycle(world.pods(), world.load, world.risk,
                                     {"resnet50-train": flattened(world.clock.now)})
    assert (decision.decision, decision.reason) == ("skipped", "pod_too_young")
    assert world.api.evictions == []


def test_the_per_node_rate_limit_holds_over_a_sliding_hour_and_the_slowest_goes_first() -> None:
    world = World(migration_settings(migration_max_per_node_per_hour=1, migration_max_per_hour=100,
                                     migration_cooldown_seconds=60.0))
    world.run("job-a-0", "job-a")
    world.run("job-b-0", "job-b")
    world.clock.advance(2 * 3600)
    progress = {"job-a": slowing(world.clock.now, 2000.0), "job-b": flattened(world.clock.now)}

    first = world.cycle(progress)
    assert [(d.pod, d.decision) for d in first] == [(f"{NAMESPACE}/job-b-0", "evicted")]  # b is the slower
    world.clock.advance(300)
    progress = {"job-a": slowing(world.clock.now, 2000.0)}
    [limited] = world.cycle(progress)
    assert (limited.pod, limited.decision, limited.reason) == (f"{NAMESPACE}/job-a-0", "skipped", "node_rate_limit")
    world.clock.advance(3600 - 300)  # exactly one hour after the first eviction: it slides out of the window
    [moved] = world.cycle({"job-a": slowing(world.clock.now, 2000.0)})
    assert (moved.pod, moved.decision) == (f"{NAMESPACE}/job-a-0", "evicted")


def _two_slow_jobs_on_two_contended_nodes(world: World) -> list[MigrationDecision]:
    """job-a slowing on worker-1 (loaded to 0.97), job-b flattened on the contended node (0.95): one cycle."""
    world.load["worker-1"] = 0.97
    world.run("job-a-0", "job-a", node="worker-1")
    world.run("job-b-0", "job-b")
    world.clock.advance(2 * 3600)
    return world.cycle({"job-a": slowing(world.clock.now, 2000.0), "job-b": flattened(world.clock.now)})


def test_the_cluster_wide_rate_limit_holds_across_nodes() -> None:
    world = World(migration_settings(migration_max_per_node_per_hour=10, migration_max_per_hour=1))
    decisions = _two_slow_jobs_on_two_contended_nodes(world)
    assert [(d.pod, d.decision, d.reason) for d in decisions] == [
        (f"{NAMESPACE}/job-b-0", "evicted", "memory_load"),
        (f"{NAMESPACE}/job-a-0", "skipped", "cluster_rate_limit"),
    ]
    assert world.api.evictions == [f"{NAMESPACE}/job-b-0"]


def test_dry_run_evicts_nothing_but_records_events_metrics_and_the_limits() -> None:
    world = World(migration_settings(migration_dry_run=True))
    world.run("resnet50-train-a1", "resnet50-train")
    world.clock.advance(2 * 3600)
    [decision] = world.cycle({"resnet50-train": flattened(world.clock.now)})
    assert (decision.decision, decision.reason) == ("dry_run", "memory_load")
    assert world.api.evictions == []
    assert world.api.get_raw("pods", f"{NAMESPACE}/resnet50-train-a1") is not None
    [event] = world.events_for("resnet50-train-a1")
    assert event["reason"] == "GuardGridMigrationDryRun" and "would evict" in event["message"]
    assert world.metrics.counted == [("dry_run", "memory_load")]
    # A dry run shows what a real run would do next cycle too: the job is now in its cool-down.
    world.clock.advance(60)
    [again] = world.cycle({"resnet50-train": flattened(world.clock.now)})
    assert (again.decision, again.reason) == ("skipped", "cooldown")


def test_disabled_migration_decides_nothing() -> None:
    world = World(migration_settings(migration_enabled=False))
    world.run("resnet50-train-a1", "resnet50-train")
    world.clock.advance(2 * 3600)
    assert world.cycle({"resnet50-train": flattened(world.clock.now)}) == []
    assert world.api.evictions == [] and world.api.events == []


def test_a_pod_that_vanished_since_the_listing_is_skipped_as_not_found(world: World) -> None:
    world.run("resnet50-train-a1", "resnet50-train")
    world.clock.advance(2 * 3600)
    listed = world.pods()
    assert world.api.delete_pod(NAMESPACE, "resnet50-train-a1")
    [decision] = world.controller.run_cycle(listed, world.load, world.risk,
                                            {"resnet50-train": flattened(world.clock.now)})
    assert (decision.decision, decision.reason) == ("skipped", "not_found")
    assert world.api.evictions == []


class RefusingAPI(InMemoryKubeAPI):
    """An API server whose RBAC forbids evicting one pod and whose event endpoint is down."""

    def evict_pod(self, namespace: str, name: str) -> EvictionResult:
        if name == "job-b-0":
            raise KubeAPIError('pods "job-b-0" is forbidden: cannot create resource "pods/eviction"', 403, "Forbidden")
        return super().evict_pod(namespace, name)

    def create_event(self, pod: PodRecord, reason: str, message: str, event_type: str = "Normal") -> None:
        raise KubeAPIError("events is unavailable", 503, "ServiceUnavailable")


def test_an_api_refusal_becomes_a_decision_and_the_cycle_goes_on() -> None:
    world = World(migration_settings(migration_max_per_node_per_hour=10), api_factory=RefusingAPI)
    decisions = _two_slow_jobs_on_two_contended_nodes(world)
    assert [(d.pod, d.decision, d.reason) for d in decisions] == [
        (f"{NAMESPACE}/job-b-0", "skipped", "api_error"),
        (f"{NAMESPACE}/job-a-0", "evicted", "memory_load"),
    ]
    assert "HTTP 403" in decisions[0].message
    assert world.api.evictions == [f"{NAMESPACE}/job-a-0"]


def test_the_default_metric_counts_decisions_by_decision_and_reason() -> None:
    world = World(migration_settings(migration_dry_run=True))
    controller = MigrationController(world.api, world.config, clock=world.clock)  # the real Counter
    world.run("resnet50-train-a1", "resnet50-train")
    world.clock.advance(2 * 3600)
    labels = {"decision": "dry_run", "reason": "memory_load"}
    before = REGISTRY.get_sample_value("guardgrid_migrations_total", labels) or 0.0
    controller.run_cycle(world.pods(), world.load, world.risk, {"resnet50-train": flattened(world.clock.now)})
    assert REGISTRY.get_sample_value("guardgrid_migrations_total", labels) == before + 1.0
