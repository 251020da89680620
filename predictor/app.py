"""The predictor's HTTP app: `predictor.app:create_app()` (run by `python -m predictor`).

Endpoints:
- `GET /v1/snapshot`: the latest snapshot (schema: guardgrid/snapshot.py) plus `"source"` (`prometheus`,
  `synthetic` or `static`); 503 with a reason until the first cycle has produced one.
- `GET /metrics`: Prometheus text format.
- `GET /healthz`: 200 while the cycle loop is alive (Prometheus being down is not a health problem: the
  snapshot says `stale` instead), 503 with the reason otherwise.
Anything else: 404/405 with a JSON reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import orjson
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from guardgrid.config import Settings, load_settings
from guardgrid.kubeapi import KubeAPI, make_kube_api
from guardgrid.metrics import CONTENT_TYPE_LATEST, render_metrics
from predictor.service import PredictorService
from predictor.sources import MetricsSource

__all__ = ["create_app", "stop_all"]

log = logging.getLogger(__name__)
JSON = "application/json"

_services: list[PredictorService] = []
_services_lock = threading.Lock()


def _json(payload: object, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status=status, mimetype=JSON)


def create_app(settings: Settings | None = None, api: KubeAPI | None = None, source: MetricsSource | None = None,
               start: bool = True, clock: Callable[[], float] = time.time,
               service: PredictorService | None = None) -> Flask:
    """Build the app (and, with `start`, its loop). Tests pass `api`/`source` or a ready `service`."""
    settings = settings or load_settings()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if service is None:
        service = PredictorService(settings, api or make_kube_api(settings), source, clock)
    if start:
        service.start()
        with _services_lock:
            _services.append(service)

    app = Flask("guardgrid-predictor")
    app.extensions["guardgrid"] = {"service": service}

    @app.get("/v1/snapshot")
    def snapshot() -> Response:
        published = service.latest
        if published is None:
            reason = service.last_error or "the first predictor cycle has not finished yet"
            return _json({"error": f"no snapshot yet: {reason}"}, 503)
        return Response(published.body, mimetype=JSON)

    @app.get("/metrics")
    def metrics_endpoint() -> Response:
        return Response(render_metrics(), mimetype=CONTENT_TYPE_LATEST)

    @app.get("/healthz")
    def healthz() -> Response:
        ok, reason = service.healthy()
        published = service.latest
        body = {"status": "ok" if ok else "unhealthy", "reason": reason, "cycles": service.cycles,
                "leader": service.elector.is_leader(),
                "stale": published.snapshot.stale if published is not None else None}
        return _json(body, 200 if ok else 503)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        message = exc.description or exc.name
        if code == 404:
            message = "unknown path: the predictor serves GET /v1/snapshot, /metrics, /healthz"
        return _json({"error": message}, code)

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> Response:  # a bug, not bad input: log it, keep serving
        log.exception("unexpected error")
        return _json({"error": f"internal error: {exc.__class__.__name__}"}, 500)

    return app


def stop_all() -> None:
    """Stop every service this process started (gunicorn's worker_exit hook, tests)."""
    with _services_lock:
        services = list(_services)
        _services.clear()
    for service in services:
        service.stop()
