"""The webhook's HTTP app: `gunicorn -c webhook/gunicorn_conf.py "webhook.app:create_app()"`.

Thin on purpose: read the body (bounded by GUARDGRID_MAX_BODY_BYTES, 413 above), hand it to
`webhook.handler.answer_review`, count the result and the latency. The API server appends `?timeout=5s` to
the URL; query strings are ignored. Answers: 200 with an AdmissionReview (allowed, denied, or admitted
untouched); 400 with a plain-text reason for a body that is not an AdmissionReview; 413 for an oversize body.
"""

from __future__ import annotations

import logging
import time
from typing import Final

from flask import Flask, Response, request
from prometheus_client import Counter, Histogram
from werkzeug.exceptions import RequestEntityTooLarge

from guardgrid import metrics as names
from guardgrid.config import ConfigError, Settings, load_settings
from guardgrid.metrics import CONTENT_TYPE_LATEST, render_metrics
from webhook.advice import AdviceCache
from webhook.handler import answer_review
from webhook.mutation import AdviceLookup

__all__ = ["create_app", "REVIEWS", "LATENCY", "RESULTS"]

log = logging.getLogger(__name__)
RESULTS: Final = ("mutated", "unchanged", "skipped", "denied", "error")

REVIEWS = Counter(names.WEBHOOK_REVIEWS.removesuffix("_total"),
                  "AdmissionReviews answered, by result (mutated, unchanged, skipped, denied, error).", ["result"])
LATENCY = Histogram(names.WEBHOOK_LATENCY, "Time to answer one AdmissionReview.", buckets=names.LATENCY_BUCKETS)
for _result in RESULTS:  # every series exists from the start, so rate() and alerts see zeros, not gaps
    REVIEWS.labels(result=_result)


def _read_body(limit: int) -> bytes | None:
    """The request body, or None when it is larger than `limit`.

    With Content-Length, werkzeug refuses an oversize body before reading it. Without (chunked transfer),
    werkzeug's own limit would silently truncate the body, so the raw stream is read up to `limit + 1` bytes
    here and an overflow is reported as such, not as a confusing "not JSON".
    """
    if request.content_length is not None:
        try:
            return request.get_data(cache=False)
        except RequestEntityTooLarge:
            return None
    stream = request.environ.get("wsgi.input")
    body = stream.read(limit + 1) if stream is not None else b""
    return None if len(body) > limit else body


def create_app(settings: Settings | None = None, advice: AdviceLookup | None = None) -> Flask:
    """Build the app. Tests pass `settings` and/or `advice`; production passes nothing (GUARDGRID_* env)."""
    settings = settings or load_settings()
    if not settings.stage_root.startswith("/"):
        raise ConfigError(f"GUARDGRID_STAGE_ROOT={settings.stage_root!r}: must be an absolute path")
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    lookup = advice or AdviceCache.from_settings(settings).lookup

    app = Flask("guardgrid-webhook")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes

    @app.post("/mutate")
    def mutate() -> Response:
        started = time.perf_counter()
        body = _read_body(settings.max_body_bytes)
        if body is None:
            REVIEWS.labels(result="error").inc()
            return Response(f"body larger than GUARDGRID_MAX_BODY_BYTES={settings.max_body_bytes}\n", status=413,
                            mimetype="text/plain")
        answer = answer_review(body, settings, lookup)
        REVIEWS.labels(result=answer.result).inc()
        LATENCY.observe(time.perf_counter() - started)
        if answer.status != 200:
            log.warning("answered %d: %s", answer.status, answer.body.decode(errors="replace").strip())
        return Response(answer.body, status=answer.status, content_type=answer.content_type)

    @app.get("/healthz")
    def healthz() -> Response:
        return Response("ok\n", mimetype="text/plain")

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(render_metrics(), content_type=CONTENT_TYPE_LATEST)

    return app
