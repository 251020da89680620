"""A no-op scheduler extender on the extender's own stack: the benchmark's baseline.

`gunicorn -c extender/gunicorn_conf.py "bench.noop_extender:create_app()"` (from the repository root) runs
it with exactly the extender's worker settings. Each endpoint reads the request body (so the bytes cross
the same socket and WSGI layers) but parses nothing, and answers a fixed reply that kube-scheduler accepted
(tests/fixtures/kube-scheduler/node-cache/*-result-accepted.json).

Why: `extender p99 / no-op p99` separates what GuardGrid's decisions cost from what gunicorn, Flask, the
loopback TCP connection and the scheduler's request sizes cost anyway; only the former is ours to improve.
"""

from __future__ import annotations

from pathlib import Path

from flask import Flask, Response, request

__all__ = ["create_app"]

ACCEPTED = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "kube-scheduler" / "node-cache"
JSON = "application/json"


def create_app() -> Flask:
    filter_reply = (ACCEPTED / "filter-result-accepted.json").read_bytes()
    prioritize_reply = (ACCEPTED / "prioritize-result-accepted.json").read_bytes()
    app = Flask("guardgrid-noop-extender")

    @app.post("/filter")
    def filter_() -> Response:
        request.get_data(cache=False)
        return Response(filter_reply, mimetype=JSON)

    @app.post("/prioritize")
    def prioritize() -> Response:
        request.get_data(cache=False)
        return Response(prioritize_reply, mimetype=JSON)

    @app.get("/readyz")
    def readyz() -> Response:
        return Response(b'{"status":"ready"}', mimetype=JSON)

    return app
