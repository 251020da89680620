"""The extender's hot verbs (POST /filter, /prioritize, /preempt) answered at the WSGI level, ahead of Flask.

Why: Flask's per-request machinery (request and app contexts, URL routing, a Response object) costs ~0.14 ms
per request on the 2-core benchmark VM with cold caches: a no-op answering a filter+prioritize pair directly
in WSGI took 0.37 ms p50 per request, the same no-op through Flask 0.51 ms, on the same gunicorn settings.
kube-scheduler calls these verbs for every pod, so that is paid on every scheduling cycle.

How: `HotVerbs` wraps the Flask app's `wsgi_app` (Flask's middleware pattern) and serves a hot verb itself
only when it can answer exactly as the Flask route would: POST, a plain Content-Length within the body
limit. Everything else (other paths and methods, chunked bodies, bodies over the limit) goes to Flask,
whose routes for the same verbs call the same `HotVerbs.answer`, so both paths share one decision path and
Flask keeps its 404/405/413 answers. `serve_hot_verbs` wires both.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException
from werkzeug.http import HTTP_STATUS_CODES

from extender.wire import WireError, error_body

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["NOT_SYNCED", "After", "Answer", "Decide", "HotVerbs", "run_logged", "serve_hot_verbs", "status_line"]

log = logging.getLogger(__name__)
JSON = "application/json"
NOT_SYNCED = "GuardGrid node cache not synced yet; skip this extender"

After = Callable[[], None]  # work to run once the answer is on the wire (ExtenderService.filter_then)
Decide = Callable[[bytes], tuple[bytes, After | None]]  # request body -> (200 answer, after-work or None)
Answer = tuple[int, bytes, After | None]  # (status, body, after-work)
Observe = Callable[[str, int, float], None]  # (verb, status, seconds), once per answered request


def status_line(code: int) -> str:
    """The status line Werkzeug's Response writes for `code` ("503 SERVICE UNAVAILABLE"): the same bytes on
    the wire whichever path answered."""
    reason = HTTP_STATUS_CODES.get(code)
    return f"{code} {reason.upper()}" if reason else f"{code} UNKNOWN"


class _ThenRun:
    """A one-chunk WSGI response whose `close()` runs the work that waits for the answer to be sent.

    Why close(): the server calls it after writing the response and before reading the connection's next
    request (PEP 3333; gunicorn's gthread worker does), which is the ordering ExtenderService.filter_then
    relies on. An error there is logged, never raised: gunicorn would drop the kept-alive connection.
    """

    __slots__ = ("_body", "_work")

    def __init__(self, body: bytes, work: list[After]) -> None:
        self._body = body
        self._work = work

    def __iter__(self) -> Iterator[bytes]:
        yield self._body

    def close(self) -> None:
        work, self._work = self._work, []  # at most once, even if closed twice
        for item in work:
            run_logged(item)


def run_logged(after: After) -> None:
    """Run work that follows a sent answer: a failure there is a bug to log, not a reason to fail the
    connection."""
    try:
        after()
    except Exception:  # logged with its traceback: the answer already went out
        log.exception("work after the response failed")


def _content_length(environ: WSGIEnvironment) -> int | None:
    """CONTENT_LENGTH when it is plain decimal digits; None (absent, chunked, malformed) sends the request to
    Flask, which has its own rules for those."""
    raw = environ.get("CONTENT_LENGTH")
    if not raw or not raw.isascii() or not raw.isdigit():
        return None
    return int(raw)


def _reader(environ: WSGIEnvironment, length: int) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            body: bytes = environ["wsgi.input"].read(length)
        except OSError as exc:  # the socket failed mid-body: what Werkzeug calls a client disconnect
            raise WireError(f"request body unreadable after the headers ({exc.__class__.__name__}): "
                            "client disconnected?") from None
        if len(body) < length:
            raise WireError(f"request body ended after {len(body)} of the {length} bytes its Content-Length "
                            "announced: client disconnected?")
        return body
    return read


class HotVerbs:
    """WSGI middleware: `POST /<verb>` with a Content-Length answered here, the rest by `app`.

    `verbs` maps a verb name ("filter") to its decision; `ready` False answers 503 (NOT_SYNCED) so an
    `ignorable` scheduler skips us; `observe` sees every answered request once, with its status and the time
    from the request reaching the app (body read included) to the answer.
    """

    def __init__(self, app: WSGIApplication, verbs: Mapping[str, Decide], max_body_bytes: int,
                 ready: Callable[[], bool] = lambda: True, observe: Observe | None = None) -> None:
        self.app = app
        self.verbs = dict(verbs)
        self.max_body_bytes = max_body_bytes
        self.ready = ready
        self.observe = observe
        self._paths = {f"/{verb}": verb for verb in verbs}

    def answer(self, verb: str, read: Callable[[], bytes], later: list[After] | None = None) -> Answer:
        """The answer to one hot-verb request whose body `read` returns, shared by both paths.

        A WireError (unreadable body, short body) is a 4xx with its reason. Anything else escapes to the
        caller, which answers it: the WSGI path with a 500, Flask with its error handlers (an HTTPException
        from Flask's body read is Flask's 413 or 400). Each is observed once, with the status it gets and
        the time until its answer was ready: now, or, given `later`, by a call appended there for the
        caller to run once the answer is sent (the extender's observer only counts in process since
        extender.metrics.RequestTally, ~1 us, so where it runs no longer matters much).
        """
        started = time.perf_counter()
        status = 500
        try:
            if not self.ready():
                status = 503
                return status, error_body(NOT_SYNCED), None
            try:
                body, after = self.verbs[verb](read())
            except WireError as exc:
                status = exc.status
                return status, error_body(f"{verb}: {exc}"), None
            status = 200
            return status, body, after
        except HTTPException as exc:
            status = exc.code or 500
            raise
        finally:
            if self.observe is not None:
                elapsed = time.perf_counter() - started
                if later is None:
                    self.observe(verb, status, elapsed)
                else:
                    later.append(partial(self.observe, verb, status, elapsed))

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        verb = self._paths.get(environ.get("PATH_INFO", ""))
        length = _content_length(environ) if verb is not None and environ.get("REQUEST_METHOD") == "POST" else None
        if verb is None or length is None or length > self.max_body_bytes:
            return self.app(environ, start_response)
        later: list[After] = []  # run once the answer is sent: its observation, then the verb's after-work
        try:
            status, body, after = self.answer(verb, _reader(environ, length), later)
        except Exception as exc:  # a bug, not bad input: log it, answer 500, keep serving
            log.exception("unexpected error on %s", environ.get("PATH_INFO"))
            status, body, after = 500, error_body(f"internal error: {exc.__class__.__name__}"), None
        if after is not None:
            later.append(after)
        start_response(status_line(status), [("Content-Type", JSON), ("Content-Length", str(len(body)))])
        return _ThenRun(body, later) if later else [body]

    def flask_view(self, verb: str) -> Callable[[], Response]:
        """Flask's route for `verb`: the requests the WSGI path passes on (chunked bodies), same answers."""
        def view() -> Response:
            status, body, after = self.answer(verb, lambda: request.get_data(cache=False))
            response = Response(body, status=status, mimetype=JSON)
            if after is not None:
                response.call_on_close(partial(run_logged, after))
            return response
        view.__name__ = f"{verb}_fallback"
        return view


def serve_hot_verbs(app: Flask, verbs: Mapping[str, Decide], max_body_bytes: int,
                    ready: Callable[[], bool] = lambda: True, observe: Observe | None = None) -> HotVerbs:
    """Route `POST /<verb>` through HotVerbs in front of `app`, with Flask routes behind it for what it
    passes on (and for Flask's 405 on another method)."""
    hot = HotVerbs(app.wsgi_app, verbs, max_body_bytes, ready, observe)
    for verb in hot.verbs:
        app.add_url_rule(f"/{verb}", endpoint=verb, view_func=hot.flask_view(verb), methods=["POST"])
    app.wsgi_app = hot  # type: ignore[method-assign]
    return hot
