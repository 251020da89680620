"""Helpers every benchmark in bench/ shares: percentiles, server RSS, free ports, readiness, server processes.

Why a module of its own: the extender, webhook and predictor benches must measure the same way (the same
percentile definition, the same RSS accounting over a gunicorn process tree, the same way of stopping what
they start), or their numbers cannot be compared. Standard library only: psutil is not a dependency, so
memory is read from /proc.

Import it from a bench script as `from bench.common import ...` with the repository root first on `sys.path`
and bench/ removed from it (a script run as `python bench/extender.py` gets bench/ as sys.path[0], where
`extender.py` would shadow the real `extender` package; see the top of bench/extender.py). It is also a tiny
command-line tool: `python bench/common.py serve-json FILE PORT [KEY]` serves one JSON document (the
benches' stand-in for the predictor's `/v1/snapshot`) from its own process.
"""

from __future__ import annotations

import contextlib
import http.client
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

__all__ = ["REPO", "percentile", "latency_summary", "process_tree", "rss_bytes", "pss_bytes", "TreeMemory",
           "tree_memory", "free_port", "wait_http_ready", "ServerProcess", "start_json_server", "serve_json",
           "gc_paused"]

REPO = Path(__file__).resolve().parent.parent


# --- statistics -------------------------------------------------------------------------------------------
def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile: the smallest value with at least q% of the samples at or below it.

    Why nearest rank: it is always an observed latency (never an interpolation between two), and p99 of
    3000 samples is the 2970th smallest, so the 30 slowest requests are exactly what it excludes.
    """
    if not values:
        raise ValueError("percentile of no samples")
    if not 0 < q <= 100:
        raise ValueError(f"percentile q={q} must be in (0, 100]")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/max/mean of latencies given in seconds, reported in milliseconds."""
    return {
        "n": float(len(seconds)),
        "p50_ms": percentile(seconds, 50) * 1e3,
        "p90_ms": percentile(seconds, 90) * 1e3,
        "p99_ms": percentile(seconds, 99) * 1e3,
        "max_ms": max(seconds) * 1e3,
        "mean_ms": sum(seconds) / len(seconds) * 1e3,
    }


# --- memory of a process tree -----------------------------------------------------------------------------
def _parent_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # Field 2 (comm) may contain spaces and parentheses: parse after the last ')'.
    return int(stat[stat.rindex(")") + 2:].split()[1])


def _group_members(pgid: int) -> list[int]:
    """Live processes in process group `pgid` (field 5 of /proc/<pid>/stat)."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                members.append(int(entry))
    return members


def process_tree(root: int) -> list[int]:
    """`root` and all its descendants (a gunicorn master and its workers), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            parent = _parent_of(int(entry))
            if parent is not None:
                children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, ()))
    return tree


def _status_kib(path: str, key: str) -> int:
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith(key):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_bytes(pid: int) -> int:
    """VmRSS of one process (0 if it is gone)."""
    return _status_kib(f"/proc/{pid}/status", "VmRSS:") * 1024


def pss_bytes(pid: int) -> int:
    """Proportional set size: pages shared after fork are split between the sharers (no double counting)."""
    return _status_kib(f"/proc/{pid}/smaps_rollup", "Pss:") * 1024


@dataclass(frozen=True)
class TreeMemory:
    rss_bytes: int  # sum of VmRSS over the tree (what the task calls server RSS; counts shared pages twice)
    pss_bytes: int  # sum of PSS: the tree's real footprint
    per_process_rss: dict[int, int]

    @property
    def rss_mb(self) -> float:
        return self.rss_bytes / 2**20

    @property
    def pss_mb(self) -> float:
        return self.pss_bytes / 2**20


def tree_memory(root: int) -> TreeMemory:
    pids = process_tree(root)
    per = {pid: rss_bytes(pid) for pid in pids}
    return TreeMemory(sum(per.values()), sum(pss_bytes(pid) for pid in pids), per)


# --- ports, readiness, processes ----------------------------------------------------------------------------
def free_port() -> int:
    """A loopback port nobody listens on right now (the kernel's choice)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_http_ready(port: int, path: str, deadline_seconds: float, consecutive: int = 1,
                    process: subprocess.Popen[bytes] | None = None, interval: float = 0.1) -> float:
    """Poll GET `path` until it answers 200 `consecutive` times in a row; return the seconds it took.

    Why consecutive: behind gunicorn each poll may reach a different worker, and every worker syncs its
    own cache; one 200 proves only that one of them is ready. Raises TimeoutError with the last answer,
    or RuntimeError when `process` died meanwhile.
    """
    started = time.monotonic()
    deadline = started + deadline_seconds
    in_a_row, last = 0, "no answer yet"
    pause = threading.Event()
    while in_a_row < consecutive:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"server exited with code {process.returncode} before {path} was ready")
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} on port {port} not ready after {deadline_seconds:.0f}s: {last}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            last = f"HTTP {response.status} {body[:200]!r}"
            in_a_row = in_a_row + 1 if response.status == 200 else 0
        except OSError as exc:
            last, in_a_row = f"{exc.__class__.__name__}: {exc}", 0
        finally:
            connection.close()
        if in_a_row == 0:
            pause.wait(interval)
    return time.monotonic() - started


class ServerProcess:
    """A server started in its own process group and always stopped with the whole group.

    Why a group: gunicorn forks workers; signalling only the master could leave workers behind if it died.
    """

    def __init__(self, argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path = REPO,
                 log_path: Path | None = None) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self._log = open(log_path, "wb") if log_path else subprocess.DEVNULL  # noqa: SIM115 - closed in stop()
        self.process: subprocess.Popen[bytes] = subprocess.Popen(
            self.argv, cwd=cwd, env=dict(env) if env is not None else None, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log_tail(self, lines: int = 20) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        # Workers may outlive a master killed hard. Only while one of them is alive is the group id surely
        # still ours (Linux does not reuse a pid that is some process's group id).
        if _group_members(self.process.pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.process.pid, signal.SIGKILL)
        if hasattr(self._log, "close"):
            self._log.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- a static JSON server in its own process ----------------------------------------------------------------
def start_json_server(path: Path, port: int, restamp_key: str = "", log_path: Path | None = None,
                      restamp_every: float = 0.0) -> ServerProcess:
    """Serve the JSON document in `path` on every GET, from a separate process (see `serve_json`)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "serve-json", str(path), str(port)]
    if restamp_key:
        argv += [restamp_key, str(restamp_every)]
    return ServerProcess(argv, env=os.environ, log_path=log_path)


def serve_json(path: Path, port: int, restamp_key: str = "", restamp_every: float = 0.0) -> None:
    """Answer every GET with the document; with `restamp_key`, set that key to the current epoch time, at
    most once per `restamp_every` seconds (0: on every GET).

    Why restamp: the predictor snapshot carries `generated_at`, and the extender treats one older than
    GUARDGRID_SNAPSHOT_MAX_AGE_SECONDS as stale; a fixed file would silently switch the extender to its
    fallback half-way through a long run. Why not on every GET: the predictor publishes a new snapshot once
    per cycle (GUARDGRID_CYCLE_SECONDS), and an extender's refresher parses only a changed one.
    """
    import orjson  # imported here so the statistics helpers above stay standard-library only

    document = orjson.loads(Path(path).read_bytes())
    served = [orjson.dumps(document), -math.inf]  # the body, and when it was stamped
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            with lock:
                if restamp_key and time.time() - served[1] >= restamp_every:
                    document[restamp_key] = served[1] = time.time()
                    served[0] = orjson.dumps(document)
                body = served[0]
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - silence per-request logs
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Freeze what exists and pause the cyclic GC while a client loop is timed.

    Why: the benchmark client itself must not add collector pauses to the latencies it records.
    """
    import gc

    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.unfreeze()


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "serve-json":
        serve_json(Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4] if len(sys.argv) > 4 else "",
                   float(sys.argv[5]) if len(sys.argv) > 5 else 0.0)
    else:
        sys.exit("usage: python bench/common.py serve-json FILE PORT [RESTAMP_KEY [EVERY_SECONDS]]")
