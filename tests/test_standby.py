"""The standby plan: mode with hysteresis, Poisson slot count, greedy allocation, placement, stability."""

import math

import numpy as np
import pytest

from guardgrid import keys
from guardgrid.config import load_settings
from guardgrid.records import OwnerRef, PodRecord
from guardgrid.standby import (ExistingSlot, NodeInputs, ProtectedJob, next_mode, plan_standby, poisson_sf,
                               protected_jobs, slots_needed)

GiB = 2**30
SETTINGS = load_settings({})


def _nodes(count=6, use_gib=40.0, alloc_gib=128.0, free_gib=80.0, rate=0.01, spread_gib=2.0, **over):
    names = [f"n{i}" for i in range(count)]
    arrays = {
        "allocatable": np.full(count, alloc_gib * GiB), "mean": np.full(count, use_gib * GiB),
        "spread": np.full(count, spread_gib * GiB), "fault_rate": np.full(count, rate),
        "free": np.full(count, free_gib * GiB), "ready": np.full(count, True),
    }
    for key, changes in over.items():
        for i, value in changes.items():
            arrays[key][i] = value * GiB if key in ("allocatable", "mean", "spread", "free") else value
    return NodeInputs(names, **arrays)


def _job(name="train", nodes=("n0",), memory_gib=16.0, pods=None):
    return ProtectedJob(name=name, namespace="ml", pod_memory=memory_gib * GiB, images=("img",), nodes=tuple(nodes),
                        pods=pods if pods is not None else len(nodes))


def _flaky(rate_per_hour=3.0, count=6):
    """Nodes failing often enough that one job over the 10-minute horizon clearly wants a slot."""
    return _nodes(count, rate=rate_per_hour)


def test_poisson_tail_and_the_smallest_sufficient_slot_count():
    assert poisson_sf(0, 0.5) == pytest.approx(1 - math.exp(-0.5))
    assert poisson_sf(1, 0.5) == pytest.approx(1 - math.exp(-0.5) * 1.5)
    assert poisson_sf(3, 0.0) == 0.0
    assert slots_needed(0.5, 0.05, cap=50) == 2  # P(N>1)=0.090 > 0.05 >= P(N>2)=0.014
    assert slots_needed(0.5, 0.05, cap=1) == 1
    assert slots_needed(800.0, 0.05, cap=2000) > 800  # large lambdas do not underflow


def test_mode_turns_reactive_above_enter_and_back_only_below_exit():
    assert next_mode("proactive", 0.84, 0.85, 0.75) == "proactive"
    assert next_mode("proactive", 0.86, 0.85, 0.75) == "reactive"
    assert next_mode("reactive", 0.80, 0.85, 0.75) == "reactive"  # inside the band: no flapping
    assert next_mode("reactive", 0.74, 0.85, 0.75) == "proactive"


def test_a_cluster_above_the_reactive_threshold_gets_no_slots_and_deletes_existing_ones():
    nodes = _flaky(count=4)
    tight = NodeInputs(nodes.names, nodes.allocatable, nodes.allocatable * 0.9, nodes.spread, nodes.fault_rate,
                       nodes.free, nodes.ready)
    existing = [ExistingSlot("train", "n2", 16 * GiB, "ml/standby-train-0")]
    plan = plan_standby(tight, [_job()], existing, "proactive", SETTINGS)
    assert plan.mode == "reactive" and plan.slots == () and plan.wanted == 0
    assert plan.load == pytest.approx(0.9)


def test_the_slot_count_follows_the_expected_failures_and_the_caps():
    jobs = [_job(f"j{i}", nodes=(f"n{i}",)) for i in range(4)]
    calm = plan_standby(_nodes(8, rate=0.0001), jobs, [], "proactive", SETTINGS)
    assert calm.wanted == 0 and calm.slots == ()  # 4 jobs x 1e-4/h x 1/6 h: no slot needed at 5%
    flaky = plan_standby(_nodes(8, rate=1.5), jobs, [], "proactive", SETTINGS)
    lam = 4 * 1.5 * SETTINGS.horizon_seconds / 3600
    assert flaky.expected_failures == pytest.approx(lam)
    assert flaky.wanted == slots_needed(lam, SETTINGS.shortfall_target, 4) > 1
    assert len(flaky.slots) == flaky.wanted
    assert flaky.shortfall_probability <= SETTINGS.shortfall_target
    capped = plan_standby(_nodes(8, rate=3.0), jobs, [], "proactive", load_settings({}, max_standby_slots=1))
    assert capped.wanted == 1 and len(capped.slots) == 1


def test_slots_stay_outside_the_jobs_nodes_and_off_nodes_that_are_not_ready_or_full():
    nodes = _nodes(5, rate=3.0, free={2: 8.0}, ready={3: False})
    plan = plan_standby(nodes, [_job(nodes=("n0", "n1"), pods=1)], [], "proactive", SETTINGS)
    assert [s.node for s in plan.slots] == ["n4"]  # n0/n1: its own; n2: 8Gi free; n3: not ready
    assert plan.slots[0].memory == 16 * GiB and plan.slots[0].keep == ""


def test_the_lowest_risk_node_wins():
    nodes = _nodes(4, rate=3.0, mean={1: 110.0, 2: 60.0, 3: 100.0})
    plan = plan_standby(nodes, [_job(nodes=("n0",))], [], "proactive", SETTINGS)
    assert plan.slots[0].node == "n2"  # n1 and n3 would be near full with the replacement pod


def test_a_node_never_gets_more_slots_than_its_free_memory_holds():
    nodes = _nodes(3, rate=3.0, free={0: 20.0, 1: 0.0, 2: 0.0})
    jobs = [_job("a", nodes=("n1",)), _job("b", nodes=("n2",))]
    plan = plan_standby(nodes, jobs, [], "proactive", SETTINGS)
    assert [s.node for s in plan.slots] == ["n0"]  # room for one 16Gi slot, not two
    assert plan.unplaced == plan.wanted - 1 >= 1


def test_scarce_slots_go_to_the_job_most_likely_to_fail():
    nodes = _nodes(6, rate=0.5, fault_rate={0: 5.0, 1: 5.0})
    jobs = [_job("steady", nodes=("n2",)), _job("flaky", nodes=("n0", "n1"))]
    plan = plan_standby(nodes, jobs, [], "proactive", load_settings({}, max_standby_slots=1))
    assert [s.job for s in plan.slots] == ["flaky"]
    assert plan.job_failure_probability["flaky"] > plan.job_failure_probability["steady"]


def test_an_existing_slot_that_still_serves_is_kept_instead_of_moved():
    nodes = _nodes(4, rate=3.0, mean={3: 60.0})  # n3 is a bit busier than n1/n2, but fine
    existing = [ExistingSlot("train", "n3", 16 * GiB, "ml/standby-train-0")]
    plan = plan_standby(nodes, [_job()], existing, "proactive", SETTINGS)
    assert [(s.node, s.keep) for s in plan.slots] == [("n3", "ml/standby-train-0")]


def test_an_existing_slot_on_a_node_that_turned_risky_or_joined_the_job_is_replaced():
    risky = _nodes(4, rate=3.0, mean={3: 125.0})
    existing = [ExistingSlot("train", "n3", 16 * GiB, "ml/standby-train-0")]
    plan = plan_standby(risky, [_job()], existing, "proactive", SETTINGS)
    assert [s.keep for s in plan.slots] == [""] and plan.slots[0].node != "n3"
    moved = plan_standby(_nodes(4, rate=3.0), [_job(nodes=("n0", "n3"), pods=1)], existing, "proactive", SETTINGS)
    assert all(s.node not in ("n0", "n3") and not s.keep for s in moved.slots)


def test_an_existing_slot_too_small_for_the_grown_job_is_replaced():
    existing = [ExistingSlot("train", "n3", 8 * GiB, "ml/standby-train-0")]
    plan = plan_standby(_nodes(4, rate=3.0), [_job(memory_gib=16.0)], existing, "proactive", SETTINGS)
    assert [s.keep for s in plan.slots] == [""] and plan.slots[0].memory == 16 * GiB


def test_a_slight_drop_in_fault_rate_does_not_delete_a_slot_the_stricter_target_would_keep():
    job = _job()
    rate = 0.3  # lambda = 0.05: P(N > 0) = 0.049 is within the 5% target, not within a stricter 2.5%
    lam = rate * SETTINGS.horizon_seconds / 3600
    assert slots_needed(lam, SETTINGS.shortfall_target, 1) == 0
    assert slots_needed(lam, SETTINGS.shortfall_target / 2, 1) == 1
    existing = [ExistingSlot("train", "n2", 16 * GiB, "ml/standby-train-0")]
    kept = plan_standby(_nodes(4, rate=rate), [job], existing, "proactive", SETTINGS)
    assert [s.keep for s in kept.slots] == ["ml/standby-train-0"]
    fresh = plan_standby(_nodes(4, rate=rate), [job], [], "proactive", SETTINGS)
    assert fresh.slots == ()  # without the slot, this rate would not create one


def test_a_job_in_passing_keeps_its_slots_until_its_replacement_pod_appears():
    existing = [ExistingSlot("gone", "n2", 16 * GiB, "ml/standby-gone-0")]
    held = plan_standby(_nodes(4, rate=3.0), [], existing, "proactive", SETTINGS, held_jobs={"gone"})
    assert [s.keep for s in held.slots] == ["ml/standby-gone-0"]
    dropped = plan_standby(_nodes(4, rate=3.0), [], existing, "proactive", SETTINGS)
    assert dropped.slots == ()


def _pod(name, job="", labels=None, annotations=None, node="n0", priority_class=keys.PRIORITY_CLASS_TRAINING,
         phase="Running", memory_gib=16, images=("registry.example.com/train:1",), owner=None):
    all_labels = dict(labels or {})
    if job:
        all_labels[keys.JOB] = job
    return PodRecord(uid=name, namespace="ml", name=name, node_name=node, memory_request=memory_gib * GiB,
                     priority_class=priority_class, phase=phase, labels=all_labels,
                     annotations=dict(annotations or {}), images=images, owner=owner)


def test_protected_jobs_are_training_pods_with_a_guardgrid_job_pending_ones_included():
    owner = OwnerRef("Job", "bert", "uid-1", "batch/v1")
    pods = [
        _pod("bert-0", labels={keys.MANAGED: "true"}, owner=owner, node="n1",
             annotations={keys.DATASET_IMAGE: "registry.example.com/data:1"}),
        _pod("bert-1", labels={keys.MANAGED: "true"}, owner=owner, node="", phase="Pending", memory_gib=24),
        _pod("resnet-0", job="resnet", node="n2"),
        _pod("web-0", job="web", priority_class=""),  # not a training pod
        _pod("done-0", job="done", phase="Succeeded"),
        _pod("standby-resnet-0", labels={keys.STANDBY_FOR: "resnet"}, priority_class=keys.PRIORITY_CLASS_STANDBY),
    ]
    jobs = {job.name: job for job in protected_jobs(pods)}
    assert set(jobs) == {"bert", "resnet"}
    bert = jobs["bert"]
    assert bert.nodes == ("n1",) and bert.pods == 2 and bert.pod_memory == 24 * GiB and bert.owner == owner
    assert bert.images == ("registry.example.com/train:1", "registry.example.com/data:1")


def test_node_inputs_of_mismatched_length_are_refused():
    with pytest.raises(ValueError, match="free"):
        NodeInputs(["a", "b"], np.ones(2), np.ones(2), np.ones(2), np.ones(2), np.ones(3), np.ones(2, bool))
