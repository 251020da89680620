"""A no-op scheduler extender on the extender's own stack: the benchmark's baseline.

`gunicorn -c extender/gunicorn_conf.py "bench.noop_extender:create_app()"` (from the repository root) runs
it with exactly the extender's worker settings. Each endpoint reads the request body (so the bytes cross
the same socket and WSGI layers) but parses nothing, and answers a fixed reply that kube-scheduler accepted
(tests/fixtures/kube-scheduler/node-cache/*-result-accepted.json). Like the extender, the verbs go through
extender.hot_path's WSGI middleware (Flask only for what it passes on), with the same body limit: without
it the no-op would carry Flask's ~0.14 ms per request that the extender no longer pays, and the ratio
below would flatter the extender.

Why: `extender p99 / no-op p99` separates what GuardGrid's decisions cost from what gunicorn, Flask, the
loopback TCP connection and the scheduler's request sizes cost anyway; only the former is ours to improve.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, Response

from extender.hot_path import serve_hot_verbs
from guardgrid.config import load_settings

__all__ = ["create_app"]

ACCEPTED = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "kube-scheduler" / "node-cache"
JSON = "application/json"


def create_app() -> Flask:
    filter_reply = (ACCEPTED / "filter-result-accepted.json").read_bytes()
    prioritize_reply = (ACCEPTED / "prioritize-result-accepted.json").read_bytes()
    app = Flask("guardgrid-noop-extender")
    max_body_bytes = load_settings().max_body_bytes  # the extender's limit: the same requests take each path
    app.config["MAX_CONTENT_LENGTH"] = max_body_bytes
    serve_hot_verbs(app, {"filter": lambda body: (filter_reply, None),
                          "prioritize": lambda body: (prioritize_reply, None)}, max_body_bytes)

    @app.get("/readyz")
    def readyz() -> Response:
        return Response(b'{"status":"ready"}', mimetype=JSON)

    return app
