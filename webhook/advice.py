"""Checkpoint advice for the webhook: the predictor snapshot's per-job interval, cached with a TTL.

A job the snapshot does not list yet (the predictor only advises jobs with running pods) still gets advice:
the lookup hands back the snapshot's node fault rates and the mutation turns them, with the pod's own
checkpoint cost, into the interval for one pod on an average node (`guardgrid.checkpoint.advise_unplaced`).
A job's first pod is when the advice matters most: the env is written once, at admission.

Why a cache on the request path rather than a background refresher: a webhook replica may admit no training
pod for hours; polling the predictor all that time buys nothing. The snapshot is fetched when a pod needs it
and kept for `GUARDGRID_ADVICE_CACHE_SECONDS`, so a burst of pods from one Job costs one HTTP call per worker.

Staleness: a snapshot the predictor marked `stale` (Prometheus down, last-known data) is used like a fresh
one. Advice is not time-critical: fault rates move over hours, and an interval from last-known rates beats
none. The cache's TTL only bounds how long a worker keeps one snapshot.

Fail open: an unreachable or broken predictor yields no advice plus a warning, never an error. The failure is
cached too (for at most `_FAILURE_TTL_SECONDS`), so a dead predictor costs one timeout per worker per period
instead of one per pod, which keeps admission well inside the API server's 5 s webhook timeout.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final

import requests
from cachetools import TTLCache

from guardgrid import keys
from guardgrid.config import Settings
from guardgrid.snapshot import Snapshot
from guardgrid.snapshot_client import SnapshotFetch, fetch_snapshot
from webhook.mutation import Advice

__all__ = ["AdviceCache"]

log = logging.getLogger(__name__)
_FAILURE_TTL_SECONDS: Final = 5.0
UNAVAILABLE_WARNING: Final = (f"checkpoint advice unavailable (predictor unreachable); "
                              f"{keys.ENV_CHECKPOINT_INTERVAL} not set")


class AdviceCache:
    """`lookup(job)` -> Advice. Thread-safe: gunicorn's gthread workers call it from several threads."""

    def __init__(self, predictor_url: str, timeout: float, ttl: float,
                 fetch: Callable[[], SnapshotFetch] | None = None,
                 timer: Callable[[], float] = time.monotonic) -> None:
        self._configured = bool(predictor_url) or fetch is not None
        self._session: requests.Session | None = None
        self._fetch = fetch or (lambda: fetch_snapshot(predictor_url, timeout, self._http()))
        self._good: TTLCache[str, SnapshotFetch] = TTLCache(maxsize=1, ttl=ttl, timer=timer)
        self._bad: TTLCache[str, SnapshotFetch] = TTLCache(maxsize=1, ttl=min(ttl, _FAILURE_TTL_SECONDS),
                                                          timer=timer)
        self._lock = threading.Lock()
        self._rates: tuple[Snapshot | None, tuple[float, ...]] = (None, ())  # per snapshot, computed once
        self.fetches = 0  # how many times the predictor was asked (tests and logs)

    @classmethod
    def from_settings(cls, settings: Settings) -> AdviceCache:
        return cls(settings.predictor_url, settings.http_timeout_seconds, settings.advice_cache_seconds)

    def _http(self) -> requests.Session:
        # Created on first use, i.e. inside the gunicorn worker after fork, never shared across processes.
        if self._session is None:
            self._session = requests.Session()
        return self._session

    def _snapshot(self) -> SnapshotFetch:
        with self._lock:  # one fetch at a time; the others then read its cached result
            cached = self._good.get("snapshot") or self._bad.get("snapshot")
            if cached is not None:
                return cached
            self.fetches += 1
            result = self._fetch()
            if result.snapshot is not None:
                self._good["snapshot"] = result
            else:
                log.warning("checkpoint advice unavailable: %s", result.error)
                self._bad["snapshot"] = result
            return result

    def _node_rates(self, snapshot: Snapshot) -> tuple[float, ...]:
        """The snapshot's node fault rates, collected once per snapshot rather than once per pod."""
        with self._lock:
            cached_for, rates = self._rates
            if cached_for is not snapshot:
                rates = tuple(node.fault_rate_per_hour for node in snapshot.nodes.values())
                self._rates = (snapshot, rates)
            return rates

    def lookup(self, job: str) -> Advice:
        """The snapshot's interval for `job`; for a job it does not know (yet), its node fault rates for the
        mutation to advise the first pod from; None without a warning when no predictor is configured, None
        with a warning when it could not be asked."""
        if not self._configured:
            return Advice(None)
        result = self._snapshot()
        if result.snapshot is None:
            return Advice(None, UNAVAILABLE_WARNING)
        advice = result.snapshot.jobs.get(job)
        if advice is None:
            return Advice(None, unplaced_node_fault_rates=self._node_rates(result.snapshot))
        return Advice(advice.checkpoint_interval_seconds)
