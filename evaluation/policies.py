"""The four policies the evaluation compares, each driving the simulated cluster.

(a) `default`: kube-scheduler as shipped (resource fit by requests, LeastAllocated spreading, ImageLocality),
    no checkpoints: a failed job starts over, cold.
(b) `checkpoint`: the same scheduler; jobs checkpoint every `fixed_checkpoint_interval_seconds` and resume
    from the last checkpoint, cold.
(c) `guardgrid`: GuardGrid's real code end to end.
    - Admission as GuardGrid's webhook shapes the pod: PriorityClass guardgrid-training (priority 1000),
      labels guardgrid.io/job and guardgrid.io/managed, the dataset staged from its image, and the
      checkpoint interval from the predictor's per-job advice (the job's own hourly default when there is
      none yet, as a pod admitted without the env var would keep).
    - Scheduling: kube-scheduler's in-tree filter, then the real extender service (`ExtenderService.filter`,
      `.prioritize`, `.preempt`: the very object the HTTP app serves, fed the same `ExtenderArgs`), scores
      combined with the configured extender weight as kube-scheduler does (x weight x 100/10), and
      preemption of standby slots as kube-scheduler's DefaultPreemption plus the extender's preempt verb.
    - Every `predictor_cycle_seconds`, the real `predictor.cycle.PredictorCycle` runs over the same
      ClusterState with the simulated monitoring history: forecast, fault rates, standby plan with reactive
      mode, reconcile of standby pods (through the simulated API), checkpoint advice; its snapshot is what
      the extender and the admission read until the next cycle.
(d) `guardgrid+migration`: (c) with speculative migration on (`GUARDGRID_MIGRATION_ENABLED`, not dry-run):
    the predictor's `MigrationController` evicts slow-growing, opted-in jobs from contended nodes.

The GuardGrid policies take their collaborators as factories (extender, predictor cycle, migration
controller), so the tests can pass spies and see that the real objects did the work.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import yaml

from evaluation.sim.adapters import SimulationKubeAPI, SimulationSource
from evaluation.sim.cluster import EPOCH
from evaluation.sim.engine import JobRun, Placement, PodMeta, Simulation, dataset_image_of
from evaluation.sim.params import SimParams
from evaluation.sim.scheduler import MAX_NODE_SCORE, KubeScheduler
from extender.service import ExtenderService
from extender.wire import ExtenderArgs, PreemptionArgs, Victims
from guardgrid import keys
from guardgrid.config import Settings, load_settings
from guardgrid.placement import MAX_SCORE
from guardgrid.snapshot import Snapshot
from predictor.cycle import CycleReport, PredictorCycle
from predictor.migration import MigrationController

__all__ = ["Policy", "DefaultScheduler", "CheckpointRestart", "GuardGrid", "POLICY_NAMES", "make_policy",
           "extender_weight_from_manifest", "guardgrid_settings"]

REPO = Path(__file__).resolve().parent.parent
SCHEDULER_CONFIG = REPO / "manifests" / "scheduler" / "scheduler-config.yaml"
POLICY_NAMES = ("default", "checkpoint", "guardgrid", "guardgrid+migration")


def extender_weight_from_manifest(path: Path = SCHEDULER_CONFIG) -> float | None:
    """The extender weight GuardGrid ships in its KubeSchedulerConfiguration (None if unreadable)."""
    try:
        config = yaml.safe_load(path.read_text())
        return float(config["extenders"][0]["weight"])
    except (OSError, yaml.YAMLError, KeyError, IndexError, TypeError, ValueError):
        return None


def guardgrid_settings(migrate: bool, params: SimParams | None = None, **overrides: Any) -> Settings:
    """GuardGrid's defaults (no GUARDGRID_* from the environment: runs must be reproducible), with one
    adaptation to the simulation's coarser predictor cycle: the extender counts a snapshot as fresh for two
    simulated cycles. In production the predictor cycles every 30 s, well inside the default 120 s, so the
    extender always judges on a forecast; with a 300 s cycle the default would make it fall back to requests
    for most of every cycle, which no real deployment does."""
    cycle = (params or SimParams()).predictor_cycle_seconds
    values: dict[str, Any] = {"migration_enabled": migrate, "migration_dry_run": False,
                              "snapshot_max_age_seconds": max(120.0, 2 * cycle)}
    values.update(overrides)
    return load_settings({}, **values)


class Policy:
    """Default kube-scheduler behaviour; subclasses change admission, checkpoints and placement."""

    name = "default"
    label = "(a) default kube-scheduler, no checkpoints, cold restart"
    cycle_seconds: float | None = None

    def __init__(self, params: SimParams | None = None) -> None:
        self.params = params or SimParams()
        self.sim: Simulation | None = None
        self.kube: KubeScheduler | None = None

    def attach(self, sim: Simulation) -> None:
        self.sim = sim
        self.kube = KubeScheduler(sim.cluster, sim.rng)

    def pod_meta(self, job: JobRun) -> PodMeta:
        return PodMeta()

    def checkpoint_interval(self, job: JobRun) -> float | None:
        return None

    def cycle(self) -> None:
        """Nothing runs periodically without GuardGrid."""

    def _images(self, job: JobRun) -> list[tuple[str, float]]:
        return [(job.spec.image, job.spec.image_bytes)]

    def place(self, job: JobRun) -> Placement | None:
        assert self.sim is not None and self.kube is not None
        spec = job.spec
        feasible = np.flatnonzero(self.kube.feasible(spec.request_bytes, spec.gpu_milli))
        if not len(feasible):
            return None
        scores = self.kube.plugin_scores(spec.request_bytes, self._images(job), self.sim.now)[feasible]
        return Placement(self.kube.pick(feasible, scores))


class DefaultScheduler(Policy):
    pass


class CheckpointRestart(Policy):
    name = "checkpoint"
    label = "(b) checkpoint-restart, default scheduler, no standby"

    def checkpoint_interval(self, job: JobRun) -> float | None:
        return self.params.fixed_checkpoint_interval_seconds


class GuardGrid(Policy):
    """GuardGrid's extender, predictor and admission, run as the services run them (see the module doc)."""

    name = "guardgrid"
    label = "(c) GuardGrid: extender placement, standby slots, reactive mode, checkpoint advice"

    def __init__(self, params: SimParams | None = None, settings: Settings | None = None, *, migrate: bool = False,
                 extender_factory: Callable[..., ExtenderService] = ExtenderService,
                 cycle_factory: Callable[..., PredictorCycle] = PredictorCycle,
                 migration_factory: Callable[..., MigrationController] = MigrationController) -> None:
        super().__init__(params)
        if migrate:
            self.name = "guardgrid+migration"
            self.label = "(d) GuardGrid + speculative migration"
        self.settings = settings or guardgrid_settings(migrate, self.params)
        self.cycle_seconds = self.params.predictor_cycle_seconds
        self.weight = extender_weight_from_manifest() or self.params.extender_weight
        self._extender_factory = extender_factory
        self._cycle_factory = cycle_factory
        self._migration_factory = migration_factory
        self.snapshot: Snapshot | None = None
        self.last_report: CycleReport | None = None
        self.api: SimulationKubeAPI | None = None
        self.source: SimulationSource | None = None

    def attach(self, sim: Simulation) -> None:
        super().attach(sim)
        clock: Callable[[], float] = lambda: EPOCH + sim.now  # noqa: E731
        self.api = SimulationKubeAPI(sim)
        self.source = SimulationSource(sim)
        migration = self._migration_factory(self.api, self.settings, clock, metrics=self._count_migration)
        self.predictor = self._cycle_factory(self.settings, sim.cluster.state, self.source, self.api,
                                             clock=clock, migration=migration)
        self.extender = self._extender_factory(sim.cluster.state, self.settings, snapshot=lambda: self.snapshot,
                                               clock=clock)

    def _count_migration(self, decision: str, reason: str) -> None:
        assert self.sim is not None
        self.sim.count_call(f"migration.{decision}")

    # --- admission (what the webhook sets) ------------------------------------------------------------
    def pod_meta(self, job: JobRun) -> PodMeta:
        spec = job.spec
        annotations = {keys.CHECKPOINT_IMAGE: f"registry.example.com/ckpt/{spec.job_id}:latest"}
        if spec.migratable:
            annotations[keys.MIGRATABLE] = "true"
        if spec.dataset_image:
            annotations[keys.DATASET_IMAGE] = dataset_image_of(spec)
        return PodMeta(priority=keys.PRIORITY_TRAINING, priority_class=keys.PRIORITY_CLASS_TRAINING,
                       labels={keys.JOB: spec.job_id, keys.MANAGED: "true"}, annotations=annotations,
                       dataset_from_image=True)

    def checkpoint_interval(self, job: JobRun) -> float | None:
        advice = self.snapshot.jobs.get(job.name) if self.snapshot is not None else None
        if advice is None:
            return self.params.fixed_checkpoint_interval_seconds  # admitted without advice: the job's default
        assert self.sim is not None
        self.sim.count_call("advice.used")
        return advice.checkpoint_interval_seconds

    # --- the predictor ------------------------------------------------------------------------------
    def cycle(self) -> None:
        assert self.sim is not None
        report = self.predictor.run()
        self.sim.count_call("predictor.cycle")
        if report.snapshot.mode == "reactive":
            self.sim.count_call("predictor.reactive")
        if report.plan is not None:
            self.sim.count_call("predictor.plan")
        self.last_report = report
        self.snapshot = report.snapshot

    # --- scheduling ---------------------------------------------------------------------------------
    def _images(self, job: JobRun) -> list[tuple[str, float]]:
        images = [(job.spec.image, job.spec.image_bytes)]
        if job.spec.dataset_image:
            images.append((dataset_image_of(job.spec), job.spec.dataset_bytes))
        return images

    def place(self, job: JobRun) -> Placement | None:
        sim, kube = self.sim, self.kube
        assert sim is not None and kube is not None and job.record is not None
        spec, pod, cluster = job.spec, job.record, sim.cluster
        names = [node.name for node in cluster.nodes]
        feasible = np.flatnonzero(kube.feasible(spec.request_bytes, spec.gpu_milli))
        if len(feasible):
            answer = orjson.loads(self.extender.filter(ExtenderArgs(pod, [names[i] for i in feasible], None, None)))
            sim.count_call("extender.filter")
            passed = answer.get("NodeNames") or []
            if passed:
                rows = np.array([cluster.index[name] for name in passed], dtype=np.int64)
                if len(rows) == 1:  # kube-scheduler does not call prioritize for a single node
                    return Placement(int(rows[0]))
                ranked = orjson.loads(self.extender.prioritize(ExtenderArgs(pod, passed, None, None)))
                sim.count_call("extender.prioritize")
                extender = np.array([entry["Score"] for entry in ranked], dtype=np.float64)
                total = kube.plugin_scores(spec.request_bytes, self._images(job), sim.now)[rows] + \
                    extender * self.weight * (MAX_NODE_SCORE / MAX_SCORE)
                return Placement(kube.pick(rows, total))
        return self._preempt(job)

    def _preempt(self, job: JobRun) -> Placement | None:
        """kube-scheduler's PostFilter: DefaultPreemption's candidates, filtered by the extender's preempt verb;
        the victims are evicted, then the nominated node is filtered again before the bind."""
        sim, kube = self.sim, self.kube
        assert sim is not None and kube is not None and job.record is not None
        spec, pod, cluster = job.spec, job.record, sim.cluster
        if not cluster.standby_count.any():
            return None  # no standby slots anywhere: GuardGrid's preempt verb would drop every candidate
        candidates = kube.preemption_candidates(spec.request_bytes, spec.gpu_milli, pod.priority)
        if not candidates:
            return None
        args = PreemptionArgs(pod, [Victims(cluster.nodes[c.node].name, [v.uid for v in c.victims], None, 0)
                                    for c in candidates])
        kept = orjson.loads(self.extender.preempt(args)).get("NodeNameToMetaVictims") or {}
        sim.count_call("extender.preempt")
        allowed = [c for c in candidates if cluster.nodes[c.node].name in kept]
        if not allowed:
            return None
        chosen = KubeScheduler.select_candidate(allowed)
        sim.preempt_slots(job, [v.uid for v in chosen.victims])
        node = cluster.nodes[chosen.node].name
        if not kube.feasible(spec.request_bytes, spec.gpu_milli)[chosen.node]:
            return None
        answer = orjson.loads(self.extender.filter(ExtenderArgs(pod, [node], None, None)))
        sim.count_call("extender.filter")
        return Placement(chosen.node) if answer.get("NodeNames") else None


def make_policy(name: str, params: SimParams | None = None) -> Policy:
    if name == "default":
        return DefaultScheduler(params)
    if name == "checkpoint":
        return CheckpointRestart(params)
    if name == "guardgrid":
        return GuardGrid(params)
    if name == "guardgrid+migration":
        return GuardGrid(params, migrate=True)
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(POLICY_NAMES)}")
