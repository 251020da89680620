"""The simulation's invariants and mechanisms, on small workloads (seconds, not minutes)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cache
from typing import Any

import numpy as np
import pytest

from evaluation.policies import POLICY_NAMES, CheckpointRestart, DefaultScheduler, GuardGrid, guardgrid_settings, \
    make_policy
from evaluation.sim.cluster import EPOCH, InvariantError
from evaluation.sim.engine import Simulation
from evaluation.sim.model import contention_speed, failure_probability, memory_level
from evaluation.sim.params import GiB, SimParams
from evaluation.sim.results import STAGES, SimResult, summarise
from evaluation.workloads import BuiltinParams, JobSpec, NodeSpec, ProgressCurve, Workload, builtin_workload
from extender.service import ExtenderService
from guardgrid.standby import Plan
from predictor.cycle import PredictorCycle
from predictor.migration import MigrationController

# A small, tight cluster: users ask for 60-90% of what their jobs use, nodes fail often, so OOM kills and
# node failures both happen within a few simulated hours.
STRESS = BuiltinParams(nodes=4, jobs=36, arrival_hours=4.0, duration_median_hours=1.5, duration_max_hours=3.0,
                       request_ratio=(0.55, 0.85))
STRESS_PARAMS = SimParams(node_failure_rate_per_hour=0.2, check_invariants=True)
HISTORY = 120  # two hours of monitoring history instead of six: the predictor's forecast is the costly part


@cache
def stressed_run(policy: str, seed: int = 3) -> tuple[Simulation, SimResult]:
    sim = Simulation(builtin_workload(STRESS, seed=seed), make_policy(policy, STRESS_PARAMS), STRESS_PARAMS, seed=seed,
                     history_samples=HISTORY)
    return sim, sim.run()


def job(name: str, request_gib: float, peak_gib: float, *, submit: float = 0.0, hours: float = 2.0, gpus: int = 0,
        noise: float = 0.0, ramp: float = 0.0, curve: ProgressCurve | None = None, migratable: bool = True) -> JobSpec:
    return JobSpec(job_id=name, submit_time=submit, duration=hours * 3600.0, peak_bytes=peak_gib * GiB,
                   request_bytes=request_gib * GiB, ramp_epochs=ramp, epochs=10, noise=noise, gpu_milli=gpus * 1000,
                   image=f"registry.example.com/{name}:1", image_bytes=4 * GiB, dataset_bytes=2 * GiB,
                   dataset_image=True, checkpoint_bytes=1 * GiB,
                   progress=curve or ProgressCurve("linear"), migratable=migratable)


def node(name: str, memory_gib: float, gpus: int = 8) -> NodeSpec:
    return NodeSpec(name, memory_gib * GiB, gpus * 1000)


# --- invariants ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_memory_is_conserved_after_every_event_for_every_policy(policy: str) -> None:
    # check_invariants makes the engine verify, after every single event, that each node's pods add up to its
    # accounted requests and usage, in the simulation and in GuardGrid's ClusterState alike, and that no node
    # is over-committed by requests; a violation raises InvariantError and fails this test.
    sim, result = stressed_run(policy)
    assert result.oom_kills > 0 and result.node_failures > 0  # the kill and failure paths were exercised
    assert all(rec.outcome in ("recovered", "failed_again", "unfinished") for rec in result.recoveries)
    assert np.all(sim.cluster.requested <= sim.cluster.capacity + 1024)


def test_usage_above_capacity_exists_only_at_the_instant_of_an_oom_kill() -> None:
    sim, _ = stressed_run("default")
    # After the run (and after every tick, via the relieve step) no node that is up uses more than it has.
    assert np.all(sim.node_usage <= sim.cluster.capacity + 1024)
    history = sim.history(sim.mem_history)
    capacity = sim.cluster.capacity[:, None]
    assert np.all(np.isnan(history) | (history <= capacity + 1024))


def test_a_broken_accounting_is_caught_by_the_invariant_check() -> None:
    sim = Simulation(Workload("tiny", (node("n0", 100),), (job("a", 10, 10),)), DefaultScheduler(), SimParams())
    sim.run()
    sim.cluster.requested[0] += 5 * GiB  # what a bookkeeping bug would do
    with pytest.raises(InvariantError, match="n0"):
        sim.check_invariants()


@pytest.mark.parametrize("policy", POLICY_NAMES)
def test_every_failed_job_either_recovers_or_is_reported(policy: str) -> None:
    _, result = stressed_run(policy)
    summary = summarise(result)
    failures = [r for r in result.recoveries if r.cause != "migration"]
    assert summary.failures == len(failures) > 0
    assert summary.recovered + summary.failed_again + summary.unrecovered == summary.failures
    assert sum(1 for r in failures if r.cause == "oom") == result.oom_kills
    for rec in failures:
        if rec.outcome == "recovered":
            assert rec.resumed_at >= rec.bound_at >= rec.pending_at >= rec.failed_at
            assert sum(rec.stages[s] for s in STAGES) == pytest.approx(rec.recovery_seconds, abs=1e-6)
            assert all(rec.stages[s] >= 0 for s in STAGES)
        else:
            assert math.isnan(rec.resumed_at)
    finished = sum(1 for j in result.jobs if not math.isnan(j.finish))
    assert finished + summary.unfinished_jobs == len(result.jobs)


def test_a_job_failing_again_before_it_resumed_keeps_both_failures_on_record() -> None:
    again = [(policy, rec) for policy in POLICY_NAMES for rec in stressed_run(policy)[1].recoveries
             if rec.outcome == "failed_again"]
    assert again  # the stress runs include failures during recovery
    for policy, rec in again:
        later = [r for r in stressed_run(policy)[1].recoveries if r.job == rec.job and r.failed_at >= rec.failed_at
                 and r is not rec]
        assert later, f"{rec.job} failed again under {policy} but its next failure is not recorded"


def test_a_run_cut_short_reports_its_open_recoveries_and_unfinished_jobs() -> None:
    params = STRESS_PARAMS.with_overrides(max_sim_seconds=3 * 3600.0)
    sim = Simulation(builtin_workload(STRESS, seed=3), DefaultScheduler(params), params, seed=3)
    result = sim.run()
    summary = summarise(result)
    assert summary.unfinished_jobs > 0
    open_ones = [r for r in result.recoveries if r.outcome == "unfinished"]
    assert summary.unrecovered == len(open_ones)
    assert summary.recovered + summary.failed_again + summary.unrecovered == summary.failures


# --- determinism --------------------------------------------------------------------------------------------


def _fingerprint(result: SimResult) -> tuple[Any, ...]:
    return (result.oom_kills, result.node_failures, round(result.job_seconds, 6),
            tuple((r.job, r.cause, round(r.failed_at, 6), r.outcome) for r in result.recoveries),
            tuple(round(j.finish, 6) for j in result.jobs if not math.isnan(j.finish)))


def test_the_same_seed_gives_the_same_run_and_another_seed_another() -> None:
    def run(seed: int) -> SimResult:
        params = SimParams(node_failure_rate_per_hour=0.08)
        return Simulation(builtin_workload(STRESS, seed=seed), CheckpointRestart(params), params, seed=seed).run()

    assert _fingerprint(run(5)) == _fingerprint(run(5))
    assert _fingerprint(run(5)) != _fingerprint(run(6))


# --- mechanisms ---------------------------------------------------------------------------------------------


def test_an_oom_kill_takes_the_pod_furthest_above_its_request_as_the_kubelet_does() -> None:
    # 100Gi node; "greedy" asks 30Gi but uses 60Gi, "honest" asks 50Gi and uses 45Gi: 105Gi > 100Gi.
    workload = Workload("oom", (node("n0", 100),), (job("greedy", 30, 60, hours=1), job("honest", 50, 45, hours=1)))
    result = Simulation(workload, CheckpointRestart(), SimParams(node_failure_rate_per_hour=0.0), seed=1).run()
    first = next(r for r in result.recoveries if r.cause == "oom")
    assert first.job == "greedy"
    assert result.node_failures == 0


def test_a_job_without_checkpoints_loses_all_its_work_and_one_with_checkpoints_only_the_tail() -> None:
    def lost(policy_class: type) -> float:
        workload = Workload("one", (node("n0", 100), node("n1", 100)), (job("a", 10, 10, hours=3),))
        params = SimParams(node_failure_rate_per_hour=0.0, fixed_checkpoint_interval_seconds=1800.0)
        sim = Simulation(workload, policy_class(params), params, seed=1)
        sim.inject_node_failure(2.5 * 3600, "a")
        result = sim.run()
        (rec,) = result.recoveries
        assert rec.outcome == "recovered" and rec.cause == "node"
        return rec.lost_work

    without, with_checkpoints = lost(DefaultScheduler), lost(CheckpointRestart)
    assert without > 2 * 3600  # everything done so far (minus loading time)
    assert 0 < with_checkpoints < 1800  # at most one interval


def test_memory_ramps_through_the_first_epochs_then_holds() -> None:
    level = memory_level(np.array([100.0, 100.0, 100.0]), np.array([1000.0, 1000.0, 1000.0]),
                         np.array([0.0, 500.0, 5000.0]), np.array([True, True, True]), 0.4)
    assert level.tolist() == pytest.approx([40.0, 70.0, 100.0])
    loading = memory_level(np.array([100.0]), np.array([1000.0]), np.array([5000.0]), np.array([False]), 0.4)
    assert loading.tolist() == [40.0]


def test_failure_hazard_rises_with_memory_load_and_speed_falls_past_the_knee() -> None:
    params = SimParams()
    p = failure_probability(np.array([0.0, 0.5, 1.0]), 3600.0, params)
    assert p[0] < p[1] < p[2]
    assert p[2] == pytest.approx(1 - math.exp(-params.node_failure_rate_per_hour * 5))
    speed = contention_speed(np.array([0.5, 0.8, 0.9, 1.0]), params)
    slowdown = params.contention_slowdown
    assert speed.tolist() == pytest.approx([1.0, 1.0, 1 - slowdown / 2, 1 - slowdown])


# --- GuardGrid's real code ----------------------------------------------------------------------------------


class Spy:
    """Wraps a real object and counts calls of its public methods (dependency injection, no monkeypatching)."""

    def __init__(self, target: Any, calls: dict[str, int], results: list[Any] | None = None) -> None:
        self._target, self._calls, self._results = target, calls, results

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._target, name)
        if not callable(attribute) or name.startswith("_"):
            return attribute

        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self._calls[name] = self._calls.get(name, 0) + 1
            value = attribute(*args, **kwargs)
            if self._results is not None:
                self._results.append(value)
            return value

        return wrapper


def spy_factory(real: Callable[..., Any], calls: dict[str, int],
                results: list[Any] | None = None) -> Callable[..., Any]:
    return lambda *args, **kwargs: Spy(real(*args, **kwargs), calls, results)


def test_guardgrid_schedules_through_the_real_extender_and_plans_with_the_real_predictor_cycle() -> None:
    extender_calls: dict[str, int] = {}
    cycle_calls: dict[str, int] = {}
    reports: list[Any] = []
    params = STRESS_PARAMS.with_overrides(check_invariants=False)
    policy = GuardGrid(params, guardgrid_settings(False, shortfall_target=1e-6),
                       extender_factory=spy_factory(ExtenderService, extender_calls),
                       cycle_factory=spy_factory(PredictorCycle, cycle_calls, reports))
    sim = Simulation(builtin_workload(STRESS, seed=3), policy, params, seed=3, history_samples=HISTORY)
    result = sim.run()
    assert extender_calls.get("filter", 0) > 0 and extender_calls.get("prioritize", 0) > 0
    assert extender_calls["filter"] == result.calls["extender.filter"]
    assert cycle_calls["run"] == result.calls["predictor.cycle"] > 10
    plans = [r.plan for r in reports if r.plan is not None]
    assert plans and all(isinstance(plan, Plan) for plan in plans)
    assert any(plan.slots for plan in plans)  # a strict shortfall target makes the real planner want slots
    assert policy.api is not None and policy.api.created  # ... which its reconciler created through the API
    assert all(r.source == "simulation" and not r.stale for r in reports[-5:])
    assert summarise(result).standby_mean_gib > 0


def test_a_recovering_pod_takes_over_its_own_standby_slot_by_preemption_and_starts_warm() -> None:
    # Two 100Gi nodes. The job (60Gi) runs on one; the real planner puts its slot (60Gi) on the other. When the
    # job's node fails, the replacement fits nowhere by requests: kube-scheduler's preemption proposes the slot's
    # node, GuardGrid's preempt verb keeps it (the job's own slot), the slot is evicted, the pod binds there with
    # its image already pulled by the slot.
    workload = Workload("slot", (node("n0", 100), node("n1", 100)), (job("train", 60, 50, hours=3, gpus=4),))
    params = SimParams(node_failure_rate_per_hour=0.0, check_invariants=True)
    policy = GuardGrid(params, guardgrid_settings(False, shortfall_target=1e-6))
    sim = Simulation(workload, policy, params, seed=1)
    sim.inject_node_failure(3600.0, "train")
    result = sim.run()
    (rec,) = [r for r in result.recoveries if r.cause == "node"]
    assert rec.outcome == "recovered"
    assert rec.standby_used and rec.on_slot_node and result.standby_takeovers == 1
    assert rec.image_warm and rec.stages["image_pull"] == 0.0
    assert rec.stages["node_start"] == 0.0  # it did not wait for the failed node's replacement
    assert result.calls.get("extender.preempt", 0) >= 1


def test_the_default_scheduler_recovers_the_same_job_cold_on_the_other_node() -> None:
    workload = Workload("slot", (node("n0", 100), node("n1", 100)), (job("train", 60, 50, hours=3, gpus=4),))
    params = SimParams(node_failure_rate_per_hour=0.0)
    sim = Simulation(workload, CheckpointRestart(params), params, seed=1)
    sim.inject_node_failure(3600.0, "train")
    (rec,) = sim.run().recoveries
    assert not rec.image_warm and rec.stages["image_pull"] > 0


def test_speculative_migration_moves_a_slow_growing_job_off_a_contended_node_through_the_eviction_api() -> None:
    # n0 (100Gi, GPUs) ends up with "flat" (plateaued progress, opted in) and "steep" (linear progress): 95% load,
    # contended. n1 (no GPUs) is held by a one-hour filler, then free. After a growth window, the predictor's
    # MigrationController evicts "flat"; its replacement lands on n1.
    flat = job("flat", 45, 50, submit=60, hours=4, curve=ProgressCurve("exp", tau=0.02))
    steep = job("steep", 45, 45, submit=120, hours=4, gpus=2, migratable=False)
    filler = job("filler", 95, 60, submit=0, hours=1)
    workload = Workload("contended", (node("n0", 100), node("n1", 100, gpus=0)), (filler, flat, steep))
    params = SimParams(node_failure_rate_per_hour=0.0, check_invariants=True)
    migration_calls: dict[str, int] = {}
    decisions: list[Any] = []
    # The scenario needs n0 to stay contended: with the least-risky fallback the jobs would spread differently.
    settings = guardgrid_settings(True, params, filter_keep_least_risky=False)
    policy = GuardGrid(params, settings, migrate=True,
                       migration_factory=spy_factory(MigrationController, migration_calls, decisions))
    sim = Simulation(workload, policy, params, seed=1)
    result = sim.run()
    evicted = [d for batch in decisions for d in batch if d.decision == "evicted"]
    assert migration_calls.get("run_cycle", 0) > 0
    assert evicted and all(d.job == "flat" for d in evicted)
    assert result.migrations == len(evicted) and policy.api is not None and policy.api.evictions
    moves = [r for r in result.recoveries if r.cause == "migration"]
    assert moves and moves[0].lost_work == 0.0  # it checkpointed on the way out
    assert moves[0].outcome == "recovered" and sim.cluster.nodes[sim.cluster.index["n1"]].name == "n1"
    assert all(j.finish > 0 for j in result.jobs)


def test_guardgrid_reads_only_the_monitoring_history_never_the_true_memory_model() -> None:
    params = SimParams(node_failure_rate_per_hour=0.0)
    workload = Workload("tiny", (node("n0", 100), node("n1", 100)), (job("a", 20, 30, hours=1, noise=0.05),))
    policy = GuardGrid(params)
    sim = Simulation(workload, policy, params, seed=1)
    sim.run()
    window = policy.source.fetch([n.name for n in workload.nodes], EPOCH + sim.now, True)  # type: ignore[union-attr]
    assert window.source == "simulation"
    assert window.memory_used.shape[0] == 2 and window.step_seconds == params.tick_seconds
    assert np.nanmax(window.memory_used) <= 100 * GiB
