"""A recording stand-in for kube-apiserver that serves the responses captured in tests/fixtures/apiserver/.

Why: the real adapter's whole code path (the `kubernetes` client's requests, paging, the chunked watch stream,
error mapping) should run against bytes a real API server produced, without a cluster. The stub answers by
method + path + query with the captured bytes unchanged, records every request it gets, and can be told to
answer a request differently (410, 409, 500, a split, paused or broken stream) for the error cases.

Routing: a route matches when method and path are equal and the query is equal, ignoring `timeoutSeconds`
(the client picks it; it only decides when a stream ends). `watch=1` and `watch=true` are the same to the
API server, and to the stub. The route registered last wins, so tests override the captures with `respond`.
Requests no route matches: a list is re-paged from the captured objects, a watch is held open idle (as a quiet
API server does) until its timeoutSeconds, the client leaving, or the stub stopping; anything else is a 404.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from kubernetes import client as k8s

FIXTURES = Path(__file__).parent / "fixtures"
CAPTURES = FIXTURES / "apiserver"
CLUSTER_FILE = FIXTURES / "kube-scheduler" / "cluster.json"

_IGNORED_QUERY_KEYS = frozenset({"timeoutSeconds"})
_BOOLEAN_QUERY_KEYS = frozenset({"watch", "allowWatchBookmarks"})
_POLL_SECONDS = 0.05  # how often a held-open stream checks whether its client left or the stub stops


def status_body(code: int, reason: str, message: str, **details: Any) -> bytes:
    """A metav1.Status as the API server writes it for a failed request."""
    status: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                              "message": message, "reason": reason, "code": code}
    if details:
        status["details"] = details
    return orjson.dumps(status)


def expired_watch_event(requested: str, oldest: str) -> bytes:
    """The documented (not captured) in-stream answer to a watch from a compacted resourceVersion."""
    status = orjson.loads(status_body(410, "Expired", f"too old resource version: {requested} ({oldest})"))
    return orjson.dumps({"type": "ERROR", "object": status}) + b"\n"


def watch_lines() -> list[bytes]:
    """The captured watch stream, one event per element, newline kept."""
    return (CAPTURES / "watch-pods-with-bookmark.jsonl").read_bytes().splitlines(keepends=True)


def _normalise(query: dict[str, str]) -> dict[str, str]:
    return {k: ("true" if k in _BOOLEAN_QUERY_KEYS and v == "1" else v) for k, v in query.items()
            if k not in _IGNORED_QUERY_KEYS}


@dataclass
class Reply:
    """What to answer. `chunks` are sent as separate HTTP/1.1 chunks (watch streams); a `threading.Event`
    among them pauses the stream until the test sets it (events then arrive when the test says). After the
    chunks the stream ends normally, stays open (`hold_open`), or is cut without the final chunk
    (`break_stream`)."""

    status: int = 200
    body: bytes = b""
    chunks: list[bytes | threading.Event] | None = None
    hold_open: bool = False
    break_stream: bool = False
    times: int | None = None  # answer this many matching requests, then let older routes answer


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    body: bytes
    headers: dict[str, str]

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class _Route:
    method: str
    path: str
    query: dict[str, str] | None  # None: any query
    reply: Reply
    served: int = field(default=0)


def _list_items(name: str) -> list[dict[str, Any]]:
    return orjson.loads((CAPTURES / name).read_bytes())["items"]


def _page3() -> bytes:
    """Page 3 of the pod list was not captured. Page 2's continue token (remainingItemCount 1) points past
    ml-team/bert-finetune-mnt6x, and the one pod left at that resourceVersion is the standby slot in
    kube-scheduler/cluster.json (standby-resnet50-train-0), so page 3 is that pod in a PodList with no
    continue token; items in a list carry no kind/apiVersion, as on the real server."""
    cluster = orjson.loads(CLUSTER_FILE.read_bytes())
    pod = next(i for i in cluster["items"]
               if i["kind"] == "Pod" and i["metadata"]["name"] == "standby-resnet50-train-0")
    item = {k: v for k, v in pod.items() if k not in ("kind", "apiVersion")}
    return orjson.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": "428"},
                         "items": [item]})


class ApiServerStub:
    """Start with `start()`, stop with `stop()` (or use the `apiserver` fixture); `url` is its base URL."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._routes: list[_Route] = []
        self._requests: list[RecordedRequest] = []
        self._connections: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._end_streams = threading.Event()
        self.streams_left_by_client = 0  # held-open streams whose client closed the connection
        self._server = _Server(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(target=self._server.serve_forever, name="apiserver-stub",
                                        kwargs={"poll_interval": _POLL_SECONDS})
        self._collections = {
            "/api/v1/nodes": ("NodeList", _list_items("list-nodes.json")),
            "/api/v1/pods": ("PodList", _list_items("list-pods-page1.json") + _list_items("list-pods-page2.json")
                             + orjson.loads(_page3())["items"]),
        }
        self._install_captures()

    # --- lifecycle ---------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """Stop serving, end every open stream and keep-alive connection, and join every thread."""
        self._stopping.set()
        self._server.shutdown()
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._server.server_close()  # joins the handler threads (block_on_close)
        self._thread.join()

    def end_streams(self) -> None:
        """End every held-open stream now (normally, with the final chunk), as a server timeout would."""
        self._end_streams.set()

    # --- configuration -----------------------------------------------------------------------------------
    def respond(self, method: str, path: str, reply: Reply, query: dict[str, str] | None = None) -> None:
        """Answer matching requests with `reply` from now on (or `reply.times` times)."""
        with self._lock:
            self._routes.append(_Route(method, path, _normalise(query) if query is not None else None, reply))

    def _install_captures(self) -> None:
        page1 = orjson.loads((CAPTURES / "list-pods-page1.json").read_bytes())
        page2 = orjson.loads((CAPTURES / "list-pods-page2.json").read_bytes())
        self.respond("GET", "/api/v1/nodes", Reply(body=(CAPTURES / "list-nodes.json").read_bytes()),
                     {"limit": "500"})
        self.respond("GET", "/api/v1/pods", Reply(body=(CAPTURES / "list-pods-page1.json").read_bytes()),
                     {"limit": "3"})
        self.respond("GET", "/api/v1/pods", Reply(body=(CAPTURES / "list-pods-page2.json").read_bytes()),
                     {"limit": "3", "continue": page1["metadata"]["continue"]})
        self.respond("GET", "/api/v1/pods", Reply(body=_page3()),
                     {"limit": "3", "continue": page2["metadata"]["continue"]})
        self.respond("GET", "/api/v1/pods", Reply(chunks=watch_lines()),
                     {"watch": "1", "resourceVersion": "428", "allowWatchBookmarks": "true"})
        # The captures do not say which pod the 201 and 429 answers were for: an unprotected pod and an
        # etl pod (the PodDisruptionBudget etl-pdb) stand in; the 404 names its pod itself.
        evictions = {"inference-a": (201, "eviction-201.json"), "etl-worker-1": (429, "eviction-429-pdb.json"),
                     "does-not-exist": (404, "eviction-404.json")}
        for pod, (code, name) in evictions.items():
            self.respond("POST", f"/api/v1/namespaces/default/pods/{pod}/eviction",
                         Reply(status=code, body=(CAPTURES / name).read_bytes()))

    # --- what happened -----------------------------------------------------------------------------------
    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def requests_to(self, method: str, path: str) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def wait_until(self, condition: Callable[[ApiServerStub], bool], timeout: float = 5.0) -> bool:
        """Wait (without sleeping blindly) until `condition(stub)` holds; False at the deadline."""
        with self._lock:
            return self._lock.wait_for(lambda: condition(self), timeout)

    # --- serving (called from handler threads) -------------------------------------------------------------
    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)
            self._lock.notify_all()

    def _track(self, connection: socket.socket, alive: bool) -> None:
        with self._lock:
            (self._connections.add if alive else self._connections.discard)(connection)

    def _stream_left(self) -> None:
        with self._lock:
            self.streams_left_by_client += 1
            self._lock.notify_all()

    def _reply_for(self, method: str, path: str, query: dict[str, str]) -> Reply:
        wanted = _normalise(query)
        with self._lock:
            for route in reversed(self._routes):
                exhausted = route.reply.times is not None and route.served >= route.reply.times
                if route.method == method and route.path == path and not exhausted \
                        and (route.query is None or route.query == wanted):
                    route.served += 1
                    return route.reply
        if method == "GET" and path in self._collections:
            if wanted.get("watch") == "true":
                return Reply(chunks=[], hold_open=True)
            return self._repaged(path, wanted)
        return Reply(status=404, body=status_body(404, "NotFound", "the server could not find the requested resource"))

    def _repaged(self, path: str, query: dict[str, str]) -> Reply:
        """A list shape that was not captured (another limit): the captured objects, paged as asked, with
        continue tokens of the stub's own making."""
        kind, items = self._collections[path]
        start = int(query.get("continue", "stub-offset-0").removeprefix("stub-offset-"))
        limit = int(query.get("limit", "0")) or len(items)
        metadata: dict[str, Any] = {"resourceVersion": "428"}
        if start + limit < len(items):
            metadata["continue"] = f"stub-offset-{start + limit}"
            metadata["remainingItemCount"] = len(items) - start - limit
        return Reply(body=orjson.dumps({"kind": kind, "apiVersion": "v1", "metadata": metadata,
                                        "items": items[start:start + limit]}))


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # so server_close() joins every handler thread
    block_on_close = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], stub: ApiServerStub) -> None:
        self.stub = stub
        super().__init__(address, handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if not self.stub._stopping.is_set():  # a client that hung up mid-answer is not a test failure
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streams, as the real server speaks
    server: _Server

    def setup(self) -> None:
        super().setup()
        self.server.stub._track(self.connection, True)

    def finish(self) -> None:
        self.server.stub._track(self.connection, False)
        try:
            super().finish()
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's signature
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._serve()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_GET

    def _serve(self) -> None:
        stub = self.server.stub
        parts = urlsplit(self.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        stub._record(RecordedRequest(self.command, parts.path, query, body,
                                     {k.lower(): v for k, v in self.headers.items()}))
        reply = stub._reply_for(self.command, parts.path, query)
        self.send_response(reply.status)
        self.send_header("Content-Type", "application/json")
        if reply.chunks is None:
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
            return
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for chunk in reply.chunks:
            if isinstance(chunk, threading.Event):
                if not self._pause_until(chunk):
                    break
                continue
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            self.wfile.flush()
        if reply.break_stream:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if reply.hold_open and self._hold(float(query.get("timeoutSeconds") or 0)):
            self.close_connection = True
            return
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def _pause_until(self, gate: threading.Event) -> bool:
        """Wait for the test's go; False when the stub stops or streams are ended first."""
        stub = self.server.stub
        while not gate.wait(_POLL_SECONDS):
            if stub._stopping.is_set() or stub._end_streams.is_set():
                return False
        return True

    def _hold(self, timeout_seconds: float) -> bool:
        """Keep a stream open like a quiet watch; True when the client left (then nothing more is sent)."""
        stub = self.server.stub
        deadline = time.monotonic() + timeout_seconds if timeout_seconds > 0 else float("inf")
        while not stub._stopping.is_set() and not stub._end_streams.is_set() and time.monotonic() < deadline:
            readable, _, _ = select.select([self.connection], [], [], _POLL_SECONDS)
            if readable:
                try:
                    left = not self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    left = True
                if left:
                    stub._stream_left()
                    return True
        return False


@pytest.fixture
def apiserver() -> Iterator[ApiServerStub]:
    """A running stub, stopped (every thread joined) after the test."""
    stub = ApiServerStub()
    stub.start()
    try:
        yield stub
    finally:
        stub.stop()


@pytest.fixture
def api_client(apiserver: ApiServerStub) -> Iterator[k8s.ApiClient]:
    """The official client pointed at the stub, its connection pool closed after the test."""
    client = k8s.ApiClient(k8s.Configuration(host=apiserver.url))
    try:
        yield client
    finally:
        client.close()
