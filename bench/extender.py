"""Extender benchmark (issue 2, item 9): latency, decisions/s and memory of the scheduler extender at 5000 nodes.

`make bench` runs `python bench/extender.py`. What it does, in one run (details: docs/bench-extender.md):

1. Draws a 5000-node, 150k-pod cluster from the Alibaba trace (bench/trace_cluster.py; data: Alibaba
   cluster-trace-gpu-v2023 (openb), used by the USENIX ATC'23 FGD paper), writes it as a `v1 List` and a
   matching predictor snapshot into a temp dir, and serves the snapshot from a tiny HTTP server process.
2. Starts the extender as deployed (gunicorn, extender/gunicorn_conf.py, 2 gthread workers with 2 threads each) on loopback with
   GUARDGRID_CLUSTER_FILE (the in-memory KubeAPI) and GUARDGRID_PREDICTOR_URL, waits for /readyz.
3. From this process (the server is gunicorn's), sends what kube-scheduler sends at 5000 nodes: sequential
   filter + prioritize pairs with 500 node names each (prioritize gets the filter's survivors; no
   prioritize when fewer than two survive, as the scheduler does), after a warm-up, and times each request
   with one keep-alive HTTP/1.1 connection (a lean socket client, see Client). Then full-NodeList mode (500 whole Node objects).
   A no-op extender on the same stack (bench/noop_extender.py) runs beside it and gets the byte-identical
   request stream, interleaved in blocks of 250 pairs (about a second), so machine noise hits both alike.
4. The same pairs against the extender without a predictor (requests-based fallback).
5. Profiles the extender's decision code in a separate process on the same data (where the time goes).
Optional experiments (`--experiment-gc-freeze`, `--ab-repo DIR`, `--server-args`) compare variants, also
interleaved.

The last line printed is one JSON object: p50_ms, p99_ms (per request, forecast mode, filter and prioritize
pooled), decisions_per_s (filter+prioritize pairs per wall-clock second of one sequential client),
noop_ratio (extender p99 / no-op p99, same definition), rss_mb (sum of VmRSS over the gunicorn master and
workers), full_nodelist_p99_ms (per request, full-NodeList mode).
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import gc
import http.client
import io
import json
import os
import pstats
import random
import shlex
import socket
import statistics
import string
import subprocess
import sys
import tempfile
import time
from collections import Counter
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python bench/extender.py`: bench/ must not shadow the `extender` package
    _repo = str(Path(__file__).resolve().parent.parent)
    sys.path[:] = [_repo] + [p for p in sys.path if os.path.abspath(p or ".") not in
                             (str(Path(__file__).resolve().parent), _repo)]

import orjson  # noqa: E402

from bench.common import (REPO, ServerProcess, free_port, gc_paused, latency_summary, percentile,  # noqa: E402
                          start_json_server, tree_memory, wait_http_ready)
from bench.trace_cluster import (MIB, TRACE_CREDIT, TraceCluster, TrainingJob, build_cluster,  # noqa: E402
                                 forecast_snapshot, write_cluster_file)
from guardgrid.config import load_settings  # noqa: E402

POD_TEMPLATE = REPO / "tests" / "fixtures" / "kube-scheduler" / "node-cache" / "filter-args.json"
# kube-scheduler's adaptive percentageOfNodesToScore at 5000 nodes is 50 - 5000/125 = 10%: it stops after
# 500 feasible nodes and hands those to the extenders.
CANDIDATES = 500
# Interleaving: blocks of about one second each (node-cache pairs, full-NodeList pairs). Long enough that
# switching servers costs little, short enough that a burst of noise from the neighbours hits both sides.
BLOCK = 250
FULL_BLOCK = 20
TARGETS = {"p99_ms": ("<=", 3.0), "decisions_per_s": (">=", 700.0), "noop_ratio": ("<=", 1.5),
           "full_nodelist_p99_ms": ("<=", 25.0)}
HEADERS = {"Content-Type": "application/json", "Accept-Encoding": "gzip",
           "User-Agent": "kube-scheduler/v1.36.2 (linux/amd64) guardgrid-bench"}


# --- the request stream ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pair:
    """One scheduling cycle's extender calls for one pod: the filter body, and what prioritize needs."""

    pod: bytes  # the Pod JSON, as embedded in both bodies
    node_indexes: tuple[int, ...]  # candidate nodes (indexes into the cluster's node list)
    kind: str  # own-slot | job | ad-hoc: which placement path the pod exercises
    own_node: str = ""  # node of the pod's job's standby slot (own-slot pairs only)

    def names_body(self, names: Sequence[str]) -> bytes:
        return b'{"Pod":' + self.pod + b',"Nodes":null,"NodeNames":' + orjson.dumps(list(names)) + b"}"


def nodes_body(pod: bytes, node_json: Sequence[bytes]) -> bytes:
    """A full-NodeList body (nodeCacheCapable: false): whole Node objects, names null."""
    return b'{"Pod":' + pod + b',"Nodes":{"metadata":{},"items":[' + b",".join(node_json) + b']},"NodeNames":null}'


def make_pairs(count: int, cluster_names: Sequence[str], jobs: Sequence[TrainingJob], trace_memory_mib: Sequence[int],
               rng: random.Random) -> list[Pair]:
    """Pods from the captured bert pod, varied in job and memory: half belong to a job holding a standby
    slot (its node is among the candidates, so the own-slot path runs), a quarter to a job without one, a
    quarter are ad-hoc pods with a memory request drawn from the trace."""
    template = orjson.loads(POD_TEMPLATE.read_bytes())["Pod"]
    protected = [j for j in jobs if j.standby_node]
    unprotected = [j for j in jobs if not j.standby_node]
    index = {name: i for i, name in enumerate(cluster_names)}
    pairs = []
    for k in range(count):
        draw = rng.random()
        job: TrainingJob | None
        if draw < 0.5 and protected:
            job, kind = rng.choice(protected), "own-slot"
        elif draw < 0.75 and unprotected:
            job, kind = rng.choice(unprotected), "job"
        else:
            job, kind = None, "ad-hoc"
        job_name = job.name if job else f"adhoc-{k:05d}"
        memory_mib = job.memory_bytes // MIB if job else rng.choice(trace_memory_mib)
        pod = orjson.loads(orjson.dumps(template))
        meta = pod["metadata"]
        meta["name"] = f"{job_name}-{''.join(rng.choices(string.ascii_lowercase + string.digits, k=5))}"
        meta["generateName"] = f"{job_name}-"
        meta["namespace"] = job.namespace if job else "ml-team"
        meta["uid"] = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        controller_uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        meta["labels"] = {"app": job_name, "batch.kubernetes.io/controller-uid": controller_uid,
                          "batch.kubernetes.io/job-name": job_name, "controller-uid": controller_uid,
                          "job-name": job_name}
        meta["annotations"]["guardgrid.io/job"] = job_name
        meta["ownerReferences"][0].update(name=job_name, uid=controller_uid)
        resources = pod["spec"]["containers"][0]["resources"]
        resources["requests"]["memory"] = f"{memory_mib}Mi"
        resources["limits"]["memory"] = f"{memory_mib * 3 // 2}Mi"
        candidates = rng.sample(range(len(cluster_names)), CANDIDATES)
        if job is not None and job.standby_node and index[job.standby_node] not in candidates:
            candidates[rng.randrange(CANDIDATES)] = index[job.standby_node]
        pairs.append(Pair(orjson.dumps(pod), tuple(candidates), kind, job.standby_node if job else ""))
    return pairs


# --- the client -------------------------------------------------------------------------------------------------
class Client:
    """One keep-alive HTTP/1.1 connection, as kube-scheduler's Go client keeps one per extender.

    Why a socket and not `http.client`: the benchmark measures the server, and `http.client` spends ~0.13 ms
    of each request in the client (header objects, `email.parser`), more than Go's client does; that
    inflated every latency and capped pairs/s for the extender and the no-op alike (measured side by side:
    no-op p50 0.65 vs 0.52 ms per request). This client writes each request in one `sendall` with
    kube-scheduler's headers and reads the status line, the headers and a `Content-Length` body; it refuses
    anything else (a chunked answer) rather than guess.

    If the server closes the connection after a response (gunicorn's sync worker always does), the next
    request opens a new one, and its connect time is part of the measured latency, as it is for the
    scheduler. `connections` counts how many were opened.
    """

    def __init__(self, port: int, timeout: float = 10.0) -> None:
        self.port = port
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.connections = 0
        self._pending = b""
        self._head = b"".join(f"{k}: {v}\r\n".encode() for k, v in HEADERS.items())

    def _connect(self) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.connections += 1
        self._pending = b""
        return sock

    def post(self, path: str, body: bytes) -> tuple[int, bytes, float]:
        started = time.perf_counter()
        if self.sock is None:
            self.sock = self._connect()
        sock = self.sock
        sock.sendall(b"POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%sContent-Length: %d\r\n\r\n%s"
                     % (path.encode(), self.port, self._head, len(body), body))
        data = self._pending
        while (end := data.find(b"\r\n\r\n")) < 0:
            data += self._recv(sock)
        head, rest = data[:end].decode("latin-1"), data[end + 4:]
        status_line, *lines = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
        if "content-length" not in headers:
            self.close()
            raise ConnectionError(f"answer without Content-Length ({status_line}): the bench client reads only those")
        length = int(headers["content-length"])
        while len(rest) < length:
            rest += self._recv(sock)
        payload, self._pending = rest[:length], rest[length:]
        elapsed = time.perf_counter() - started
        if headers.get("connection", "").lower() == "close":
            self.close()
        return int(status_line.split(" ", 2)[1]), payload, elapsed

    def _recv(self, sock: socket.socket) -> bytes:
        chunk = sock.recv(1 << 20)
        if not chunk:
            self.close()
            raise ConnectionError("server closed the connection mid-answer")
        return chunk

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None


@dataclass
class PhaseResult:
    name: str
    filter_seconds: list[float] = field(default_factory=list)
    prioritize_seconds: list[float] = field(default_factory=list)
    pair_seconds: list[float] = field(default_factory=list)
    wall_seconds: float = 0.0
    pairs: int = 0
    errors: list[str] = field(default_factory=list)
    survivors: list[int] = field(default_factory=list)
    forecast_messages: int = 0
    requested_messages: int = 0
    connections: int = 0
    own_slot_checked: int = 0  # prioritize answers where the pod's own standby slot node was a candidate
    own_slot_top: int = 0  # ... and got the top score (10), as GuardGrid promises
    prioritize_bodies: list[bytes | None] = field(default_factory=list)
    full_survivors: list[list[str] | None] = field(default_factory=list)

    @property
    def request_seconds(self) -> list[float]:
        return self.filter_seconds + self.prioritize_seconds

    @property
    def decisions_per_s(self) -> float:
        return self.pairs / self.wall_seconds if self.wall_seconds else 0.0

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"pairs": self.pairs, "errors": len(self.errors), "wall_s": round(self.wall_seconds, 2),
                               "decisions_per_s": round(self.decisions_per_s, 1), "connections": self.connections}
        for label, values in (("request", self.request_seconds), ("filter", self.filter_seconds),
                              ("prioritize", self.prioritize_seconds), ("pair", self.pair_seconds)):
            if values:
                out[label] = {k: round(v, 3) for k, v in latency_summary(values).items()}
        if self.survivors:
            out["mean_survivors"] = round(statistics.fmean(self.survivors), 1)
        if self.forecast_messages or self.requested_messages:
            out["rejections_judged_on"] = {"forecast": self.forecast_messages, "requested": self.requested_messages}
        if self.own_slot_checked:
            out["own_slot_scored_10"] = f"{self.own_slot_top}/{self.own_slot_checked}"
        return out


def _count_sources(failed: dict[str, str]) -> tuple[int, int]:
    forecast = requested = 0
    for message in failed.values():
        if "(forecast " in message:
            forecast += 1
        elif "(requested " in message:
            requested += 1
    return forecast, requested


def run_pairs(client: Client, name: str, pairs: Sequence[Pair], node_names: Sequence[str],
              replay: Sequence[bytes | None] | None = None, record: bool = False, check: bool = True) -> PhaseResult:
    """Sequential filter(+prioritize) pairs; `replay` gives prioritize bodies recorded from another phase.

    Filter bodies are built before the clock starts; a prioritize body is built from the filter's answer
    (as the scheduler does), which is client work inside the wall-clock time but outside request latency.
    """
    result = PhaseResult(name)
    filter_bodies = [pair.names_body([node_names[i] for i in pair.node_indexes]) for pair in pairs]
    # The bench's own checks of the answers run after the clock stops: the scheduler does not do them.
    rejections: list[dict[str, str]] = []
    own_slot_answers: list[bool] = []  # a cheap bytes search; kept in the loop
    opened = client.connections
    started = time.perf_counter()
    for k, pair in enumerate(pairs):
        body: bytes | None = None
        try:
            status, data, filter_s = client.post("/filter", filter_bodies[k])
            if status != 200:
                result.errors.append(f"filter HTTP {status}: {data[:200]!r}")
                continue
            if replay is not None:
                body = replay[k]
            else:
                answer = orjson.loads(data)
                if answer.get("Error"):
                    result.errors.append(f"filter Error: {answer['Error']}")
                    continue
                survivors = answer.get("NodeNames") or []
                result.survivors.append(len(survivors))
                if check:
                    rejections.append(answer.get("FailedNodes") or {})
                body = pair.names_body(survivors) if len(survivors) >= 2 else None
            prioritize_s = 0.0
            if body is not None:
                status, data, prioritize_s = client.post("/prioritize", body)
                if status != 200:
                    result.errors.append(f"prioritize HTTP {status}: {data[:200]!r}")
                    continue
                result.prioritize_seconds.append(prioritize_s)
                if check and replay is None and pair.own_node and f'"{pair.own_node}"'.encode() in body:
                    own_slot_answers.append(f'{{"Host":"{pair.own_node}","Score":10}}'.encode() in data)
            result.filter_seconds.append(filter_s)
            result.pair_seconds.append(filter_s + prioritize_s)
            result.pairs += 1
        finally:
            if record:  # one entry per pair, so a replay stays aligned even after an error
                result.prioritize_bodies.append(body)
    result.wall_seconds = time.perf_counter() - started
    result.connections = client.connections - opened
    for failed in rejections:
        forecast, requested = _count_sources(failed)
        result.forecast_messages += forecast
        result.requested_messages += requested
    # Where the pod's own standby slot survived the filter, GuardGrid must score it highest.
    result.own_slot_checked += len(own_slot_answers)
    result.own_slot_top += sum(own_slot_answers)
    return result


def run_full_pairs(client: Client, pairs: Sequence[Pair], node_json: Sequence[bytes], node_names: Sequence[str],
                   replay: Sequence[list[str] | None] | None = None, record: bool = False) -> PhaseResult:
    """Full-NodeList mode: 500 whole Node objects per filter, the survivors' objects to prioritize.

    `replay` gives the survivors recorded from another phase (the no-op baseline answers a fixed body).
    Bodies (~1.2 MB) are built per request, outside the request timer.
    """
    result = PhaseResult("full-nodelist")
    opened = client.connections
    position = {name: i for i, name in enumerate(node_names)}
    started = time.perf_counter()
    for k, pair in enumerate(pairs):
        survivors: list[str] | None = None
        try:
            status, data, filter_s = client.post("/filter",
                                                 nodes_body(pair.pod, [node_json[i] for i in pair.node_indexes]))
            if status != 200:
                result.errors.append(f"filter HTTP {status}: {data[:200]!r}")
                continue
            if replay is not None:
                survivors = replay[k]
            else:
                answer = orjson.loads(data)
                if answer.get("NodeNames") is not None or answer.get("Error"):
                    result.errors.append("full mode answered with NodeNames or an Error")
                    continue
                items = (answer.get("Nodes") or {}).get("items") or []
                survivors = [item["metadata"]["name"] for item in items]
                if k < 3:  # the scheduler replaces its Node copies with these: they must come back unchanged
                    for item in items:
                        if item != orjson.loads(node_json[position[item["metadata"]["name"]]]):
                            result.errors.append(f"node {item['metadata']['name']} came back changed")
                result.survivors.append(len(survivors))
            prioritize_s = 0.0
            if survivors is not None and len(survivors) >= 2:
                status, data, prioritize_s = client.post(
                    "/prioritize", nodes_body(pair.pod, [node_json[position[n]] for n in survivors]))
                if status != 200:
                    result.errors.append(f"prioritize HTTP {status}: {data[:200]!r}")
                    continue
                result.prioritize_seconds.append(prioritize_s)
            result.filter_seconds.append(filter_s)
            result.pair_seconds.append(filter_s + prioritize_s)
            result.pairs += 1
        finally:
            if record:
                result.full_survivors.append(survivors)
    result.wall_seconds = time.perf_counter() - started
    result.connections = client.connections - opened
    return result


def warm_up(client: Client, pairs: Sequence[Pair], node_names: Sequence[str], minimum: int, deadline_s: float,
            settled: Callable[[PhaseResult], bool]) -> int:
    """Send pairs (cycling) until `minimum` were sent and the last 50 pairs satisfy `settled`.

    Why a condition, not a count: each gunicorn worker syncs its cache and fetches the snapshot on its own;
    the measurement must not start while one of them still answers 503 or without its forecast.
    """
    deadline = time.monotonic() + deadline_s
    sent = 0
    while True:
        window = [pairs[(sent + i) % len(pairs)] for i in range(50)]
        result = run_pairs(client, "warm-up", window, node_names)
        sent += len(window)
        if sent >= minimum and not result.errors and settled(result):
            return sent
        if time.monotonic() > deadline:
            raise TimeoutError(f"warm-up did not settle in {deadline_s:.0f}s: errors={result.errors[:2]} "
                               f"judged on {result.forecast_messages} forecast / {result.requested_messages} "
                               "requested rejections")


def server_seconds(port: int) -> dict[str, tuple[float, float]]:
    """verb -> (sum, count) of the extender's own latency histogram (time inside its handler), all workers."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    totals: dict[str, list[float]] = {}
    prefix = "guardgrid_extender_request_duration_seconds_"
    for line in text.splitlines():
        for part, slot in (("sum", 0), ("count", 1)):
            if line.startswith(prefix + part + "{"):
                verb = line.split('verb="', 1)[1].split('"', 1)[0]
                totals.setdefault(verb, [0.0, 0.0])[slot] += float(line.rsplit(" ", 1)[1])
    return {verb: (v[0], v[1]) for verb, v in totals.items()}


def server_mean_ms(before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Mean in-handler time per verb between two scrapes: the part of the latency the extender's code owns."""
    out = {}
    for verb, (total, count) in after.items():
        total0, count0 = before.get(verb, (0.0, 0.0))
        if count > count0:
            out[verb] = round((total - total0) / (count - count0) * 1e3, 3)
    return out


# --- servers ----------------------------------------------------------------------------------------------------
def gunicorn(app: str, port: int, workdir: Path, label: str, extra_env: dict[str, str],
             extra_args: Sequence[str] = (), repo: Path = REPO) -> ServerProcess:
    """The extender's own gunicorn settings (extender/gunicorn_conf.py) for `app`, bound to loopback.

    `extra_args` (command-line settings, which override the config file) and `repo` (another checkout's
    code) exist for experiments only.
    """
    metrics_dir = workdir / f"metrics-{label}"
    metrics_dir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARDGRID_")}
    env.update({"GUARDGRID_EXTENDER_BIND": f"127.0.0.1:{port}", "GUARDGRID_WORKER_TMP_DIR": str(workdir),
                "GUARDGRID_EXTENDER_WORKERS": os.environ.get("GUARDGRID_EXTENDER_WORKERS", "2"),
                "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHONPATH": str(repo), **extra_env})
    return ServerProcess([sys.executable, "-m", "gunicorn", "-c", "extender/gunicorn_conf.py", *extra_args, app],
                         env=env, cwd=repo, log_path=workdir / f"{label}.log")


def start_ready(app: str, workdir: Path, label: str, extra_env: dict[str, str], deadline_s: float,
                extra_args: Sequence[str] = (), repo: Path = REPO) -> tuple[ServerProcess, int, float]:
    port = free_port()
    server = gunicorn(app, port, workdir, label, extra_env, extra_args, repo)
    try:
        ready_s = wait_http_ready(port, "/readyz", deadline_s, consecutive=20, process=server.process)
    except (TimeoutError, RuntimeError) as exc:
        tail = server.log_tail()
        server.stop()
        raise RuntimeError(f"{label}: {exc}\n{tail}") from None
    return server, port, ready_s


def _merge(into: PhaseResult, part: PhaseResult) -> None:
    into.filter_seconds += part.filter_seconds
    into.prioritize_seconds += part.prioritize_seconds
    into.pair_seconds += part.pair_seconds
    into.wall_seconds += part.wall_seconds
    into.pairs += part.pairs
    into.errors += part.errors
    into.survivors += part.survivors
    into.forecast_messages += part.forecast_messages
    into.requested_messages += part.requested_messages
    into.connections += part.connections
    into.own_slot_checked += part.own_slot_checked
    into.own_slot_top += part.own_slot_top
    into.prioritize_bodies += part.prioritize_bodies
    into.full_survivors += part.full_survivors


def ab_compare(sides: dict[str, tuple[str, Path]], workdir: Path, env: dict[str, str], workload: Workload,
               pairs: int, settled: Callable[[PhaseResult], bool], ready_timeout: float, log: Callable[[str], None],
               server_args: Sequence[str] = (), block: int = BLOCK,
               label: str = "ab") -> dict[str, dict[str, PhaseResult]]:
    """EXPERIMENT: two extender variants (label -> (gunicorn app, checkout)) side by side, interleaved in blocks.

    Why interleaved: on a shared machine, noise comes in bursts of seconds; alternating blocks of `block`
    pairs between two servers running side by side exposes both to the same bursts, so a difference
    between them is the code's, not the neighbours'.
    """
    servers: dict[str, ServerProcess] = {}
    ports: dict[str, int] = {}
    clients: dict[str, Client] = {}
    try:
        for side, (app, repo) in sides.items():
            ports[side] = free_port()
            servers[side] = gunicorn(app, ports[side], workdir, f"{label}-{side}", env, server_args, repo)
        for side in sides:
            wait_http_ready(ports[side], "/readyz", ready_timeout, consecutive=20, process=servers[side].process)
            clients[side] = Client(ports[side])
            warm_up(clients[side], workload.warm, workload.node_names, len(workload.warm), 90, settled)
            run_full_pairs(clients[side], workload.full_warm, workload.node_json, workload.node_names)
        log(f"A/B: {', '.join(f'{side} = {app} in {repo}' for side, (app, repo) in sides.items())}: ready")
        out = {side: {"node-cache": PhaseResult(f"{side} node-cache"), "full-nodelist": PhaseResult(f"{side} full")}
               for side in sides}
        order = list(sides)
        measured = workload.measured[:pairs]
        with gc_paused():
            for start in range(0, len(measured), block):
                for side in (order if (start // block) % 2 == 0 else order[::-1]):
                    _merge(out[side]["node-cache"], run_pairs(clients[side], side, measured[start:start + block],
                                                              workload.node_names))
            full_block = FULL_BLOCK
            for start in range(0, len(workload.full_measured), full_block):
                for side in (order if (start // full_block) % 2 == 0 else order[::-1]):
                    _merge(out[side]["full-nodelist"], run_full_pairs(
                        clients[side], workload.full_measured[start:start + full_block], workload.node_json,
                        workload.node_names))
        return out
    finally:
        for client in clients.values():
            client.close()
        for server in servers.values():
            server.stop()


# --- in-process profile (a separate process: clean memory accounting, no HTTP) ----------------------------------
def _rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def profile_worker(workdir: Path) -> dict[str, Any]:
    """Where one request's time goes, stage by stage, with the extender's own objects and data.

    Runs ExtenderService (no Flask, no HTTP) on the benchmark's cluster file, snapshot and request bodies.
    Also measures what a worker pays outside requests: loading the cluster, the snapshot refresh, a full
    garbage collection, and how evaluation scales with recent binds (in-flight memory).
    """
    from extender import metrics
    from extender.service import ExtenderService
    from extender.wire import filter_result, parse_extender_args, priority_list
    from guardgrid.kubeapi.memory import load_cluster_file
    from guardgrid.placement import PodDemand, evaluate, filter_decisions, scores
    from guardgrid.records import node_from_dict, pod_from_dict
    from guardgrid.snapshot import Snapshot
    from guardgrid.state import ClusterState

    # The worker's state, built as the informer builds it (list -> records -> ClusterState), without the
    # in-memory KubeAPI's deep copy of every raw object: that copy is a test double's, not production's.
    out: dict[str, Any] = {"memory_mib": {"start": round(_rss_mib())}}
    started = time.perf_counter()
    objects = load_cluster_file(workdir / "cluster.json")
    parse_s = time.perf_counter() - started
    out["memory_mib"]["cluster_file_parsed"] = round(_rss_mib())
    started = time.perf_counter()
    state = ClusterState()
    state.replace_nodes([node_from_dict(o) for o in objects if o.get("kind") == "Node"])
    state.replace_pods([pod_from_dict(o) for o in objects if o.get("kind") == "Pod"])
    decode_s = time.perf_counter() - started
    out["memory_mib"]["records_and_state"] = round(_rss_mib()) - out["memory_mib"]["cluster_file_parsed"]
    out["startup_s"] = {"parse_cluster_file": round(parse_s, 2), "decode_records_and_state": round(decode_s, 2)}
    # A full collection is the longest pause the cyclic GC can add to a request: with the raw objects alive
    # (a worker fed by the in-memory KubeAPI) and with records only (a worker fed by the real API server).
    t = time.perf_counter()
    gc.collect()
    out["gc_full_collection_ms"] = {"with_raw_objects": round((time.perf_counter() - t) * 1e3, 1)}
    del objects
    gc.collect()
    t = time.perf_counter()
    gc.collect()
    out["gc_full_collection_ms"]["records_only"] = round((time.perf_counter() - t) * 1e3, 1)

    snapshot_bytes = (workdir / "snapshot.json").read_bytes()
    t = time.perf_counter()
    snapshot = dataclasses.replace(Snapshot.from_json(snapshot_bytes), generated_at=time.time())
    parse_snapshot_s = time.perf_counter() - t
    settings = load_settings(environ={})
    service = ExtenderService(state, settings, lambda: snapshot)
    t = time.perf_counter()
    service.aligner.align(snapshot, state.table)
    align_s = time.perf_counter() - t
    out["snapshot_refresh_ms"] = {"parse_in_background_thread": round(parse_snapshot_s * 1e3, 1),
                                  "align_on_first_request_after_refresh": round(align_s * 1e3, 1)}

    bodies = [orjson.loads(line) for line in (workdir / "requests.jsonl").read_bytes().splitlines()]
    filters = [b["filter"].encode() for b in bodies]
    prioritizes = [b["prioritize"].encode() for b in bodies if b["prioritize"]]
    following = [b["prioritize"].encode() if b["prioritize"] else None for b in bodies]  # each filter's next call

    # filter.parse/.evaluate/.decisions/.metrics/.serialise (and prioritize.*) time the Python reference path
    # stage by stage; filter.total is the path the service ships (bytes to bytes through the compiled kernel,
    # its after-work included) and prioritize.prepared the answer that filter prepared.
    stages: dict[str, list[float]] = {k: [] for k in (
        "filter.parse", "filter.evaluate", "filter.decisions", "filter.metrics", "filter.serialise", "filter.total",
        "prioritize.parse", "prioritize.evaluate", "prioritize.scores", "prioritize.serialise", "prioritize.total",
        "prioritize.prepared")}
    clock = time.perf_counter

    def parsed_and_evaluated(body: bytes) -> tuple[Any, Any, float, float]:
        """(args, evaluation, parse seconds, evaluate seconds): the first two stages of every verb."""
        t0 = clock()
        args = parse_extender_args(body)
        t1 = clock()
        snap = service.snapshot()
        evaluation = evaluate(service.state, snap, service.aligner, PodDemand.of(args.pod, snap), args.node_names,
                              settings, time.time())
        return args, evaluation, t1 - t0, clock() - t1

    for rounds in range(2):  # the first round warms caches; the second is recorded
        for body, next_body in zip(filters, following):
            args, evaluation, parse_s, evaluate_s = parsed_and_evaluated(body)
            t2 = clock()
            passed, failed, reasons = filter_decisions(evaluation, settings.risk_threshold)
            t3 = clock()
            for reason, count in Counter(reasons.values()).items():  # as ExtenderService.filter_then does
                metrics.TALLY.rejected(reason, count)
            t4 = clock()
            filter_result(args, passed, failed)
            t5 = clock()
            answer_then = service.filter_body_then(body)  # the shipped path: bytes to bytes (compiled kernel)
            answer_then[1]()
            t6 = clock()
            if rounds:
                for key, value in (("filter.parse", parse_s), ("filter.evaluate", evaluate_s),
                                   ("filter.decisions", t3 - t2), ("filter.metrics", t4 - t3),
                                   ("filter.serialise", t5 - t4), ("filter.total", t6 - t5)):
                    stages[key].append(value)
            if next_body is not None:  # the shipped path: the answer the filter just prepared (FilterMemory)
                t0 = clock()
                service.prioritize_body(next_body)
                if rounds:
                    stages["prioritize.prepared"].append(clock() - t0)
        for body in prioritizes:
            args, evaluation, parse_s, evaluate_s = parsed_and_evaluated(body)
            t2 = clock()
            graded = scores(evaluation, settings)
            t3 = clock()
            priority_list(args.node_names, graded)
            t4 = clock()
            service.prioritize(parse_extender_args(body))
            t5 = clock()
            if rounds:
                for key, value in (("prioritize.parse", parse_s), ("prioritize.evaluate", evaluate_s),
                                   ("prioritize.scores", t3 - t2), ("prioritize.serialise", t4 - t3),
                                   ("prioritize.total", t5 - t4)):
                    stages[key].append(value)
    # Full-NodeList mode: the same stages on ~1.2 MB bodies of 500 whole Node objects.
    full_path = workdir / "full-requests.jsonl"
    full_bodies = [orjson.loads(line) for line in full_path.read_bytes().splitlines()] if full_path.exists() else []
    for body in [b["filter"].encode() for b in full_bodies]:
        args, evaluation, parse_s, evaluate_s = parsed_and_evaluated(body)
        t2 = clock()
        passed, failed, reasons = filter_decisions(evaluation, settings.risk_threshold)
        t3 = clock()
        filter_result(args, passed, failed)
        t4 = clock()
        for key, value in (("full.filter.parse", parse_s), ("full.filter.evaluate", evaluate_s),
                           ("full.filter.decisions", t3 - t2), ("full.filter.serialise", t4 - t3)):
            stages.setdefault(key, []).append(value)
    for body in [b["prioritize"].encode() for b in full_bodies if b["prioritize"]]:
        t0 = clock()
        service.prioritize(parse_extender_args(body))
        stages.setdefault("full.prioritize.total", []).append(clock() - t0)
    out["stages_us"] = {k: {"p50": round(percentile(v, 50) * 1e6), "p99": round(percentile(v, 99) * 1e6)}
                        for k, v in stages.items() if v}

    profiler = cProfile.Profile()
    profiler.enable()
    for body in filters:
        service.filter_body_then(body)[1]()
    for body in prioritizes:
        service.prioritize(parse_extender_args(body))
    profiler.disable()
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(14)
    out["cprofile_top_tottime"] = [line.strip() for line in text.getvalue().splitlines()
                                   if line.strip() and line.strip()[0].isdigit()]
    out["cprofile_requests"] = len(filters) + len(prioritizes)

    # In-flight accounting walks the binds newer than the snapshot: cost of evaluate with recent binds.
    pending = [p for p in state.all_pods() if not p.node_name and p.phase == "Pending"]
    names = state.table.nodes
    rng = random.Random(7)
    body = filters[0]
    args = parse_extender_args(body)
    scaling: dict[str, float] = {}
    shipped_scaling: dict[str, float] = {}
    done = 0
    for target in (0, 1000, 10000):
        now = time.time()
        for pod in pending[done:target]:
            state.upsert_pod(dataclasses.replace(pod, node_name=rng.choice(names).name, phase="Running",
                                                 scheduled_at=now), now=now)
        done = max(done, target)
        timings, shipped = [], []
        for _ in range(30):
            t = time.perf_counter()
            evaluate(state, snapshot, service.aligner, PodDemand.of(args.pod, snapshot), args.node_names, settings,
                     time.time())
            timings.append(time.perf_counter() - t)
            t = time.perf_counter()
            service.filter_body_then(body)[1]()
            shipped.append(time.perf_counter() - t)
        scaling[str(target)] = round(statistics.median(timings) * 1e6)
        shipped_scaling[str(target)] = round(statistics.median(shipped) * 1e6)
    out["evaluate_us_by_recent_binds"] = scaling  # the Python reference path's evaluate
    out["shipped_filter_us_by_recent_binds"] = shipped_scaling  # the whole compiled filter, parse included
    return out


# --- the run ----------------------------------------------------------------------------------------------------
def _fmt(summary: dict[str, Any], key: str) -> str:
    part = summary.get(key)
    return f"p50 {part['p50_ms']:.2f} / p99 {part['p99_ms']:.2f} / max {part['max_ms']:.1f} ms" if part else "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="GuardGrid extender benchmark (see docs/bench-extender.md)")
    parser.add_argument("--nodes", type=int, default=5000)
    parser.add_argument("--pods", type=int, default=150_000)
    parser.add_argument("--pairs", type=int, default=3000, help="measured filter+prioritize pairs per phase")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up pairs (at least) per phase")
    parser.add_argument("--full-pairs", type=int, default=200, help="measured pairs in full-NodeList mode")
    parser.add_argument("--seed", type=int, default=20230710)
    parser.add_argument("--fallback-pairs", type=int, default=1000,
                        help="measured pairs without a predictor (0 skips that phase)")
    parser.add_argument("--experiment-gc-freeze", action="store_true",
                        help="also measure the extender with gc.freeze() after its cache synced")
    parser.add_argument("--server-args", default="",
                        help="EXPERIMENT: extra gunicorn settings for every stack, e.g. '--worker-class gthread "
                             "--threads 2' (the default measures extender/gunicorn_conf.py as shipped)")
    parser.add_argument("--ab-repo", type=Path,
                        help="EXPERIMENT: also compare this checkout's extender (A) with the one in ANOTHER checkout "
                             "(B), interleaved in blocks on the same data")
    parser.add_argument("--no-profile", action="store_true", help="skip the in-process profile")
    parser.add_argument("--ready-timeout", type=float, default=150.0)
    parser.add_argument("--keep", type=Path, help="write the cluster, snapshot, logs and results here (kept)")
    parser.add_argument("--profile-worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profile_worker:
        print(orjson.dumps(profile_worker(args.profile_worker)).decode())
        return 0

    with tempfile.TemporaryDirectory(prefix="guardgrid-bench-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        return run(args, workdir)


@dataclass
class Workload:
    """Everything the client sends, built once so every phase gets byte-identical requests."""

    node_names: list[str]
    node_json: list[bytes]  # full Node objects as kube-scheduler sends them without a node cache
    warm: list[Pair]
    measured: list[Pair]
    full_warm: list[Pair]
    full_measured: list[Pair]


@dataclass
class StackRun:
    """One extender stack measured: node-cache pairs, optionally full-NodeList pairs, memory."""

    pairs: PhaseResult
    full: PhaseResult | None
    memory: Any
    ready_s: float
    server_ms: dict[str, dict[str, float]]


def measure_stack(app: str, label: str, workdir: Path, env: dict[str, str], workload: Workload, pairs: int,
                  settled: Callable[[PhaseResult], bool], full: bool, ready_timeout: float = 150.0,
                  log: Callable[[str], None] = print, server_args: Sequence[str] = ()) -> StackRun:
    """Start `app` under the extender's gunicorn settings, warm it up, measure, read its memory, stop it."""
    server, port, ready_s = start_ready(app, workdir, label, env, ready_timeout, server_args)
    client = Client(port)
    try:
        log(f"{label}: ready after {ready_s:.1f}s (each worker lists the cluster itself)")
        names = workload.node_names
        warm_up(client, workload.warm, names, len(workload.warm), 90, settled)
        server_ms: dict[str, dict[str, float]] = {}
        before = server_seconds(port)
        with gc_paused():
            result = run_pairs(client, label, workload.measured[:pairs], names)
        server_ms["node-cache"] = server_mean_ms(before, server_seconds(port))
        log(f"{label}: {_fmt(result.summary(), 'request')}, {result.decisions_per_s:.0f} pairs/s")
        full_result = None
        if full:
            run_full_pairs(client, workload.full_warm, workload.node_json, names)
            before = server_seconds(port)
            with gc_paused():
                full_result = run_full_pairs(client, workload.full_measured, workload.node_json, names)
            server_ms["full-nodelist"] = server_mean_ms(before, server_seconds(port))
            log(f"{label} full-NodeList: {_fmt(full_result.summary(), 'request')}")
        memory = tree_memory(server.pid)
    finally:
        client.close()
        server.stop()
    return StackRun(result, full_result, memory, ready_s, server_ms)


def measure_with_noop(workdir: Path, env: dict[str, str], workload: Workload, pairs: int,
                      settled: Callable[[PhaseResult], bool], ready_timeout: float, log: Callable[[str], None],
                      server_args: Sequence[str] = (), block: int = BLOCK) -> tuple[StackRun, StackRun]:
    """The extender (primary) and the no-op baseline side by side, measured in alternating blocks.

    Each block of `block` pairs (about a second) goes to the extender first; the no-op then gets the same
    filter bodies and the prioritize bodies the extender's answers produced (byte-identical requests). Why interleaved: on a
    shared machine noise comes in bursts of seconds, and a ratio of two p99s measured minutes apart mostly
    measures the neighbours.
    """
    ext_server, ext_port, ext_ready = start_ready("extender.app:create_app()", workdir, "forecast", env,
                                                  ready_timeout, server_args)
    servers = [ext_server]
    clients: list[Client] = []
    try:
        noop_server, noop_port, noop_ready = start_ready("bench.noop_extender:create_app()", workdir, "noop", {},
                                                         30, server_args)
        servers.append(noop_server)
        log(f"extender ready after {ext_ready:.1f}s (each worker lists the cluster itself); no-op ready too")
        ext, noop = Client(ext_port), Client(noop_port)
        clients = [ext, noop]
        names, node_json = workload.node_names, workload.node_json
        warm_up(ext, workload.warm, names, len(workload.warm), 90, settled)
        run_pairs(noop, "warm-up", workload.warm, names, check=False)

        ext_result, noop_result = PhaseResult("forecast"), PhaseResult("noop")
        measured = workload.measured[:pairs]
        before = server_seconds(ext_port)
        with gc_paused():
            for start in range(0, len(measured), block):
                chunk = measured[start:start + block]
                part = run_pairs(ext, "forecast", chunk, names, record=True)
                _merge(ext_result, part)
                _merge(noop_result, run_pairs(noop, "noop", chunk, names, replay=part.prioritize_bodies))
        server_ms = {"node-cache": server_mean_ms(before, server_seconds(ext_port))}
        log(f"extender: {_fmt(ext_result.summary(), 'request')}, {ext_result.decisions_per_s:.0f} pairs/s; "
            f"no-op: {_fmt(noop_result.summary(), 'request')}, {noop_result.decisions_per_s:.0f} pairs/s")

        warm_full = run_full_pairs(ext, workload.full_warm, node_json, names, record=True)
        run_full_pairs(noop, workload.full_warm, node_json, names, replay=warm_full.full_survivors)
        ext_full, noop_full = PhaseResult("full-nodelist"), PhaseResult("noop full-nodelist")
        full_block = FULL_BLOCK
        before = server_seconds(ext_port)
        with gc_paused():
            for start in range(0, len(workload.full_measured), full_block):
                chunk = workload.full_measured[start:start + full_block]
                part = run_full_pairs(ext, chunk, node_json, names, record=True)
                _merge(ext_full, part)
                _merge(noop_full, run_full_pairs(noop, chunk, node_json, names, replay=part.full_survivors))
        server_ms["full-nodelist"] = server_mean_ms(before, server_seconds(ext_port))
        log(f"full-NodeList: extender {_fmt(ext_full.summary(), 'request')}; "
            f"no-op {_fmt(noop_full.summary(), 'request')}")
        ext_memory, noop_memory = tree_memory(ext_server.pid), tree_memory(noop_server.pid)
    finally:
        for client in clients:
            client.close()
        for server in servers:
            server.stop()
    return (StackRun(ext_result, ext_full, ext_memory, ext_ready, server_ms),
            StackRun(noop_result, noop_full, noop_memory, noop_ready, {}))


def run(args: argparse.Namespace, workdir: Path) -> int:
    bench_started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - bench_started:6.1f}s] {message}", flush=True)

    log(f"data: {TRACE_CREDIT} (data/alibaba-openb-2023)")
    cluster: TraceCluster | None = build_cluster(args.nodes, args.pods, args.seed)
    assert cluster is not None
    size = write_cluster_file(cluster, workdir / "cluster.json")
    (workdir / "snapshot.json").write_bytes(forecast_snapshot(cluster).to_json())
    log(f"cluster: {cluster.stats}, file {size / 2**20:.0f} MiB")
    rng = random.Random(args.seed + 1)
    pairs = make_pairs(args.warmup + args.pairs, cluster.node_names, cluster.jobs, cluster.pod_memory_mib, rng)
    workload = Workload(list(cluster.node_names), [orjson.dumps(node) for node in cluster.full_nodes],
                        pairs[:args.warmup], pairs[args.warmup:],
                        make_pairs(20, cluster.node_names, cluster.jobs, cluster.pod_memory_mib, rng),
                        pairs[args.warmup:args.warmup + args.full_pairs])
    kinds = {k: sum(1 for p in workload.measured if p.kind == k) for k in ("own-slot", "job", "ad-hoc")}
    cluster_stats = cluster.stats
    cluster = None  # the 150k pod objects are on disk now; free them before timing anything
    gc.collect()

    results: dict[str, Any] = {"cluster": cluster_stats, "request_mix": kinds, "phases": {},
                               "server_handler_mean_ms": {}, "server_args": args.server_args}
    cluster_env = {"GUARDGRID_CLUSTER_FILE": str(workdir / "cluster.json")}
    server_args = shlex.split(args.server_args)
    if server_args:
        log(f"EXPERIMENT: extra gunicorn settings for every stack: {server_args}")
    forecast_settled = lambda r: r.requested_messages == 0 and r.forecast_messages > 0  # noqa: E731
    snapshot_port = free_port()
    # A new snapshot once per predictor cycle, as the predictor publishes them (the refreshers fetch every
    # GUARDGRID_SNAPSHOT_REFRESH_SECONDS and parse only a changed one).
    snapshot_server = start_json_server(workdir / "snapshot.json", snapshot_port, "generated_at",
                                        log_path=workdir / "snapshot-server.log",
                                        restamp_every=load_settings({}).cycle_seconds)
    try:
        wait_http_ready(snapshot_port, "/v1/snapshot", 30, process=snapshot_server.process)
        forecast_env = {**cluster_env, "GUARDGRID_PREDICTOR_URL": f"http://127.0.0.1:{snapshot_port}"}

        # 1. The extender with the predictor's forecast (the primary figures), interleaved with the no-op
        #    baseline on the same stack, which gets byte-identical requests.
        primary, noop = measure_with_noop(workdir, forecast_env, workload, args.pairs, forecast_settled,
                                          args.ready_timeout, log, server_args)
        assert primary.full is not None
        replay = primary.pairs.prioritize_bodies
        (workdir / "requests.jsonl").write_bytes(b"\n".join(
            orjson.dumps({"filter": p.names_body([workload.node_names[i] for i in p.node_indexes]).decode(),
                          "prioritize": b.decode() if b else None})
            for p, b in list(zip(workload.measured, replay))[:300]))
        position = {name: i for i, name in enumerate(workload.node_names)}
        (workdir / "full-requests.jsonl").write_bytes(b"\n".join(
            orjson.dumps({"filter": nodes_body(p.pod, [workload.node_json[i] for i in p.node_indexes]).decode(),
                          "prioritize": nodes_body(p.pod, [workload.node_json[position[n]] for n in names]).decode()
                          if names and len(names) >= 2 else None})
            for p, names in list(zip(workload.full_measured, primary.full.full_survivors))[:20]))

        # 2. No predictor: the requests-based fallback.
        fallback = None
        if args.fallback_pairs:
            fallback = measure_stack("extender.app:create_app()", "fallback", workdir, cluster_env, workload,
                                     args.fallback_pairs, lambda r: r.forecast_messages == 0, full=False,
                                     ready_timeout=args.ready_timeout, log=log, server_args=server_args)

        # 3. Optional experiments, each interleaved against the shipped extender: gc.freeze() after the cache
        #    synced (a proposed change), and the extender of another checkout.
        extender_app = "extender.app:create_app()"
        experiments: dict[str, dict[str, dict[str, PhaseResult]]] = {}
        if args.experiment_gc_freeze:
            experiments["gc.freeze"] = ab_compare(
                {"A": (extender_app, REPO), "B": ("bench.extender:gc_frozen_app()", REPO)}, workdir, forecast_env,
                workload, args.pairs, forecast_settled, args.ready_timeout, log, server_args, label="gc-freeze")
        if args.ab_repo:
            experiments[f"B = {args.ab_repo}"] = ab_compare(
                {"A": (extender_app, REPO), "B": (extender_app, args.ab_repo.resolve())}, workdir, forecast_env,
                workload, args.pairs, forecast_settled, args.ready_timeout, log, server_args, label="ab-repo")
    finally:
        snapshot_server.stop()

    results["experiments"] = {name: {f"{side} {mode}": phase.summary() for side, modes in ab.items()
                                     for mode, phase in modes.items()} for name, ab in experiments.items()}
    phases = {"forecast": primary.pairs, "full-nodelist": primary.full, "fallback": fallback and fallback.pairs,
              "noop": noop.pairs, "noop full-nodelist": noop.full}
    for name, phase in phases.items():
        if phase is not None:
            results["phases"][name] = phase.summary()
    for name, stack in (("forecast", primary), ("fallback", fallback)):
        if stack is not None:
            results["server_handler_mean_ms"][name] = stack.server_ms
    results["memory"] = {"rss_mb": round(primary.memory.rss_mb, 1), "pss_mb": round(primary.memory.pss_mb, 1),
                         "per_process_rss_mb": [round(v / 2**20, 1) for v in primary.memory.per_process_rss.values()],
                         "noop_rss_mb": round(noop.memory.rss_mb, 1)}
    results["ready_s"] = {name: round(stack.ready_s, 1) for name, stack in
                          (("forecast", primary), ("fallback", fallback), ("noop", noop)) if stack is not None}

    profile: dict[str, Any] | None = None
    if not args.no_profile:
        log("profiling the decision code in-process on the same data ...")
        metrics_dir = workdir / "metrics-profile"
        metrics_dir.mkdir(exist_ok=True)  # multiprocess-mode metrics, as under gunicorn
        completed = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--profile-worker", str(workdir)],
                                   capture_output=True, text=True, cwd=REPO, timeout=300,
                                   env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)})
        if completed.returncode == 0:
            profile = json.loads(completed.stdout.strip().splitlines()[-1])
        else:
            log(f"profile failed: {completed.stderr[-2000:]}")
    results["profile"] = profile

    errors = [e for phase in phases.values() if phase is not None for e in phase.errors]
    errors += [e for ab in experiments.values() for modes in ab.values() for phase in modes.values()
               for e in phase.errors]
    if errors:
        log(f"ERRORS ({len(errors)}): {errors[:3]}")
    assert primary.full is not None
    headline = {
        "p50_ms": round(percentile(primary.pairs.request_seconds, 50) * 1e3, 3),
        "p99_ms": round(percentile(primary.pairs.request_seconds, 99) * 1e3, 3),
        "decisions_per_s": round(primary.pairs.decisions_per_s, 1),
        "noop_ratio": round(percentile(primary.pairs.request_seconds, 99)
                            / percentile(noop.pairs.request_seconds, 99), 2),
        "rss_mb": round(primary.memory.rss_mb, 1),
        "full_nodelist_p99_ms": round(percentile(primary.full.request_seconds, 99) * 1e3, 3),
    }
    results["headline"] = headline
    (workdir / "results.json").write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    report(args, results, kinds, workdir)
    print(json.dumps(headline))
    return 1 if errors else 0


def report(args: argparse.Namespace, results: dict[str, Any], kinds: dict[str, int], workdir: Path) -> None:
    """The human-readable part of the output (the JSON headline follows it as the last line)."""
    print()
    print(f"GuardGrid extender benchmark: {args.nodes} nodes, {args.pods} pods, {CANDIDATES} candidates per request, "
          f"request mix {kinds}; data: {TRACE_CREDIT}")
    print(f"{'phase':<36}{'pairs':>6}{'req p50':>10}{'p99':>10}{'max':>10}{'pair p99':>11}{'pairs/s':>9}{'conns':>7}")
    rows = dict(results["phases"])
    for name, experiment in results.get("experiments", {}).items():
        rows.update({f"[{name}] {k}": v for k, v in experiment.items()})
    for name, summary in rows.items():
        request, pair = summary.get("request", {}), summary.get("pair", {})
        print(f"{name[:36]:<36}{summary['pairs']:>6}{request.get('p50_ms', 0):>8.2f}ms"
              f"{request.get('p99_ms', 0):>8.2f}ms"
              f"{request.get('max_ms', 0):>8.0f}ms{pair.get('p99_ms', 0):>9.2f}ms{summary['decisions_per_s']:>9.0f}"
              f"{summary['connections']:>7}")
    if results.get("experiments"):
        print("[experiments]: A = the shipped extender, B = the variant named, interleaved in blocks on the same data")
    print(f"mean time inside the extender's handler (server side, ms): {results['server_handler_mean_ms']}")
    memory = results["memory"]
    print(f"server memory (forecast stack, master + 2 workers): RSS {memory['rss_mb']:.0f} MB "
          f"(per process {memory['per_process_rss_mb']}), PSS {memory['pss_mb']:.0f} MB; "
          f"no-op stack RSS {memory['noop_rss_mb']:.0f} MB; ready after {results['ready_s']} s")
    profile = results.get("profile")
    if profile:
        print("in-process stages (us, p50/p99): " + ", ".join(
            f"{k} {v['p50']}/{v['p99']}" for k, v in profile["stages_us"].items()))
        print(f"per-worker memory (MiB): {profile['memory_mib']}; startup (s): {profile['startup_s']}")
        print(f"snapshot refresh (ms): {profile['snapshot_refresh_ms']}; full GC pause (ms): "
              f"{profile['gc_full_collection_ms']}; by recent binds (us): Python evaluate "
              f"{profile['evaluate_us_by_recent_binds']}, shipped filter {profile['shipped_filter_us_by_recent_binds']}")
        print("(filter.total is the shipped path: bytes to bytes through the compiled kernel, parse and after-work "
              "included; the other filter./prioritize. stages time the Python reference path)")
        print(f"cProfile over {profile['cprofile_requests']} requests, top by own time:")
        for line in profile["cprofile_top_tottime"][:12]:
            print("   " + line)
    for key, (op, target) in TARGETS.items():
        value = results["headline"][key]
        met = value <= target if op == "<=" else value >= target
        print(f"target {key} {op} {target}: {value} {'met' if met else 'MISSED'}")
    print(f"(2-core machine, possibly shared with other work: numbers may be depressed; details in "
          f"{workdir}/results.json{'' if args.keep else ' (removed at exit; --keep DIR keeps them)'})")


def gc_frozen_app() -> Any:
    """EXPERIMENT, not the shipped extender: `extender.app.create_app()` plus `gc.freeze()` once synced.

    Why: a full collection over a worker holding 150k pods takes ~0.5 s and lands on whichever request
    triggers it. Freezing moves the cache's objects out of the collector's reach; the benchmark's
    `--experiment-gc-freeze` phase measures what that proposed change buys.
    """
    import threading

    from extender.app import create_app

    app = create_app()
    cache = app.extensions["guardgrid"]["cache"]

    def freeze_when_synced() -> None:
        if cache.wait_synced(600):
            gc.collect()
            gc.freeze()

    threading.Thread(target=freeze_when_synced, name="gc-freeze", daemon=True).start()
    return app


if __name__ == "__main__":
    raise SystemExit(main())
