"""The predictor's real PromQL against a real Prometheus (Debian's package) serving generated history:
node memory with each label join, readiness, OOM kills, pod peaks, progress; then whole cycles, and what
happens when that Prometheus stops, hangs or has no data."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from guardgrid import keys
from guardgrid.config import load_settings
from guardgrid.faults import counter_increase, notready_episodes
from guardgrid.informer import ClusterCache
from guardgrid.kubeapi.memory import InMemoryKubeAPI
from predictor.app import create_app
from predictor.cycle import PredictorCycle
from predictor.queries import PrometheusQuerier
from predictor.service import PredictorService
from predictor.sources import PrometheusSource, SourceUnavailable, window_times
from prometheus_server import PrometheusServer, Series, SilentServer, free_port, prometheus_available
from test_predictor_cycle import Clock, node, plain_pod, training_pod

pytestmark = [pytest.mark.prometheus,
              pytest.mark.skipif(not prometheus_available(), reason="needs Debian's prometheus package "
                                 "(make test installs it: scripts/ensure-prometheus.sh)")]

GiB = 2**30
STEP = 60.0
SAMPLES = 120
NODES = ["w1", "w2", "w3", "w4"]
TOTAL = 128 * GiB


class History:
    """Two hours of one-minute samples ending at `end`, and the values the queries must find in them."""

    def __init__(self, end: float) -> None:
        self.end = end
        self.times = window_times(end, SAMPLES * STEP, STEP)
        rng = np.random.default_rng(7)
        t = np.arange(SAMPLES)
        self.used = {
            "w1": 40 * GiB + 0.05 * GiB * t + rng.normal(0, 0.2 * GiB, SAMPLES),  # growing 3 GiB/h
            "w2": 60 * GiB + rng.normal(0, 0.5 * GiB, SAMPLES),
            "w3": 30 * GiB + rng.normal(0, 0.5 * GiB, SAMPLES),
            "w4": 90 * GiB + rng.normal(0, 0.5 * GiB, SAMPLES),
        }
        self.ready = {n: np.ones(SAMPLES) for n in NODES}
        self.ready["w2"][20:23] = 0  # two NotReady episodes on w2
        self.ready["w2"][70:75] = 0
        self.oom = {n: np.zeros(SAMPLES) for n in NODES}
        self.oom["w3"][40:] = 2  # two kernel OOM kills, a reboot (counter reset), one more
        self.oom["w3"][80:] = 0
        self.oom["w3"][100:] = 1
        self.oom["w3"][10:12] = np.nan  # and a scrape gap
        self.peak_llm0 = 25 * GiB + 1 * GiB  # train + sidecar at the last sample
        self.peak_llm1 = 30 * GiB

    def series(self) -> list[Series]:
        out: list[Series] = []
        t = self.times
        for n in NODES:
            exporter = {"instance": f"{n}:9100", "job": "node-exporter", "node": n}
            out.append(Series("node_memory_MemTotal_bytes", exporter, t, np.full(SAMPLES, float(TOTAL))))
            out.append(Series("node_memory_MemAvailable_bytes", exporter, t, TOTAL - self.used[n]))
            out.append(Series("node_vmstat_oom_kill", exporter, t, self.oom[n]))
            out.append(Series("node_uname_info", {**exporter, "nodename": n}, t, np.ones(SAMPLES)))
            for status, value in (("true", self.ready[n]), ("false", 1 - self.ready[n]),
                                  ("unknown", np.zeros(SAMPLES))):
                out.append(Series("kube_node_status_condition",
                                  {"node": n, "condition": "Ready", "status": status, "job": "kube-state-metrics"},
                                  t, value))
        for namespace, pod, where in (("ml", "llm-0", "w1"), ("ml", "llm-1", "w2"), ("default", "web-0", "w3")):
            out.append(Series("kube_pod_info", {"namespace": namespace, "pod": pod, "node": where,
                                                "job": "kube-state-metrics"}, t, np.ones(SAMPLES)))
        killed = np.where(np.arange(SAMPLES) >= 50, 1.0, np.nan)
        out.append(Series("kube_pod_container_status_last_terminated_reason",
                          {"namespace": "ml", "pod": "llm-1", "container": "train", "reason": "OOMKilled"}, t, killed))
        ramp = np.linspace(20 * GiB, 25 * GiB, SAMPLES)
        cadvisor = {"job": "kubelet", "metrics_path": "/metrics/cadvisor"}
        for container, values in (("train", ramp), ("sidecar", np.full(SAMPLES, 1.0 * GiB)),
                                  ("", ramp + 1.5 * GiB), ("POD", np.full(SAMPLES, 2.0**20))):
            out.append(Series("container_memory_working_set_bytes",
                              {**cadvisor, "namespace": "ml", "pod": "llm-0", "container": container}, t, values))
        llm1 = np.full(SAMPLES, 28 * GiB)
        llm1[49] = self.peak_llm1
        out.append(Series("container_memory_working_set_bytes",
                          {**cadvisor, "namespace": "ml", "pod": "llm-1", "container": "train"}, t, llm1))
        progress = np.linspace(0.1, 0.8, SAMPLES)
        out.append(Series("guardgrid_training_progress", {"job_name": "llm", "pod": "llm-0"}, t, progress))
        out.append(Series("guardgrid_training_progress", {"job_name": "llm", "pod": "llm-1"}, t, progress - 0.05))
        return out


@pytest.fixture(scope="session")
def history() -> History:
    return History(end=math.floor(time.time() / STEP) * STEP - STEP)


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory, history):
    server = PrometheusServer.start(tmp_path_factory.mktemp("prometheus"), history.series())
    try:
        yield server
    finally:
        server.stop()


def _settings(url: str, **overrides):
    values = {"prometheus_url": url, "history_seconds": SAMPLES * STEP, "step_seconds": STEP,
              "http_timeout_seconds": 5.0, **overrides}
    return load_settings({}, **values)


def _querier(prometheus, **overrides) -> PrometheusQuerier:
    return PrometheusQuerier(_settings(prometheus.url, **overrides))


def _start(history) -> float:
    return float(history.times[0])


@pytest.mark.parametrize("node_label", ["node", "instance", "nodename"])
def test_node_memory_in_use_is_read_per_node_with_each_label_join(prometheus, history, node_label):
    querier = _querier(prometheus, node_label=node_label)
    used = querier.node_memory_used(NODES, _start(history), STEP, SAMPLES)
    for row, name in enumerate(NODES):
        np.testing.assert_allclose(used[row], history.used[name], rtol=1e-9)


def test_without_port_stripping_instance_addresses_match_no_node(prometheus, history):
    querier = _querier(prometheus, node_label="instance", instance_strip_port=False)
    assert np.isnan(querier.node_memory_used(NODES, _start(history), STEP, SAMPLES)).all()


def test_not_ready_episodes_and_oom_kills_are_counted_from_the_real_series(prometheus, history):
    querier = _querier(prometheus)
    ready = querier.node_ready(NODES, _start(history), STEP, SAMPLES)
    assert notready_episodes(ready).tolist() == [0.0, 2.0, 0.0, 0.0]
    counter = querier.node_oom_counter(NODES, _start(history), STEP, SAMPLES)
    assert counter_increase(counter).tolist() == [0.0, 0.0, 3.0, 0.0]
    assert querier.pod_oom_kills_by_node(NODES, history.end).tolist() == [0.0, 1.0, 0.0, 0.0]


def test_pod_peaks_sum_containers_without_the_pod_cgroup_and_pause_and_oom_kills_are_flagged(prometheus, history):
    querier = _querier(prometheus)
    peaks = querier.pod_memory_peaks(history.end)
    assert peaks[("ml", "llm-0")] == pytest.approx(history.peak_llm0)
    assert peaks[("ml", "llm-1")] == pytest.approx(history.peak_llm1)
    assert querier.pod_oom_killed(history.end) == frozenset({("ml", "llm-1")})


def test_progress_history_is_one_series_per_job_from_the_configured_metric(prometheus, history):
    series = _querier(prometheus).progress_history(_start(history), history.end, STEP)
    assert set(series) == {"llm"}
    assert len(series["llm"]) == SAMPLES
    assert series["llm"].values[-1] == pytest.approx(0.8)  # the best replica


def test_an_unknown_metric_in_the_settings_is_a_clear_error_not_a_crash(prometheus, history):
    querier = _querier(prometheus, progress_metric="guardgrid_no_such_metric")
    assert querier.progress_history(_start(history), history.end, STEP) == {}


def _cluster(clock) -> InMemoryKubeAPI:
    slot = training_pod("standby-llm-0", "w3")
    slot["metadata"]["labels"] = {keys.STANDBY_FOR: "llm", keys.MANAGED: "true"}
    slot["spec"]["priorityClassName"] = keys.PRIORITY_CLASS_STANDBY
    return InMemoryKubeAPI([node(n) for n in NODES] + [training_pod("llm-0", "w1"), training_pod("llm-1", "w2"),
                                                       plain_pod("web-0", "w3"), slot], clock=clock)


def _cycle(url: str, history, **overrides):
    clock = Clock(history.end + 30)
    api = _cluster(clock)
    cache = ClusterCache(api)
    cache.sync_now()
    settings = _settings(url, **overrides)
    cycle = PredictorCycle(settings, cache.state, PrometheusSource(settings), api, clock=clock)
    return cycle, api, clock, cache


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name)


def test_a_full_cycle_against_prometheus_publishes_a_fresh_snapshot(prometheus, history):
    cycle, api, clock, _ = _cycle(prometheus.url, history, shortfall_target=0.001)
    report = cycle.run()
    snapshot = report.snapshot
    assert not snapshot.stale and report.source == "prometheus" and snapshot.generated_at == clock.now
    assert set(snapshot.nodes) == set(NODES)
    assert snapshot.nodes["w2"].forecast_mean_bytes == pytest.approx(60 * GiB, rel=0.03)
    assert snapshot.nodes["w1"].forecast_mean_bytes > history.used["w1"][-5:].mean()  # it trends upwards
    prior = 0.01 * 24
    assert snapshot.nodes["w2"].fault_rate_per_hour == pytest.approx((2 + 1 + prior) / (2 + 24))  # 2 NotReady, 1 OOM
    assert snapshot.nodes["w3"].fault_rate_per_hour == pytest.approx((3 + prior) / (2 + 24))
    assert snapshot.workloads["llm"].peak_memory_bytes == pytest.approx(history.peak_llm1 * 1.2)  # OOM-bumped
    assert _gauge("guardgrid_prometheus_up") == 1.0
    assert _gauge("guardgrid_predictor_last_success_timestamp_seconds") == clock.now
    assert [(s.pod, s.node, s.state) for s in snapshot.standby] == [("ml/standby-llm-0", "w3", "ready")]


def test_when_prometheus_stops_the_last_forecast_is_kept_stale_and_no_slot_is_deleted(tmp_path, history):
    server = PrometheusServer.start(tmp_path / "prometheus", history.series())
    try:
        cycle, api, clock, cache = _cycle(server.url, history, http_timeout_seconds=1.0, shortfall_target=0.001)
        good = cycle.run()
        kept = [s.pod for s in good.snapshot.standby]
        assert not good.snapshot.stale and kept == ["ml/standby-llm-0"]
    finally:
        server.stop()
    clock.now += 120
    service = PredictorService(cycle.settings, api, cycle.source, clock=clock, cache=cache)
    service.cycle = cycle
    report = service.run_once().report
    assert report.snapshot.stale and "unreachable" in report.reason
    assert report.snapshot.generated_at == good.snapshot.generated_at
    assert report.snapshot.nodes == good.snapshot.nodes
    assert [s.pod for s in report.snapshot.standby] == kept and api.get_raw("pods", "ml/standby-llm-0") is not None
    client = create_app(cycle.settings, start=False, service=service).test_client()
    body = client.get("/v1/snapshot").get_json()
    assert body["stale"] is True and body["source"] == "prometheus"
    metrics = client.get("/metrics").get_data(as_text=True)
    assert "guardgrid_prometheus_up 0.0" in metrics
    assert _gauge("guardgrid_predictor_last_success_timestamp_seconds") == good.snapshot.generated_at  # unchanged
    assert client.get("/healthz").status_code == 200  # Prometheus down is not a predictor health problem


def test_a_hanging_prometheus_costs_one_timeout_not_a_stuck_cycle(history):
    silent = SilentServer()
    try:
        settings = _settings(silent.url, http_timeout_seconds=0.3)
        began = time.monotonic()
        with pytest.raises(SourceUnavailable, match="did not answer within 0.3s"):
            PrometheusSource(settings).fetch(NODES, history.end, want_progress=False)
        assert time.monotonic() - began < 3.0
    finally:
        silent.stop()


def test_an_unreachable_prometheus_marks_the_first_snapshot_stale_and_empty(history):
    cycle, api, clock, _ = _cycle(f"http://127.0.0.1:{free_port()}", history)
    report = cycle.run()
    assert report.snapshot.stale and report.snapshot.nodes == {} and "unreachable" in report.reason
    assert _gauge("guardgrid_prometheus_up") == 0.0
    assert api.get_raw("pods", "ml/standby-llm-0") is not None


def test_a_prometheus_without_the_metrics_is_treated_as_no_data(tmp_path, history):
    server = PrometheusServer.start(tmp_path / "empty")
    try:
        cycle, api, _, _ = _cycle(server.url, history)
        report = cycle.run()
    finally:
        server.stop()
    assert report.snapshot.stale and "no node memory data" in report.reason and "GUARDGRID_NODE_LABEL" in report.reason
    assert _gauge("guardgrid_prometheus_up") == 0.0
    assert api.get_raw("pods", "ml/standby-llm-0") is not None
