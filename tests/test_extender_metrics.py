"""The extender's request metrics, counted in process and flushed (extender.metrics.RequestTally), expose
exactly what observing each request as it happens would."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from extender.metrics import RequestTally
from guardgrid.metrics import LATENCY_BUCKETS

Metrics = tuple[Counter, Histogram, Counter]


def _metrics(registry: CollectorRegistry) -> Metrics:
    return (Counter("requests", "r", ["verb", "code"], registry=registry),
            Histogram("latency_seconds", "l", ["verb"], buckets=LATENCY_BUCKETS, registry=registry),
            Counter("rejected", "x", ["reason"], registry=registry))


def _tally(metrics: Metrics) -> RequestTally:
    requests, latency, rejected = metrics
    return RequestTally(requests.labels, latency.labels, rejected.labels, LATENCY_BUCKETS)


def _exposition(registry: CollectorRegistry) -> dict[str, float]:
    """The samples by name and labels, without the `_created` timestamps (which differ between two
    registries); sums rounded to 12 significant digits (added up in another order, they differ in the last
    bits of a double)."""
    samples = {}
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("#") or "_created" in line:
            continue
        key, value = line.rsplit(" ", 1)
        samples[key] = float(f"{float(value):.12g}") if "_sum" in key else float(value)
    return samples


def _traffic(seed: int, count: int) -> list[tuple[str, int, float, int]]:
    rng = random.Random(seed)
    bounds = [*LATENCY_BUCKETS, 7.0]
    return [(rng.choice(["filter", "prioritize", "preempt"]), rng.choice([200, 200, 200, 400, 503]),
             rng.choice([rng.choice(bounds), rng.uniform(0, 3)]), rng.randrange(5)) for _ in range(count)]


def _direct(metrics: Metrics) -> Callable[[str, int, float, int], None]:
    requests, latency, rejected = metrics

    def observe(verb: str, code: int, seconds: float, rejections: int) -> None:
        requests.labels(verb, str(code)).inc()
        latency.labels(verb).observe(seconds)
        if rejections:
            rejected.labels("oom_risk").inc(rejections)
    return observe


def test_flushed_counts_expose_what_observing_each_request_would_including_exact_bucket_bounds() -> None:
    direct_registry, tallied_registry = CollectorRegistry(), CollectorRegistry()
    observe = _direct(_metrics(direct_registry))
    tally = _tally(_metrics(tallied_registry))
    for index, (verb, code, seconds, rejections) in enumerate(_traffic(1, 2000)):
        observe(verb, code, seconds, rejections)
        tally.request(verb, code, seconds)
        if rejections:
            tally.rejected("oom_risk", rejections)
        if index % 700 == 0:
            tally.flush()  # flushes between requests add up, counting nothing twice
    tally.flush()
    tally.flush()  # an empty flush writes nothing
    assert _exposition(tallied_registry) == _exposition(direct_registry)


def test_nothing_is_exposed_before_a_flush() -> None:
    registry = CollectorRegistry()
    tally = _tally(_metrics(registry))
    tally.request("filter", 200, 0.001)
    assert b'requests_total{code="200",verb="filter"}' not in generate_latest(registry)
    tally.flush()
    assert b'requests_total{code="200",verb="filter"} 1.0' in generate_latest(registry)


def test_requests_counted_from_several_threads_during_flushes_are_all_counted_once() -> None:
    registry = CollectorRegistry()
    tally = _tally(_metrics(registry))
    traffic = _traffic(2, 4000)
    threads = [threading.Thread(target=lambda part=part: [tally.request(v, c, s) for v, c, s, _ in part])
               for part in (traffic[i::4] for i in range(4))]
    for thread in threads:
        thread.start()
    while any(thread.is_alive() for thread in threads):
        tally.flush()
    for thread in threads:
        thread.join()
    tally.flush()
    counted = sum(registry.get_sample_value("requests_total", {"verb": verb, "code": str(code)}) or 0
                  for verb in ("filter", "prioritize", "preempt") for code in (200, 400, 503))
    assert counted == len(traffic)
    assert sum(registry.get_sample_value("latency_seconds_count", {"verb": verb}) or 0
               for verb in ("filter", "prioritize", "preempt")) == len(traffic)


def test_the_flush_thread_starts_once_per_process() -> None:
    tally = _tally(_metrics(CollectorRegistry()))
    before = threading.active_count()
    tally.start(interval=3600)
    tally.start(interval=3600)
    assert threading.active_count() == before + 1


def test_a_worker_writes_what_it_counted_as_it_exits() -> None:
    from prometheus_client import REGISTRY

    from extender import gunicorn_conf, metrics

    def filters() -> float:
        return REGISTRY.get_sample_value("guardgrid_extender_requests_total", {"verb": "filter", "code": "299"}) or 0

    before = filters()
    metrics.TALLY.request("filter", 299, 0.001)
    assert filters() == before
    gunicorn_conf.worker_exit(None, None)
    assert filters() == before + 1
