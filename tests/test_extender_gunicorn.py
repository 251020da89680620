"""The extender as deployed: gunicorn with two workers, metrics aggregated across them."""

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import NODE_CACHE_CLUSTER, SCHEDULER, wait_for

ROOT = Path(__file__).parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _request(port, method, path, body=None):
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request(method, path, body=body, headers={"Content-Type": "application/json"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.fixture
def gunicorn(tmp_path):
    port = _free_port()
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    env = {**os.environ, "GUARDGRID_CLUSTER_FILE": str(NODE_CACHE_CLUSTER), "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
           "GUARDGRID_EXTENDER_BIND": f"127.0.0.1:{port}", "GUARDGRID_EXTENDER_WORKERS": "2",
           "GUARDGRID_WORKER_TMP_DIR": str(tmp_path)}
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "extender/gunicorn_conf.py",
                                "extender.app:create_app()"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        ready_in_a_row = 0
        while ready_in_a_row < 10:  # both workers answer ready
            assert process.poll() is None, process.stderr.read().decode()
            assert time.monotonic() < deadline, "extender did not become ready"
            try:
                status, _ = _request(port, "GET", "/readyz")
            except OSError:
                status = 0
            ready_in_a_row = ready_in_a_row + 1 if status == 200 else 0
            if status != 200:
                threading.Event().wait(0.05)
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


def test_request_counts_are_summed_over_both_workers(gunicorn):
    """Each worker writes its counts once a second (extender.metrics.RequestTally): the scrape sees all 40
    within that, and never more."""
    body = (SCHEDULER / "node-cache" / "filter-args.json").read_bytes()
    for _ in range(40):
        status, _ = _request(gunicorn, "POST", "/filter", body)
        assert status == 200
    seen: list[float] = []

    def counted() -> float:
        _, text = _request(gunicorn, "GET", "/metrics")
        line = next((l for l in text.decode().splitlines()
                     if l.startswith('guardgrid_extender_requests_total{code="200",verb="filter"}')), "x 0")
        seen.append(float(line.split()[-1]))
        return seen[-1]

    assert wait_for(lambda: counted() >= 40.0, timeout=10)
    assert max(seen) == 40.0
