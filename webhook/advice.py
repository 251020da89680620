"""Checkpoint advice for the webhook: the predictor snapshot's per-job interval, cached with a TTL.

Why a cache on the request path rather than a background refresher: a webhook replica may admit no training
pod for hours; polling the predictor all that time buys nothing. The snapshot is fetched when a pod needs it
and kept for `GUARDGRID_ADVICE_CACHE_SECONDS`, so a burst of pods from one Job costs one HTTP call per worker.

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

    def lookup(self, job: str) -> Advice:
        """The advised interval for `job`; None without a warning when the predictor does not know the job
        (yet) or none is configured, None with a warning when it could not be asked."""
        if not self._configured:
            return Advice(None)
        result = self._snapshot()
        if result.snapshot is None:
            return Advice(None, UNAVAILABLE_WARNING)
        advice = result.snapshot.jobs.get(job)
        if advice is None:
            return Advice(None)
        return Advice(advice.checkpoint_interval_seconds)
