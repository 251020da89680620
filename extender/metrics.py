"""The extender's Prometheus metrics (names from guardgrid.metrics, so alert rules and code agree)."""

from __future__ import annotations

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
