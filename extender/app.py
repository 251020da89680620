"""The extender's HTTP app: `gunicorn -c extender/gunicorn_conf.py "extender.app:create_app()"`.

Thin on purpose: parse (extender.wire), decide (extender.service over guardgrid.placement), answer. Nothing
here calls the API server or Prometheus; the node/pod cache and the predictor snapshot are refreshed by
background threads started here, one set per gunicorn worker.

Answers: 200 with the result; 400 for a body we cannot read (with the reason); 404 for an unknown path;
405 for a wrong method; 413 above GUARDGRID_MAX_BODY_BYTES; 503 while the cache has not synced (with
`ignorable: true` the scheduler then skips us rather than trusting an empty cache).
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from extender import metrics
from extender.service import ExtenderService
from extender.wire import WireError, error_body, parse_extender_args, parse_preemption_args
from guardgrid.config import Settings, load_settings
from guardgrid.informer import ClusterCache
from guardgrid.kubeapi import KubeAPI, make_kube_api
from guardgrid.metrics import CONTENT_TYPE_LATEST, render_metrics
from guardgrid.snapshot import Snapshot
from guardgrid.snapshot_client import SnapshotRefresher

__all__ = ["create_app"]

log = logging.getLogger(__name__)
JSON = "application/json"
# Cyclic-collector thresholds in an extender worker (Python's default: 700, 10, 10). A full-NodeList request
# decodes ~10^5 objects that all die with the request; at 700 they were traversed and promoted ~140 times per
# request, and older generations were rescanned often. Interleaved A/B on the benchmark: full-NodeList p50
# 15.3 vs 17.9 ms, p99 26 vs 32 ms, node-cache p99 2.9 vs 3.8 ms. The cost: cyclic garbage (rare here: the
# cache is acyclic) waits longer for a collection.
GC_THRESHOLDS = (100_000, 20, 100)


def _json(body: bytes, status: int = 200) -> Response:
    return Response(body, status=status, mimetype=JSON)


def _logged(work: Callable[[], None]) -> Callable[[], None]:
    """Work run after a response is sent: an error there is a bug to log, never a reason to drop the
    connection (gunicorn would, on an exception from closing the response)."""
    def run() -> None:
        try:
            work()
        except Exception:  # noqa: BLE001 - logged with its traceback; the answer already went out
            log.exception("work after the response failed")
    return run


def create_app(settings: Settings | None = None, api: KubeAPI | None = None,
               snapshot: Callable[[], Snapshot | None] | None = None, start: bool = True) -> Flask:
    """Build the app. Tests pass `api` (an InMemoryKubeAPI) and/or `snapshot`; production passes nothing."""
    settings = settings or load_settings()
    gc.set_threshold(*GC_THRESHOLDS)
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    api = api or make_kube_api(settings)
    cache = ClusterCache(api, watch_timeout=settings.cache_resync_seconds)
    refresher: SnapshotRefresher | None = None
    service = ExtenderService(cache.state, settings, snapshot or (lambda: None))
    if snapshot is None:
        # Align each new snapshot to the node table in the refresher thread, not in the first request after it.
        refresher = SnapshotRefresher(settings.predictor_url, settings.snapshot_refresh_seconds,
                                      settings.http_timeout_seconds,
                                      on_update=lambda s: service.aligner.align(s, cache.state.table))
        service.snapshot = lambda: refresher.latest  # read the latest reference, never block
    if start:
        cache.start()
        if refresher is not None and settings.predictor_url:
            refresher.start()

    app = Flask("guardgrid-extender")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["guardgrid"] = {"cache": cache, "service": service, "refresher": refresher}

    def handle(verb: str, decide: Callable[[bytes], bytes]) -> Response:
        started = time.perf_counter()
        status = 200
        try:
            if not cache.synced:
                status = 503
                return _json(error_body("GuardGrid node cache not synced yet; skip this extender"), status)
            try:
                body = decide(request.get_data(cache=False))
            except WireError as exc:
                status = exc.status
                return _json(error_body(f"{verb}: {exc}"), status)
            return _json(body)
        finally:
            metrics.requests(verb, str(status)).inc()
            metrics.latency(verb).observe(time.perf_counter() - started)

    @app.post("/filter")
    def filter_() -> Response:
        afterwards: list[Callable[[], None]] = []

        def decide(body: bytes) -> bytes:
            answer, after = service.filter_then(parse_extender_args(body))
            afterwards.append(after)
            return answer

        response = handle("filter", decide)
        for after in afterwards:  # once the answer is sent: see ExtenderService.filter_then
            response.call_on_close(_logged(after))
        return response

    @app.post("/prioritize")
    def prioritize() -> Response:
        return handle("prioritize", service.prioritize_body)

    @app.post("/preempt")
    def preempt() -> Response:
        return handle("preempt", lambda body: service.preempt(parse_preemption_args(body)))

    @app.get("/healthz")
    def healthz() -> Response:
        return _json(b'{"status":"ok"}')

    @app.get("/readyz")
    def readyz() -> Response:
        if cache.synced:
            return _json(b'{"status":"ready"}')
        return _json(error_body("node/pod cache not synced yet"), 503)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        age = service.snapshot_age()
        metrics.SNAPSHOT_AGE.set(age)
        metrics.CACHE_SYNCED.set(1 if cache.synced else 0)
        return Response(render_metrics(), mimetype=CONTENT_TYPE_LATEST)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        if code == 413:
            message = f"request body larger than GUARDGRID_MAX_BODY_BYTES ({settings.max_body_bytes} bytes)"
        elif code == 404:
            message = f"unknown path {request.path}: the extender serves POST /filter, /prioritize, /preempt"
        else:
            message = exc.description or exc.name
        verb = request.path.strip("/") or "unknown"
        if verb in ("filter", "prioritize", "preempt"):
            metrics.requests(verb, str(code)).inc()
        return _json(error_body(message), code)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:  # a bug, not bad input: log it, keep serving
        log.exception("unexpected error on %s", request.path)
        return _json(error_body(f"internal error: {exc.__class__.__name__}"), 500)

    return app
