"""The extender's HTTP app: `gunicorn -c extender/gunicorn_conf.py "extender.app:create_app()"`.

Thin on purpose: parse (extender.wire), decide (extender.service over guardgrid.placement), answer. Nothing
here calls the API server or Prometheus; the node/pod cache and the predictor snapshot are refreshed by
background threads started here, one set per gunicorn worker. POST /filter, /prioritize and /preempt are
answered by extender.hot_path's WSGI middleware ahead of Flask (Flask's per-request machinery cost ~0.14 ms
a request); Flask answers the rest, and the same verbs when the middleware passes them on.

Answers: 200 with the result; 400 for a body we cannot read (with the reason); 404 for an unknown path;
405 for a wrong method; 413 above GUARDGRID_MAX_BODY_BYTES; 503 while the cache has not synced (with
`ignorable: true` the scheduler then skips us rather than trusting an empty cache).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from extender import metrics
from extender.hot_path import serve_hot_verbs
from extender.service import ExtenderService
from extender.wire import error_body, parse_preemption_args
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
        metrics.TALLY.start()
        cache.start()
        if refresher is not None and settings.predictor_url:
            refresher.start()

    app = Flask("guardgrid-extender")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["guardgrid"] = {"cache": cache, "service": service, "refresher": refresher}

    # The hot verbs are answered by extender.hot_path ahead of Flask (~0.14 ms per request less); Flask
    # serves what it passes on (chunked bodies) through the same decisions, and its 404/405/413 answers.
    serve_hot_verbs(app, {
        "filter": service.filter_body_then,  # (answer, after-work to run once the answer is sent)
        "prioritize": lambda body: (service.prioritize_body(body), None),
        "preempt": lambda body: (service.preempt(parse_preemption_args(body)), None),
    }, settings.max_body_bytes, ready=lambda: cache.synced, observe=metrics.TALLY.request)

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
        metrics.TALLY.flush()  # this worker's requests up to now; the other workers' within a second
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
        if request.url_rule is None and verb in ("filter", "prioritize", "preempt"):  # routing failed (405):
            metrics.requests(verb, str(code)).inc()  # the view, which counts the rest (413, 400), never ran
        return _json(error_body(message), code)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:  # a bug, not bad input: log it, keep serving
        log.exception("unexpected error on %s", request.path)
        return _json(error_body(f"internal error: {exc.__class__.__name__}"), 500)

    return app
