"""The predictor's HTTP surface and process: /v1/snapshot, /metrics, /healthz, the loop thread, and
`python -m predictor` from start to SIGTERM."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import NODE_CACHE_CLUSTER
from guardgrid.config import load_settings
from guardgrid.informer import ClusterCache
from guardgrid.snapshot import Snapshot
from predictor.app import create_app
from predictor.service import PredictorService
from predictor.sources import StaticSource
from prometheus_server import free_port
from test_predictor_cycle import Clock, cluster, history

ROOT = Path(__file__).parent.parent


def _service(**settings) -> PredictorService:
    clock = Clock()
    api = cluster(clock)
    service = PredictorService(load_settings({}, **settings), api, StaticSource(history(notready={"n0": 4, "n1": 4})),
                               clock=clock)
    return service


def test_before_the_first_cycle_the_snapshot_is_503_with_a_reason():
    client = create_app(start=False, service=_service()).test_client()
    response = client.get("/v1/snapshot")
    assert response.status_code == 503
    assert "no snapshot yet" in response.get_json()["error"]


def test_after_a_cycle_the_snapshot_follows_the_shared_schema_and_names_its_source():
    service = _service()
    service.cache.sync_now()
    assert service.run_once() is not None
    response = create_app(start=False, service=service).test_client().get("/v1/snapshot")
    assert response.status_code == 200 and response.mimetype == "application/json"
    snapshot = Snapshot.from_json(response.data)  # the reader the extender and webhook use
    assert set(snapshot.nodes) == {"n0", "n1", "n2", "n3", "n4"} and not snapshot.stale
    assert json.loads(response.data)["source"] == "static"


def test_a_cycle_before_the_cache_synced_publishes_nothing_and_says_why():
    service = _service()
    assert service.run_once() is None
    body = create_app(start=False, service=service).test_client().get("/v1/snapshot").get_json()
    assert "cache not synced" in body["error"]


def test_metrics_show_the_predictor_gauges():
    service = _service()
    service.cache.sync_now()
    assert service.elector.try_acquire()  # the leader creates the slot the plan wants
    service.run_once()
    text = create_app(start=False, service=service).test_client().get("/metrics").get_data(as_text=True)
    for line in ('guardgrid_node_oom_risk{node="n0"}', 'guardgrid_node_fault_rate{node="n0"}',
                 'guardgrid_standby_slots{state="wanted"} 1.0', 'guardgrid_standby_slots{state="pending"} 1.0',
                 "guardgrid_mode 0.0", "guardgrid_predictor_cycle_duration_seconds_count",
                 "# TYPE guardgrid_migrations_total counter"):
        assert line in text


def test_unknown_paths_and_methods_get_json_errors():
    client = create_app(start=False, service=_service()).test_client()
    missing = client.get("/v1/nope")
    assert missing.status_code == 404 and "/v1/snapshot" in missing.get_json()["error"]
    assert client.post("/v1/snapshot", data=b"{}").status_code == 405


def test_the_loop_thread_runs_cycles_and_stops_cleanly():
    service = _service(cycle_seconds=0.1)
    client = create_app(start=False, service=service).test_client()
    service.start()
    try:
        assert service.wait_for_cycles(3, timeout=10)
        assert client.get("/v1/snapshot").status_code == 200
        health = client.get("/healthz")
        assert health.status_code == 200 and health.get_json()["status"] == "ok"
    finally:
        service.stop()
    assert not service._thread.is_alive()
    health = client.get("/healthz")
    assert health.status_code == 503 and "stopped" in health.get_json()["reason"]


def _get(port: int, path: str) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_python_m_predictor_serves_the_demo_snapshot_and_exits_cleanly_on_sigterm(tmp_path):
    port = free_port()
    env = {**os.environ, "GUARDGRID_CLUSTER_FILE": str(NODE_CACHE_CLUSTER), "GUARDGRID_PROMETHEUS_URL": "",
           "GUARDGRID_LISTEN": f"127.0.0.1:{port}", "GUARDGRID_CYCLE_SECONDS": "0.2",
           "GUARDGRID_WORKER_TMP_DIR": str(tmp_path), "HOME": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "predictor"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        status, body = 0, b""
        while status != 200:
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "the predictor never published a snapshot"
            try:
                status, body = _get(port, "/v1/snapshot")
            except OSError:
                status = 0
            if status != 200:
                threading.Event().wait(0.05)
        snapshot = json.loads(body)
        assert snapshot["source"] == "synthetic" and snapshot["kind"] == "Snapshot"
        assert set(snapshot["nodes"]) == {f"worker-{i}" for i in range(1, 7)}
        assert _get(port, "/healthz")[0] == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            code = process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
            pytest.fail("the predictor did not exit within 20 s of SIGTERM")
    stderr = process.stderr.read().decode()
    process.stderr.close()
    assert code == 0, stderr
    assert "SYNTHETIC" in stderr  # the demo source says what it is
    assert not (tmp_path / ".gunicorn").exists()  # no control socket on a read-only root filesystem


def test_a_bad_setting_stops_start_up_with_the_variable_named():
    env = {**os.environ, "GUARDGRID_CYCLE_SECONDS": "soon"}
    result = subprocess.run([sys.executable, "-m", "predictor"], cwd=ROOT, env=env, capture_output=True, timeout=30)
    assert result.returncode == 2 and b"GUARDGRID_CYCLE_SECONDS" in result.stderr


def test_a_cache_given_to_the_service_is_used_as_is():
    service = _service()
    cache = ClusterCache(service.api)
    other = PredictorService(service.settings, service.api, service.source, cache=cache)
    assert other.cache is cache and other.cycle.state is cache.state
