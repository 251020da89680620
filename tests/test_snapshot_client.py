"""The snapshot over real HTTP: fetch errors fail open, the refresher keeps the last good snapshot."""

import http.server
import threading
import time

import orjson
import pytest

from conftest import NODE_CACHE_CLUSTER, SCHEDULER
from extender.app import create_app
from guardgrid.config import load_settings
from guardgrid.kubeapi.memory import InMemoryKubeAPI
from guardgrid.snapshot import NodeForecast, Snapshot
from guardgrid.snapshot_client import SnapshotRefresher, fetch_snapshot

GiB = 2**30


class _Predictor(http.server.ThreadingHTTPServer):
    """Serves whatever `body`/`status` currently are at /v1/snapshot."""

    def __init__(self):
        self.body = b""
        self.status = 200
        self.hits = threading.Semaphore(0)
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(server.status if self.path == "/v1/snapshot" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(server.body)))
                self.end_headers()
                self.wfile.write(server.body)
                server.hits.release()

            def log_message(self, *args):
                pass

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def predictor():
    server = _Predictor()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def _hot_worker5(generated_at):
    return Snapshot(generated_at=generated_at, nodes={
        f"worker-{i}": NodeForecast(10 * GiB, GiB, 0.001, 0) for i in range(1, 7)} | {
        "worker-5": NodeForecast(60 * GiB, 2 * GiB, 0.001, 64 * GiB)})


def test_fetch_failures_come_back_as_reasons_never_exceptions(predictor):
    assert "GUARDGRID_PREDICTOR_URL is empty" in fetch_snapshot("", 1).error
    predictor.status, predictor.body = 500, b"{}"
    assert "HTTP 500" in fetch_snapshot(predictor.url, 1).error
    predictor.status, predictor.body = 200, b'{"apiVersion": "guardgrid.io/v1", "kind": "Snapshot"}'
    assert "generated_at" in fetch_snapshot(predictor.url, 1).error
    assert "unreachable" in fetch_snapshot("http://127.0.0.1:9", 0.5).error


def test_the_refresher_keeps_the_last_good_snapshot_through_an_outage(predictor):
    predictor.body = _hot_worker5(time.time()).to_json()
    refresher = SnapshotRefresher(predictor.url, interval=60, timeout=1)
    refresher.refresh_once()
    good = refresher.latest
    assert good is not None and refresher.last_error == ""
    predictor.status = 503
    refresher.refresh_once()
    assert refresher.latest is good and "503" in refresher.last_error


def test_the_extender_scores_on_the_predictors_forecast_once_fetched(predictor):
    predictor.body = _hot_worker5(time.time()).to_json()
    settings = load_settings({}, predictor_url=predictor.url, snapshot_refresh_seconds=0.05)
    app = create_app(settings, api=InMemoryKubeAPI.from_file(NODE_CACHE_CLUSTER))
    extensions = app.extensions["guardgrid"]
    try:
        assert extensions["cache"].wait_synced(5)
        assert predictor.hits.acquire(timeout=5)
        deadline = time.monotonic() + 5
        while extensions["refresher"].latest is None and time.monotonic() < deadline:
            predictor.hits.acquire(timeout=0.2)
        result = orjson.loads(app.test_client().post(
            "/filter", data=(SCHEDULER / "node-cache" / "filter-args.json").read_bytes()).data)
        assert "worker-5" in result["FailedNodes"] and "forecast 60Gi" in result["FailedNodes"]["worker-5"]
        text = app.test_client().get("/metrics").data.decode()
        age = float(next(l for l in text.splitlines() if l.startswith("guardgrid_extender_snapshot_age_seconds ")).split()[1])
        assert 0 <= age < 60
    finally:
        extensions["refresher"].stop()
        extensions["cache"].stop()


def test_an_unchanged_snapshot_body_is_not_parsed_again_and_the_same_object_stays(predictor):
    predictor.body = _hot_worker5(time.time()).to_json()
    updates = []
    refresher = SnapshotRefresher(predictor.url, interval=60, timeout=1, on_update=updates.append)
    refresher.refresh_once()
    first = refresher.latest
    refresher.refresh_once()
    assert refresher.latest is first and updates == [first]
    predictor.body = _hot_worker5(time.time() + 1).to_json()
    refresher.refresh_once()
    assert refresher.latest is not first and len(updates) == 2
