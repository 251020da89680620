"""Metric names every service exports, and the registry that is correct under several gunicorn workers.

Why here: the alert rules in manifests/ are written against these exact names; keeping them in one
module means a rename shows up as one diff next to the rules it breaks.

Under gunicorn each worker is a process with its own counters; prometheus-client's multiprocess mode
(`PROMETHEUS_MULTIPROC_DIR`, a writable emptyDir in the pod) aggregates them at scrape time. Outside gunicorn
(tests, the predictor's single process) the default registry is used.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client import multiprocess

__all__ = ["render_metrics", "CONTENT_TYPE_LATEST", "LATENCY_BUCKETS"]

# --- extender ---------------------------------------------------------------------------------------------
EXTENDER_REQUESTS = "guardgrid_extender_requests_total"  # labels: verb, code
EXTENDER_LATENCY = "guardgrid_extender_request_duration_seconds"  # histogram, label: verb
EXTENDER_NODES_REJECTED = "guardgrid_extender_nodes_rejected_total"  # label: reason (oom_risk, unknown_node, ...)
EXTENDER_SNAPSHOT_AGE = "guardgrid_extender_snapshot_age_seconds"  # gauge; +Inf when there is none
EXTENDER_CACHE_SYNCED = "guardgrid_extender_cache_synced"  # gauge 0/1

# --- webhook ----------------------------------------------------------------------------------------------
WEBHOOK_REVIEWS = "guardgrid_webhook_reviews_total"  # label: result (mutated, unchanged, skipped, denied, error)
WEBHOOK_LATENCY = "guardgrid_webhook_review_duration_seconds"  # histogram

# --- predictor --------------------------------------------------------------------------------------------
NODE_OOM_RISK = "guardgrid_node_oom_risk"  # gauge, label: node
NODE_FAULT_RATE = "guardgrid_node_fault_rate"  # gauge (failures/hour), label: node
STANDBY_SLOTS = "guardgrid_standby_slots"  # gauge, label: state (wanted, ready, pending)
MODE = "guardgrid_mode"  # gauge: 0 proactive, 1 reactive
PROMETHEUS_UP = "guardgrid_prometheus_up"  # gauge 0/1: last query cycle reached Prometheus with data
LAST_SUCCESS = "guardgrid_predictor_last_success_timestamp_seconds"  # gauge
CYCLE_DURATION = "guardgrid_predictor_cycle_duration_seconds"  # histogram
MIGRATIONS = "guardgrid_migrations_total"  # counter, labels: decision (evicted, blocked, dry_run, skipped), reason

# Request latencies of the extender and webhook are a few milliseconds; the default buckets start at 5 ms.
LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


def render_metrics() -> bytes:
    """The /metrics body: aggregated over workers in multiprocess mode, else the default registry."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()
