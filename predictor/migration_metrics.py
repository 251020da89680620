"""The migration decision counter (`guardgrid_migrations_total{decision, reason}`).

Why its own module: the predictor helper owns predictor/metrics.py; the counter is registered exactly once
(prometheus-client refuses a duplicate name) here, and predictor/metrics.py only needs to import this module
for it to appear on the predictor's /metrics (the default registry).
"""

from __future__ import annotations

from prometheus_client import Counter

from guardgrid import metrics as names

__all__ = ["MIGRATIONS", "count_decision"]

MIGRATIONS = Counter(names.MIGRATIONS.removesuffix("_total"),
                     "Speculative-migration decisions by decision (evicted, blocked, dry_run, skipped) and reason.",
                     ["decision", "reason"])


def count_decision(decision: str, reason: str) -> None:
    """The controller's default metrics hook."""
    MIGRATIONS.labels(decision=decision, reason=reason).inc()
