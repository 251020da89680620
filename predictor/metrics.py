"""The predictor's Prometheus metrics (names from guardgrid.metrics, which the alert rules use too).

One process, so the default registry; importing predictor.migration_metrics registers the migration counter
on the same registry, so `/metrics` shows it as well.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping

from prometheus_client import Gauge, Histogram

import predictor.migration_metrics  # noqa: F401 - registers guardgrid_migrations_total
from guardgrid import metrics as names

__all__ = ["NODE_OOM_RISK", "NODE_FAULT_RATE", "STANDBY_SLOTS", "MODE", "PROMETHEUS_UP", "LAST_SUCCESS",
           "CYCLE_DURATION", "publish_nodes", "STANDBY_STATES"]

NODE_OOM_RISK = Gauge(names.NODE_OOM_RISK, "Probability that the node's memory use exceeds allocatable at the "
                      "forecast horizon.", ["node"])
NODE_FAULT_RATE = Gauge(names.NODE_FAULT_RATE, "Predicted node failures (NotReady episodes, OOM kills) per hour.",
                        ["node"])
STANDBY_SLOTS = Gauge(names.STANDBY_SLOTS, "Standby slots: wanted by the plan, ready (running), pending "
                      "(created, not running yet).", ["state"])
MODE = Gauge(names.MODE, "Planning mode: 0 proactive (standby slots kept), 1 reactive (none).")
PROMETHEUS_UP = Gauge(names.PROMETHEUS_UP, "1 when the last cycle got node memory data from Prometheus, else 0 "
                      "(the forecast in use is then the last good one, marked stale).")
LAST_SUCCESS = Gauge(names.LAST_SUCCESS, "Unix time of the last cycle that produced a fresh forecast.")
CYCLE_DURATION = Histogram(names.CYCLE_DURATION, "Duration of one predictor cycle (query, forecast, plan, "
                           "reconcile, publish).", buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120))

STANDBY_STATES = ("wanted", "ready", "pending")

_published_nodes: set[str] = set()
_nodes_lock = threading.Lock()


def publish_nodes(risk: Mapping[str, float], fault_rate: Mapping[str, float]) -> None:
    """Per-node gauges for the current nodes; nodes that left the cluster lose their series."""
    with _nodes_lock:
        current = set(risk) | set(fault_rate)
        for gone in _published_nodes - current:
            for gauge in (NODE_OOM_RISK, NODE_FAULT_RATE):
                try:
                    gauge.remove(gone)
                except KeyError:
                    pass
        for node, value in risk.items():
            NODE_OOM_RISK.labels(node).set(value)
        for node, value in fault_rate.items():
            NODE_FAULT_RATE.labels(node).set(value)
        _published_nodes.clear()
        _published_nodes.update(current)
