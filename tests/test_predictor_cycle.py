"""One predictor cycle end to end over the in-memory API server, with history fed directly (no Prometheus):
forecasts, fault rates, the standby plan carried out as pods, degradation, leadership, restarts."""

from __future__ import annotations

import numpy as np
import pytest

from guardgrid import keys
from guardgrid.config import load_settings
from guardgrid.informer import ClusterCache
from guardgrid.kubeapi.base import KubeAPIError
from guardgrid.kubeapi.memory import InMemoryKubeAPI
from predictor.cycle import PredictorCycle
from predictor.reconcile import PENDING_TIMEOUT_SECONDS, STANDBY_NODE_ANNOTATION
from predictor.sources import MetricsWindow, StaticSource, window_times

GiB = 2**30
NOW = 1_800_000_000.0
NODES = ["n0", "n1", "n2", "n3", "n4"]
JOB_OWNER = {"apiVersion": "batch/v1", "kind": "Job", "name": "llm", "uid": "job-uid-llm", "controller": True}


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def node(name: str, memory: str = "128Gi") -> dict:
    return {"kind": "Node", "apiVersion": "v1", "metadata": {"name": name},
            "status": {"allocatable": {"memory": memory, "cpu": "32"},
                       "conditions": [{"type": "Ready", "status": "True"}]}}


def training_pod(name: str, node_name: str, job: str = "llm", memory: str = "32Gi", phase: str = "Running") -> dict:
    return {"kind": "Pod", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": "ml", "uid": f"uid-{name}",
                         "labels": {keys.JOB: job, keys.MANAGED: "true"},
                         "annotations": {keys.DATASET_IMAGE: "registry.example.com/data/pile:1",
                                         keys.CHECKPOINT_COST_SECONDS: "30"},
                         "ownerReferences": [JOB_OWNER]},
            "spec": {"nodeName": node_name, "priorityClassName": keys.PRIORITY_CLASS_TRAINING, "priority": 1000,
                     "containers": [{"name": "train", "image": "registry.example.com/train:2",
                                     "resources": {"requests": {"memory": memory}}}]},
            "status": {"phase": phase}}


def plain_pod(name: str, node_name: str, memory: str = "20Gi") -> dict:
    return {"kind": "Pod", "apiVersion": "v1", "metadata": {"name": name, "namespace": "default", "uid": f"uid-{name}"},
            "spec": {"nodeName": node_name, "containers": [{"name": "c", "image": "web:1",
                                                            "resources": {"requests": {"memory": memory}}}]},
            "status": {"phase": "Running"}}


def cluster(clock: Clock) -> InMemoryKubeAPI:
    objects = [node(n) for n in NODES] + [training_pod("llm-0", "n0"), training_pod("llm-1", "n1"),
                                          plain_pod("web-0", "n2"), plain_pod("web-1", "n3")]
    return InMemoryKubeAPI(objects, clock=clock)


def history(use_gib: float | dict = 40.0, notready: dict | None = None, samples: int = 120, seed: int = 0,
            nodes: list[str] = NODES, **extra) -> MetricsWindow:
    """Flat memory use with noise; `notready[node] = k` puts k NotReady episodes into its Ready series."""
    rng = np.random.default_rng(seed)
    times = window_times(NOW, samples * 60.0, 60.0)
    per_node = np.array([(use_gib.get(n, 40.0) if isinstance(use_gib, dict) else use_gib) for n in nodes])
    memory = per_node[:, None] * GiB + rng.normal(0, 0.3 * GiB, (len(nodes), len(times)))
    ready = np.ones((len(nodes), len(times)))
    for name, episodes in (notready or {}).items():
        row = nodes.index(name)
        for k in range(episodes):
            ready[row, 10 + 10 * k: 13 + 10 * k] = 0.0
    fields = dict(oom_counter=np.zeros_like(memory), pod_oom_kills=np.zeros(len(nodes)))
    fields.update(extra)
    return MetricsWindow("static", tuple(nodes), times, 60.0, memory, ready, **fields)


class Setup:
    def __init__(self, window: MetricsWindow | None = None, leader: bool = True, **settings) -> None:
        self.clock = Clock()
        self.api = cluster(self.clock)
        self.settings = load_settings({}, **settings)
        self.source = StaticSource(window if window is not None else history(notready={"n0": 4, "n1": 4}))
        self.cache = ClusterCache(self.api)
        self.cache.sync_now()
        self.leader = leader
        self.cycle = self.new_cycle()

    def new_cycle(self) -> PredictorCycle:
        return PredictorCycle(self.settings, self.cache.state, self.source, self.api, leader=lambda: self.leader,
                              clock=self.clock)

    def run(self, sync: bool = True):
        if sync:
            self.cache.sync_now()
        return self.cycle.run()

    def slot_pods(self) -> list[dict]:
        pods = [self.api.get_raw("pods", f"{p.namespace}/{p.name}") for p in self.api.list("pods").items]
        return [p for p in pods if (p["metadata"].get("labels") or {}).get(keys.STANDBY_FOR)]


def test_a_cycle_publishes_forecasts_and_fault_rates_for_every_node():
    setup = Setup()
    report = setup.run()
    snapshot = report.snapshot
    assert not snapshot.stale and snapshot.generated_at == NOW and report.source == "static"
    assert set(snapshot.nodes) == set(NODES)
    for forecast in snapshot.nodes.values():
        assert forecast.forecast_mean_bytes == pytest.approx(40 * GiB, rel=0.03)
        assert 0 < forecast.forecast_std_bytes < 2 * GiB
        assert forecast.allocatable_bytes == 128 * GiB and forecast.oom_risk < 1e-6
    flaky, calm = snapshot.nodes["n0"].fault_rate_per_hour, snapshot.nodes["n2"].fault_rate_per_hour
    assert flaky == pytest.approx((4 + 0.01 * 24) / (2 + 24))  # 4 episodes in 2 h, prior 0.01/h worth 24 h
    assert calm == pytest.approx(0.01 * 24 / (2 + 24))
    assert snapshot.cluster_memory_load == pytest.approx(40 / 128, rel=0.03)


def test_the_planned_slot_is_created_as_a_warm_pod_outside_the_jobs_nodes():
    setup = Setup()
    report = setup.run()
    assert report.plan is not None and report.plan.wanted == 1
    [pod] = setup.slot_pods()
    meta, spec = pod["metadata"], pod["spec"]
    assert meta["namespace"] == "ml" and meta["name"] == "standby-llm-0"
    assert meta["labels"] == {keys.STANDBY_FOR: "llm", keys.MANAGED: "true"}
    assert meta["annotations"][keys.INJECT] == "false"
    node_name = meta["annotations"][STANDBY_NODE_ANNOTATION]
    assert node_name not in ("n0", "n1")
    assert meta["ownerReferences"] == [{"apiVersion": "batch/v1", "kind": "Job", "name": "llm", "uid": "job-uid-llm",
                                        "controller": False, "blockOwnerDeletion": False}]
    assert spec["priorityClassName"] == keys.PRIORITY_CLASS_STANDBY and spec["terminationGracePeriodSeconds"] == 0
    assert spec["schedulerName"] == "default-scheduler" and "nodeName" not in spec
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node_name]}]}]
    assert [c["image"] for c in spec["containers"]] == ["registry.example.com/train:2",
                                                        "registry.example.com/data/pile:1"]
    assert all(c["command"] == ["sleep", "infinity"] for c in spec["containers"])
    assert spec["containers"][0]["resources"]["requests"]["memory"] == str(32 * GiB)
    assert [(s.job, s.node, s.state) for s in report.snapshot.standby] == [("llm", node_name, "pending")]


def test_a_bound_running_slot_is_reported_ready_and_kept_cycle_after_cycle():
    setup = Setup()
    setup.run()
    [pod] = setup.slot_pods()
    setup.api.bind_pod("ml", pod["metadata"]["name"], pod["metadata"]["annotations"][STANDBY_NODE_ANNOTATION])
    for _ in range(3):
        report = setup.run()
        assert [s.state for s in report.snapshot.standby] == ["ready"]
        assert report.reconcile is not None and report.reconcile.created == report.reconcile.deleted == []
    assert len(setup.slot_pods()) == 1


def test_a_lagging_cache_never_makes_the_next_cycle_create_a_duplicate():
    setup = Setup()
    setup.run()
    setup.run(sync=False)  # the cache has not seen the pod the first cycle created
    assert len(setup.slot_pods()) == 1


def test_a_restarted_predictor_finds_its_slots_in_the_cluster_and_creates_no_duplicate():
    setup = Setup()
    setup.run()
    setup.cycle = setup.new_cycle()  # a new process: nothing remembered
    report = setup.run()
    assert len(setup.slot_pods()) == 1 and report.reconcile.created == []
    assert [s.keep for s in report.plan.slots] == ["ml/standby-llm-0"]


def test_a_name_taken_by_a_pod_the_cache_has_not_seen_moves_to_the_next_index():
    setup = Setup()
    setup.api.create_pod({"metadata": {"name": "standby-llm-0", "namespace": "ml"},
                          "spec": {"containers": [{"name": "c", "image": "x"}]}})  # not ours, not in the cache
    report = setup.run(sync=False)
    assert report.reconcile.created == ["ml/standby-llm-1"]


def test_when_the_source_goes_down_the_last_forecast_is_kept_stale_and_no_slot_is_touched():
    setup = Setup()
    first = setup.run()
    setup.clock.now += 300
    setup.source.fail_with = "Prometheus unreachable at http://prometheus:9090: ConnectionError"
    # Meanwhile the job finished: fresh data would delete its slot; missing data must not.
    for name in ("llm-0", "llm-1"):
        setup.api.delete_pod("ml", name)
    for _ in range(2):
        report = setup.run()
        snapshot = report.snapshot
        assert snapshot.stale and report.reason.startswith("Prometheus unreachable")
        assert snapshot.generated_at == first.snapshot.generated_at  # the age of the data, not of the cycle
        assert snapshot.nodes["n0"].forecast_mean_bytes == first.snapshot.nodes["n0"].forecast_mean_bytes
        assert report.plan is None and report.reconcile is None
    assert len(setup.slot_pods()) == 1
    assert [s.state for s in report.snapshot.standby] == ["pending"]


def test_no_data_at_all_is_handled_like_an_outage():
    empty = history()
    empty = MetricsWindow("static", empty.nodes, empty.times, 60.0, np.full_like(empty.memory_used, np.nan),
                          empty.ready, empty.oom_counter, empty.pod_oom_kills)
    setup = Setup(window=empty)
    report = setup.run()
    assert report.snapshot.stale and report.snapshot.nodes == {} and "no node memory data" in report.reason
    assert setup.slot_pods() == []  # nothing is planned on no data either


def test_a_node_without_series_is_left_to_the_extenders_request_fallback():
    setup = Setup(window=history(nodes=["n0", "n1", "n2", "n3"], notready={"n0": 4}))  # n4 has no node-exporter
    report = setup.run()
    assert "n4" not in report.snapshot.nodes and set(report.snapshot.nodes) == {"n0", "n1", "n2", "n3"}
    assert not report.snapshot.stale


def test_high_cluster_load_turns_the_cluster_reactive_and_frees_the_slots():
    setup = Setup()
    setup.run()
    assert len(setup.slot_pods()) == 1
    setup.source.window = history(use_gib=118.0, notready={"n0": 4, "n1": 4})
    report = setup.run()
    assert report.snapshot.mode == "reactive" and setup.slot_pods() == []
    setup.source.window = history(use_gib=105.0, notready={"n0": 4, "n1": 4})  # 0.82: inside the band
    assert setup.run().snapshot.mode == "reactive" and setup.slot_pods() == []
    setup.source.window = history(use_gib=60.0, notready={"n0": 4, "n1": 4})
    assert setup.run().snapshot.mode == "proactive" and len(setup.slot_pods()) == 1


def test_a_replica_that_does_not_lead_plans_and_publishes_but_creates_nothing():
    setup = Setup(leader=False)
    report = setup.run()
    assert not report.leader and setup.slot_pods() == []
    assert [s.state for s in report.snapshot.standby] == ["planned"]
    setup.leader = True
    assert setup.run().leader and len(setup.slot_pods()) == 1


def test_the_slot_of_a_job_whose_pods_just_died_survives_until_the_replacement_comes():
    setup = Setup()
    setup.run()
    [pod] = setup.slot_pods()
    setup.api.bind_pod("ml", pod["metadata"]["name"], pod["metadata"]["annotations"][STANDBY_NODE_ANNOTATION])
    for name in ("llm-0", "llm-1"):
        setup.api.delete_pod("ml", name)
    setup.clock.now += 60
    setup.run()
    assert len(setup.slot_pods()) == 1  # the Job controller is about to create the replacement
    setup.api.upsert_raw(training_pod("llm-2", "", phase="Pending"))
    setup.clock.now += 3600
    setup.run()
    assert len(setup.slot_pods()) == 1  # a pending replacement pod keeps the job protected
    setup.api.delete_pod("ml", "llm-2")
    setup.run()
    setup.clock.now += 3600
    setup.run()
    assert setup.slot_pods() == []  # the job is gone for good


def test_a_slot_stuck_pending_is_replaced_on_another_node_and_its_node_avoided():
    setup = Setup()
    setup.run()
    [stuck] = setup.slot_pods()
    first_node = stuck["metadata"]["annotations"][STANDBY_NODE_ANNOTATION]
    setup.clock.now += PENDING_TIMEOUT_SECONDS + 1
    report = setup.run()
    assert report.reconcile.deleted == ["ml/standby-llm-0"]
    setup.run()
    [replacement] = setup.slot_pods()
    assert replacement["metadata"]["annotations"][STANDBY_NODE_ANNOTATION] != first_node


def test_peaks_are_learned_per_job_and_bumped_after_an_oom_kill():
    window = history(notready={"n0": 4, "n1": 4},
                     pod_peaks={("ml", "llm-0"): 30 * GiB, ("ml", "llm-1"): 33 * GiB, ("default", "web-0"): 5 * GiB},
                     pod_oom_killed=frozenset({("ml", "llm-1")}))
    report = Setup(window=window).run()
    assert report.snapshot.workloads["llm"].peak_memory_bytes == pytest.approx(33 * GiB * 1.2)
    assert "web-0" not in report.snapshot.workloads  # no owner, no job label: not a workload


def test_oom_kills_count_as_failures_once_even_when_both_exporters_saw_them():
    base = history()
    counter = np.zeros_like(base.memory_used)
    counter[2, 60:] = 3.0  # the kernel counted 3 OOM kills on n2
    window = history(oom_counter=counter, pod_oom_kills=np.array([0, 0, 2, 0, 1.0]))
    snapshot = Setup(window=window).run().snapshot
    prior = 0.01 * 24
    assert snapshot.nodes["n2"].fault_rate_per_hour == pytest.approx((3 + prior) / 26)  # max(3, 2), not 5
    assert snapshot.nodes["n4"].fault_rate_per_hour == pytest.approx((1 + prior) / 26)


def test_checkpoint_advice_is_published_per_job():
    snapshot = Setup().run().snapshot
    advice = snapshot.jobs["llm"]
    assert advice.checkpoint_cost_seconds == 30
    rate = snapshot.nodes["n0"].fault_rate_per_hour + snapshot.nodes["n1"].fault_rate_per_hour
    assert advice.mtbf_seconds == pytest.approx(3600 / rate)


class _RecordingSource(StaticSource):
    def __init__(self, window):
        super().__init__(window)
        self.asked_progress: list[bool] = []

    def fetch(self, nodes, now, want_progress):
        self.asked_progress.append(want_progress)
        return super().fetch(nodes, now, want_progress)


def test_progress_is_queried_only_when_speculative_migration_is_enabled():
    for enabled in (False, True):
        setup = Setup(migration_enabled=enabled)
        setup.source = _RecordingSource(history())
        setup.cycle = setup.new_cycle()
        setup.run()
        assert setup.source.asked_progress == [enabled]


class _RefusingAPI(InMemoryKubeAPI):
    def create_pod(self, manifest):
        raise KubeAPIError("admission webhook denied the request", 403, "Forbidden")


def test_a_refused_create_is_reported_and_the_slot_stays_planned():
    setup = Setup()
    refusing = _RefusingAPI([node(n) for n in NODES] + [training_pod("llm-0", "n0"), training_pod("llm-1", "n1")],
                            clock=setup.clock)
    setup.api = refusing
    setup.cache = ClusterCache(refusing)
    setup.cache.sync_now()
    setup.cycle = setup.new_cycle()
    report = setup.run()
    assert report.reconcile.errors and "Forbidden" not in report.reason
    assert [s.state for s in report.snapshot.standby] == ["planned"]



def test_the_slot_manifest_is_a_valid_v1_36_pod_even_for_a_bare_pod_job():
    import kubernetes_validate

    from guardgrid.standby import ProtectedJob
    from predictor.reconcile import standby_manifest

    setup = Setup()
    setup.run()
    [created] = setup.slot_pods()
    for key in ("uid", "resourceVersion", "creationTimestamp"):
        created["metadata"].pop(key, None)
    kubernetes_validate.validate(created, "1.36", strict=True)
    bare = standby_manifest(ProtectedJob("Bert_Large.v2", "ml", 8 * GiB, ("img:1",), ("n0",)), "n3", 8 * GiB,
                            "standby-bert-large-v2-0")
    kubernetes_validate.validate(bare, "1.36", strict=True)
    assert "ownerReferences" not in bare["metadata"]


def test_a_slot_meets_the_restricted_pod_security_standard_whatever_its_images():
    setup = Setup()
    setup.run()
    [slot] = setup.slot_pods()
    spec = slot["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False and context["capabilities"]["drop"] == ["ALL"]
        assert context["readOnlyRootFilesystem"] is True
        assert "runAsUser" not in context and "privileged" not in context  # nothing overrides the pod's


def test_a_job_name_that_is_no_dns_label_still_gives_a_valid_slot_name():
    setup = Setup()
    for name in ("llm-0", "llm-1"):
        setup.api.delete_pod("ml", name)
    setup.api.upsert_raw(training_pod("big-0", "n0", job="LLM_v2.Big"))
    setup.api.upsert_raw(training_pod("big-1", "n1", job="LLM_v2.Big"))
    setup.run()
    [pod] = setup.slot_pods()
    assert pod["metadata"]["name"] == "standby-llm-v2-big-0"
    assert pod["metadata"]["labels"][keys.STANDBY_FOR] == "LLM_v2.Big"
