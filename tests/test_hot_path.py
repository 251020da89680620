"""The hot verbs answered at the WSGI level (extender.hot_path) say byte for byte what the Flask routes say,
pass to Flask whatever they cannot answer exactly, count every answer once, and run the filter's after-work
only when the server closes the response."""

from __future__ import annotations

import io
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from conftest import NODE_CACHE_CLUSTER, SCHEDULER, captured_state, wait_for
from flask import Flask
from prometheus_client import REGISTRY
from werkzeug.test import EnvironBuilder

from bench.noop_extender import create_app as create_noop_app
from extender import metrics
from extender.app import create_app
from extender.hot_path import NOT_SYNCED, HotVerbs, serve_hot_verbs, status_line
from extender.service import ExtenderService
from extender.wire import WireError, error_body, parse_extender_args, parse_preemption_args
from guardgrid.config import load_settings
from guardgrid.kubeapi.memory import InMemoryKubeAPI

ROOT = Path(__file__).parent.parent
NODE_CACHE = SCHEDULER / "node-cache"
FILTER = (NODE_CACHE / "filter-args.json").read_bytes()
PRIORITIZE = (NODE_CACHE / "prioritize-args.json").read_bytes()
PREEMPT = (NODE_CACHE / "preempt-args.json").read_bytes()
LIMIT = 64 * 1024


class Answered:
    """One WSGI call's status, headers and response iterable, the body read as a server reads it."""

    def __init__(self, app: Callable[..., Iterable[bytes]], environ: dict[str, Any]) -> None:
        self.status = ""
        self.headers: list[tuple[str, str]] = []
        self.iterable = app(environ, self._start_response)

    def _start_response(self, status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        self.status, self.headers = status, list(headers)

    def read(self) -> bytes:
        return b"".join(self.iterable)

    def close(self) -> None:
        close = getattr(self.iterable, "close", None)
        if close is not None:
            close()

    def whole(self) -> tuple[str, list[tuple[str, str]], bytes]:
        """Read and closed, as gunicorn does."""
        body = self.read()
        self.close()
        return self.status, self.headers, body


def environ(path: str, body: bytes = b"", method: str = "POST", chunked: bool = False,
            stream: Any = None, length: int | None = None) -> dict[str, Any]:
    """A WSGI environ as gunicorn builds it (`wsgi.input_terminated`); `chunked` drops CONTENT_LENGTH as a
    chunked request has none; `stream`/`length` give a body that is not what the length announces."""
    env = EnvironBuilder(path=path, method=method, data=body).get_environ()
    env["wsgi.input_terminated"] = True
    if chunked:
        env.pop("CONTENT_LENGTH", None)
    if stream is not None:
        env["wsgi.input"] = stream
    if length is not None:
        env["CONTENT_LENGTH"] = str(length)
    return env


class Delegations:
    """Counts the requests HotVerbs passes on to the Flask app behind it."""

    def __init__(self, hot: HotVerbs) -> None:
        self.paths: list[str] = []
        inner = hot.app

        def spy(env: dict[str, Any], start_response: Any) -> Iterable[bytes]:
            self.paths.append(env["PATH_INFO"])
            return inner(env, start_response)
        hot.app = spy


def sample(name: str, **labels: str) -> float:
    """A metric as a scrape of this worker sees it (/metrics writes the requests counted so far first)."""
    metrics.TALLY.flush()
    return REGISTRY.get_sample_value(name, labels) or 0.0


def counted(verb: str, code: str) -> float:
    return sample("guardgrid_extender_requests_total", verb=verb, code=code)


def timed(verb: str) -> float:
    return sample("guardgrid_extender_request_duration_seconds_count", verb=verb)


@pytest.fixture
def app() -> Iterator[Flask]:
    app = create_app(load_settings({}, max_body_bytes=LIMIT), api=InMemoryKubeAPI.from_file(NODE_CACHE_CLUSTER))
    cache = app.extensions["guardgrid"]["cache"]
    assert cache.wait_synced(5)
    yield app
    cache.stop()


@pytest.fixture
def delegated(app: Flask) -> Delegations:
    assert isinstance(app.wsgi_app, HotVerbs)
    return Delegations(app.wsgi_app)


def test_the_hot_verbs_answer_exactly_what_the_service_decides_on_the_captured_requests(app, delegated):
    reference = ExtenderService(captured_state(), load_settings({}, max_body_bytes=LIMIT))
    expected = {"/filter": reference.filter(parse_extender_args(FILTER)),
                "/prioritize": reference.prioritize_body(PRIORITIZE),
                "/preempt": reference.preempt(parse_preemption_args(PREEMPT))}
    for path, body in (("/filter", FILTER), ("/prioritize", PRIORITIZE), ("/preempt", PREEMPT)):
        status, headers, answer = Answered(app, environ(path, body)).whole()
        assert answer == expected[path], path
        assert status == "200 OK"
        assert headers == [("Content-Type", "application/json"), ("Content-Length", str(len(answer)))]
    assert delegated.paths == []  # all three answered ahead of Flask
    assert orjson.loads(expected["/filter"])["NodeNames"]  # a real answer, not an empty one compared to itself


@pytest.mark.parametrize(("path", "body"), [
    ("/filter", FILTER), ("/prioritize", PRIORITIZE), ("/preempt", PREEMPT),
    ("/filter", b"{not json"), ("/preempt", b"[1, 2]"), ("/prioritize", b'{"NodeNames": ["a"]}'),
])
def test_a_chunked_request_goes_to_flask_and_gets_the_same_status_headers_and_bytes(app, delegated, path, body):
    hot = Answered(app, environ(path, body)).whole()
    assert delegated.paths == []
    through_flask = Answered(app, environ(path, body, chunked=True)).whole()
    assert delegated.paths == [path]
    assert through_flask == hot
    assert hot[0] in ("200 OK", "400 BAD REQUEST")


def test_get_on_a_hot_verb_is_flasks_405_in_json_and_counted_once(app, delegated):
    before = counted("filter", "405")
    status, _, body = Answered(app, environ("/filter", method="GET")).whole()
    assert status == "405 METHOD NOT ALLOWED" and orjson.loads(body)["Error"]
    assert delegated.paths == ["/filter"]
    assert counted("filter", "405") == before + 1


def test_a_body_over_the_limit_is_flasks_413_naming_the_setting_and_counted_once(app, delegated):
    before, timed_before, ok_before = counted("filter", "413"), timed("filter"), counted("filter", "200")
    status, _, body = Answered(app, environ("/filter", b"{" + b" " * LIMIT + b"}")).whole()
    assert status == "413 REQUEST ENTITY TOO LARGE"
    assert orjson.loads(body)["Error"] == f"request body larger than GUARDGRID_MAX_BODY_BYTES ({LIMIT} bytes)"
    assert delegated.paths == ["/filter"]
    assert counted("filter", "413") == before + 1 and counted("filter", "200") == ok_before
    assert timed("filter") == timed_before + 1


def test_a_body_at_the_limit_is_still_answered_ahead_of_flask(app, delegated):
    status, _, body = Answered(app, environ("/filter", b"[" + b" " * (LIMIT - 2) + b"]")).whole()
    assert delegated.paths == []
    assert status == "400 BAD REQUEST" and "must be a JSON object" in orjson.loads(body)["Error"]


def test_a_body_shorter_than_its_content_length_is_a_400_saying_so_and_counted(app, delegated):
    before, ok_before = counted("filter", "400"), counted("filter", "200")
    status, headers, body = Answered(app, environ("/filter", stream=io.BytesIO(FILTER[:100]),
                                                  length=len(FILTER))).whole()
    assert status == "400 BAD REQUEST" and delegated.paths == []
    message = orjson.loads(body)["Error"]
    assert message.startswith("filter: request body ended after 100 of the") and "client disconnected" in message
    assert headers == [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    assert counted("filter", "400") == before + 1 and counted("filter", "200") == ok_before


def test_a_socket_error_while_reading_the_body_is_a_400_too(app):
    class Reset(io.RawIOBase):
        def read(self, size: int = -1) -> bytes:
            raise ConnectionResetError("peer gone")

    status, _, body = Answered(app, environ("/prioritize", stream=Reset(), length=10)).whole()
    assert status == "400 BAD REQUEST" and "ConnectionResetError" in orjson.loads(body)["Error"]


def test_a_malformed_content_length_goes_to_flask(app, delegated):
    env = environ("/filter", FILTER)
    env["CONTENT_LENGTH"] = f" {len(FILTER)}"
    Answered(app, env).whole()
    assert delegated.paths == ["/filter"]


def test_before_the_cache_syncs_a_hot_verb_answers_503_and_counts_it():
    app = create_app(load_settings({}), api=InMemoryKubeAPI.from_file(NODE_CACHE_CLUSTER), start=False)
    delegated = Delegations(app.wsgi_app)
    before, timed_before, ok_before = counted("prioritize", "503"), timed("prioritize"), counted("prioritize", "200")
    status, headers, body = Answered(app, environ("/prioritize", PRIORITIZE)).whole()
    assert (status, body) == ("503 SERVICE UNAVAILABLE", error_body(NOT_SYNCED))
    assert headers == [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    assert delegated.paths == []
    assert counted("prioritize", "503") == before + 1 and timed("prioritize") == timed_before + 1
    assert counted("prioritize", "200") == ok_before


def test_a_hot_answer_is_counted_once_with_its_code_and_timed(app):
    before, timed_before = counted("preempt", "200"), timed("preempt")
    assert Answered(app, environ("/preempt", PREEMPT)).whole()[0] == "200 OK"
    assert counted("preempt", "200") == before + 1 and timed("preempt") == timed_before + 1


def test_the_filters_after_work_waits_for_the_close_that_follows_the_sent_body(app):
    service = app.extensions["guardgrid"]["service"]
    prepared: list[tuple[bytes, bytes]] = []
    original = service.recent.remember
    service.recent.remember = lambda *args: prepared.append(args[-2:]) or original(*args)
    answered = Answered(app, environ("/filter", FILTER))
    passed = orjson.loads(answered.read())["NodeNames"]
    assert len(passed) >= 2 and prepared == []  # the body is out, the preparation still waits
    answered.close()  # what gunicorn does after writing the response
    answered.close()  # and a second close runs nothing twice
    [(request, answer)] = prepared
    assert orjson.loads(request)["NodeNames"] == passed
    assert Answered(app, environ("/prioritize", request)).whole()[2] == answer


def bare(decide: Callable[[bytes], tuple[bytes, Any]], observed: list[tuple[str, int]] | None = None) -> HotVerbs:
    """A HotVerbs with one verb over a Flask app with no routes (anything passed on is a 404)."""
    return serve_hot_verbs(Flask("bare"), {"verb": decide}, LIMIT,
                           observe=None if observed is None else lambda v, s, _: observed.append((v, s)))


def test_after_work_runs_only_after_the_body_was_iterated_and_only_on_close():
    events: list[str] = []
    hot = bare(lambda body: (body.upper(), lambda: events.append("after")))
    answered = Answered(hot, environ("/verb", b"abc"))
    assert events == []
    for chunk in answered.iterable:
        events.append(f"sent {chunk.decode()}")
    assert events == ["sent ABC"]
    answered.close()
    assert events == ["sent ABC", "after"]


def test_a_failing_after_work_is_logged_and_neither_the_answer_nor_the_next_request_suffer(caplog):
    def after() -> None:
        raise ZeroDivisionError("after-work bug")

    hot = bare(lambda body: (b'{"ok":1}', after))
    with caplog.at_level(logging.ERROR):
        status, _, body = Answered(hot, environ("/verb", b"{}")).whole()  # close() raised nothing
    assert (status, body) == ("200 OK", b'{"ok":1}')
    assert "work after the response failed" in caplog.text and "ZeroDivisionError" in caplog.text
    assert Answered(hot, environ("/verb", b"{}")).whole()[0] == "200 OK"


def test_an_unexpected_error_is_a_logged_500_like_flasks_and_counted_as_500(caplog):
    observed: list[tuple[str, int]] = []
    calls = iter([KeyError("boom"), None])

    def decide(body: bytes) -> tuple[bytes, None]:
        error = next(calls)
        if error is not None:
            raise error
        return b"{}", None

    hot = bare(decide, observed)
    with caplog.at_level(logging.ERROR):
        status, headers, body = Answered(hot, environ("/verb", b"x")).whole()
    assert (status, body) == ("500 INTERNAL SERVER ERROR", error_body("internal error: KeyError"))
    assert headers == [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    assert "unexpected error on /verb" in caplog.text and "KeyError: 'boom'" in caplog.text
    assert Answered(hot, environ("/verb", b"x")).whole()[0] == "200 OK"  # the next request is served
    assert observed == [("verb", 500), ("verb", 200)]


def test_a_wire_error_answers_its_own_status_with_the_verb_named():
    hot = bare(lambda body: (_ for _ in ()).throw(WireError("too many", status=422)))
    status, _, body = Answered(hot, environ("/verb", b"x")).whole()
    assert (status, body) == ("422 UNPROCESSABLE ENTITY", error_body("verb: too many"))


def test_status_lines_are_werkzeugs_even_for_codes_it_does_not_know():
    assert status_line(200) == "200 OK"
    assert status_line(413) == "413 REQUEST ENTITY TOO LARGE"
    assert status_line(599) == "599 UNKNOWN"


def test_the_noop_extender_serves_its_verbs_through_the_same_middleware():
    app = create_noop_app()
    assert isinstance(app.wsgi_app, HotVerbs) and sorted(app.wsgi_app.verbs) == ["filter", "prioritize"]
    delegated = Delegations(app.wsgi_app)
    filter_reply = (NODE_CACHE / "filter-result-accepted.json").read_bytes()
    prioritize_reply = (NODE_CACHE / "prioritize-result-accepted.json").read_bytes()
    assert Answered(app, environ("/filter", b'{"Pod":{}}')).whole()[2] == filter_reply
    assert Answered(app, environ("/prioritize", b"not even json")).whole()[2] == prioritize_reply
    assert delegated.paths == []
    assert Answered(app, environ("/filter", b"x", chunked=True)).whole()[2] == filter_reply
    assert Answered(app, environ("/readyz", method="GET")).whole()[0] == "200 OK"
    assert delegated.paths == ["/filter", "/readyz"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _exchange(port: int, raw: bytes, half_close: bool = False) -> bytes:
    """Send raw HTTP/1.1 bytes and read until the server closes (every request says Connection: close)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as connection:
        connection.sendall(raw)
        if half_close:
            connection.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
        return received


@pytest.fixture(scope="module")
def gunicorn_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    tmp = tmp_path_factory.mktemp("hot-path")
    port = _free_port()
    env = {**os.environ, "GUARDGRID_CLUSTER_FILE": str(NODE_CACHE_CLUSTER), "GUARDGRID_EXTENDER_WORKERS": "1",
           "GUARDGRID_EXTENDER_BIND": f"127.0.0.1:{port}", "GUARDGRID_WORKER_TMP_DIR": str(tmp)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "extender/gunicorn_conf.py",
                                "extender.app:create_app()"], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)

    def ready() -> bool:
        assert process.poll() is None, "gunicorn exited"
        try:
            return b" 200 " in _exchange(port, b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        except OSError:
            return False
    try:
        assert wait_for(ready, timeout=30), "extender did not become ready"
        yield port
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(10)


def _post(path: str, body: bytes, headers: str) -> bytes:
    return f"POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{headers}\r\n".encode() + body


def test_under_gunicorn_a_chunked_body_is_served_and_equals_the_content_length_answer(gunicorn_port):
    chunked = b"".join(b"%x\r\n%s\r\n" % (len(FILTER[i:i + 1000]), FILTER[i:i + 1000])
                       for i in range(0, len(FILTER), 1000)) + b"0\r\n\r\n"
    with_length = _exchange(gunicorn_port, _post("/filter", FILTER, f"Content-Length: {len(FILTER)}\r\n"))
    without = _exchange(gunicorn_port, _post("/filter", chunked, "Transfer-Encoding: chunked\r\n"))
    head, _, body = with_length.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n") and orjson.loads(body)["NodeNames"]
    assert without.partition(b"\r\n\r\n")[2] == body
    assert [line for line in without.split(b"\r\n\r\n")[0].split(b"\r\n") if not line.startswith(b"Date:")] == \
        [line for line in head.split(b"\r\n") if not line.startswith(b"Date:")]


def test_under_gunicorn_a_body_cut_short_by_the_client_is_a_400_with_the_reason(gunicorn_port):
    answer = _exchange(gunicorn_port, _post("/filter", FILTER[:100], f"Content-Length: {len(FILTER)}\r\n"),
                       half_close=True)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 BAD REQUEST\r\n")
    assert orjson.loads(body)["Error"].startswith("filter: request body ended after 100 of the")


def test_a_request_is_observed_once_its_answer_is_sent_with_the_time_until_it_was_ready():
    observed: list[tuple[str, int, float]] = []
    hot = serve_hot_verbs(Flask("bare"), {"verb": lambda body: (body, None)}, LIMIT,
                          observe=lambda verb, status, seconds: observed.append((verb, status, seconds)))
    answered = Answered(hot, environ("/verb", b"{}"))
    assert observed == []  # the metrics writes wait: the scheduler does not
    answered.close()
    [(verb, status, seconds)] = observed
    assert (verb, status) == ("verb", 200) and seconds > 0
