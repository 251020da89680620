"""The extender's Prometheus metrics (names from guardgrid.metrics, so alert rules and code agree)."""

from __future__ import annotations

import logging
import math
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Sequence
from functools import lru_cache

from prometheus_client import Counter, Gauge, Histogram

from guardgrid import metrics as names

REQUESTS = Counter(names.EXTENDER_REQUESTS.removesuffix("_total"), "Extender requests by verb and HTTP code.",
                   ["verb", "code"])
LATENCY = Histogram(names.EXTENDER_LATENCY, "Time to answer one extender request.", ["verb"],
                    buckets=names.LATENCY_BUCKETS)
NODES_REJECTED = Counter(names.EXTENDER_NODES_REJECTED.removesuffix("_total"),
                         "Nodes the filter rejected, by reason.", ["reason"])
# Gauges in multiprocess mode need an aggregation: the freshest worker view is what matters.
SNAPSHOT_AGE = Gauge(names.EXTENDER_SNAPSHOT_AGE, "Age of the predictor snapshot in use (+Inf: none).",
                     multiprocess_mode="min")
CACHE_SYNCED = Gauge(names.EXTENDER_CACHE_SYNCED, "1 once the node/pod cache has listed both kinds.",
                     multiprocess_mode="min")

# The labelled children, looked up once: `labels()` runs ~12 lines of prometheus-client per call, and on the
# request path every distinct line executed costs with cold caches (docs/bench-extender.md). A child stays
# valid for the process's lifetime (nothing here removes label sets).
requests = lru_cache(maxsize=64)(REQUESTS.labels)  # (verb, code)
latency = lru_cache(maxsize=8)(LATENCY.labels)  # (verb)
rejected = lru_cache(maxsize=8)(NODES_REJECTED.labels)  # (reason)

log = logging.getLogger(__name__)


class RequestTally:
    """Requests by verb and code, their latencies and the filter's rejections, counted in process and written
    to prometheus-client once a second (and whenever /metrics is read in this worker, and at worker exit).

    Why: in multiprocess mode every write is a lock and a struct written into an mmap file; counting a
    request and observing its latency cost ~5 us warm, ~10 us with cold caches, for each of the scheduler's
    calls. They ran in the response's close(), which gunicorn's gthread worker finishes before it reads the
    connection's next request: kube-scheduler's next call waited for them. Here a request costs a lock and
    two dict updates; the metric files get one write per label set and bucket per second. The figures a
    scrape sees are at most `interval` seconds old, which a Prometheus scrape interval (15-60 s) hides.

    Histograms get whole bucket counts and sums through prometheus-client's per-child `_sum` and `_buckets`
    (its own layout: one value per bucket, made cumulative when collected; pinned in requirements.txt).
    tests/test_extender_metrics.py checks the exposition equals that of observing each request.
    """

    def __init__(self, requests: Callable[[str, str], Counter], latency: Callable[[str], Histogram],
                 rejected: Callable[[str], Counter], bounds: Sequence[float]) -> None:
        """`requests`, `latency`, `rejected`: the labelled children by label values; `bounds`: the latency
        histogram's bucket bounds, without +Inf."""
        self._children = (requests, latency, rejected)
        self._bounds = [*bounds, math.inf]
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = {}
        self._latencies: dict[str, tuple[list[int], list[float]]] = {}  # verb: (per-bucket counts, [sum])
        self._rejections: dict[str, int] = {}
        self._thread: threading.Thread | None = None

    def request(self, verb: str, code: int, seconds: float) -> None:
        """One answered request (hot_path.HotVerbs's `observe`)."""
        bucket = bisect_left(self._bounds, seconds)  # the first bound >= seconds, as Histogram.observe
        key = (verb, str(code))
        with self._lock:
            self._requests[key] = self._requests.get(key, 0) + 1
            latencies = self._latencies.get(verb)
            if latencies is None:
                latencies = self._latencies[verb] = ([0] * len(self._bounds), [0.0])
            latencies[0][bucket] += 1
            latencies[1][0] += seconds

    def rejected(self, reason: str, count: int) -> None:
        with self._lock:
            self._rejections[reason] = self._rejections.get(reason, 0) + count

    def flush(self) -> None:
        """Write what was counted since the last flush to the metrics."""
        with self._lock:
            requests, latencies, rejections = self._requests, self._latencies, self._rejections
            self._requests, self._latencies, self._rejections = {}, {}, {}
        request_child, latency_child, rejected_child = self._children
        for (verb, code), count in requests.items():
            request_child(verb, code).inc(count)
        for verb, (buckets, total) in latencies.items():
            child = latency_child(verb)
            child._sum.inc(total[0])  # noqa: SLF001 - see the class docstring
            for bucket, count in enumerate(buckets):
                if count:
                    child._buckets[bucket].inc(count)  # noqa: SLF001
        for reason, count in rejections.items():
            rejected_child(reason).inc(count)

    def start(self, interval: float = 1.0) -> None:
        """Flush every `interval` seconds from a daemon thread (once per process: later calls do nothing)."""
        with self._lock:
            if self._thread is not None:
                return
            self._thread = threading.Thread(target=self._run, args=(interval,), name="metrics-flush", daemon=True)
        self._thread.start()

    def _run(self, interval: float) -> None:
        while True:
            time.sleep(interval)
            try:
                self.flush()
            except Exception:  # a metrics bug must not stop the counting
                log.exception("writing the request metrics failed")


# The process's tally of the request path (one per gunicorn worker: workers import this after the fork).
TALLY = RequestTally(requests, latency, rejected, names.LATENCY_BUCKETS)
