"""The predictor's long-running parts: node/pod cache, leader election, and the cycle loop thread.

Why a class apart from the HTTP app: tests and the benchmark drive `run_once()` directly; the app only reads
`latest` (an immutable snapshot and its pre-encoded JSON, swapped by one reference assignment), so a request
never waits for a cycle and a cycle never waits for a request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


from guardgrid.config import Settings
from guardgrid.informer import ClusterCache
from guardgrid.kubeapi.base import KubeAPI
from guardgrid.snapshot import Snapshot
from predictor.cycle import CycleReport, PredictorCycle
from predictor.leader import LeaderElector, default_identity
from predictor.sources import MetricsSource, make_source

__all__ = ["PredictorService", "Published"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Published:
    snapshot: Snapshot
    body: bytes  # the JSON served at /v1/snapshot
    report: CycleReport


class PredictorService:
    """Owns the threads; `start()`/`stop()` bracket its life, `run_once()` is one cycle on the caller's thread."""

    def __init__(self, settings: Settings, api: KubeAPI, source: MetricsSource | None = None,
                 clock: Callable[[], float] = time.time, elector: LeaderElector | None = None,
                 cache: ClusterCache | None = None) -> None:
        self.settings = settings
        self.api = api
        self.cache = cache or ClusterCache(api, watch_timeout=settings.cache_resync_seconds)
        self.source = source or make_source(settings, lambda: self.cache.state)
        self.elector = elector or LeaderElector(api, settings.namespace, default_identity(settings.pod_name))
        self.cycle = PredictorCycle(settings, self.cache.state, self.source, api, leader=self.elector.is_leader,
                                    clock=clock)
        self.latest: Published | None = None
        self.last_error = ""
        self.cycles = 0
        self._heartbeat = time.monotonic()
        self._done = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- one cycle ----------------------------------------------------------------------------------------
    def run_once(self) -> Published | None:
        """One cycle; never raises (a bug is logged and the previous snapshot stays published)."""
        self._heartbeat = time.monotonic()
        if not self.cache.synced:
            self.last_error = "node/pod cache not synced yet"
            return None
        try:
            report = self.cycle.run()
            body = report.snapshot.to_json()
        except Exception as exc:  # noqa: BLE001 - the loop must outlive any surprise
            log.exception("predictor cycle failed; keeping the previous snapshot")
            self.last_error = f"cycle failed: {exc.__class__.__name__}: {exc}"
            return None
        published = Published(report.snapshot, body, report)
        self.latest = published
        self.last_error = report.reason
        with self._done:
            self.cycles += 1
            self._done.notify_all()
        log.debug("cycle done in %.3fs: source=%s stale=%s mode=%s leader=%s slots=%d", report.duration_seconds,
                  report.source, report.stale, report.snapshot.mode, report.leader, len(report.slots))
        return published

    def wait_for_cycles(self, count: int, timeout: float) -> bool:
        """Block until at least `count` cycles have completed (tests, start-up tools)."""
        deadline = time.monotonic() + timeout
        with self._done:
            while self.cycles < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._done.wait(remaining)
        return True

    # --- the loop -----------------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self.cache.start()
        self.elector.start()
        self._thread = threading.Thread(target=self._loop, name="predictor-cycle", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        period = self.settings.cycle_seconds
        while not self._stop.is_set():
            self._heartbeat = time.monotonic()
            if self.cache.wait_synced(min(1.0, period)):
                break
            if self._stop.is_set():
                return
            log.info("waiting for the node/pod cache to sync before the first cycle")
        while not self._stop.is_set():
            began = time.monotonic()
            self.run_once()
            self._stop.wait(max(0.0, period - (time.monotonic() - began)))

    def healthy(self) -> tuple[bool, str]:
        """Live while the loop thread runs and has not been stuck for three periods (at least a minute)."""
        if self._thread is None:
            return True, "not started (driven by its caller)"
        if not self._thread.is_alive():
            return False, "the cycle thread has stopped"
        quiet = time.monotonic() - self._heartbeat
        limit = max(60.0, 3 * self.settings.cycle_seconds)
        if quiet > limit:
            return False, f"no cycle for {quiet:.0f}s (limit {limit:.0f}s)"
        return True, "ok"

    def stop(self) -> None:
        """Stop the loop, the elector (its Lease then expires) and the cache; close the source."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.elector.stop()
        self.cache.stop()
        self.source.close()
