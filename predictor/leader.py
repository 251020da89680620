"""Leader election over a coordination.k8s.io Lease: only the leader creates/deletes slots and migrates.

Why: with two replicas (a warm spare, see the deployment), two reconcilers would race each other creating and
deleting the same slots. Every replica still computes and serves the snapshot; only acting is elected.

Timing follows client-go's leaderelection defaults scaled down: the lease lasts LEASE_SECONDS, a background
thread renews it every RETRY_SECONDS, and a replica considers itself leader only while its last successful
renewal is younger than RENEW_DEADLINE_SECONDS. The renew deadline is shorter than the lease, so an old
leader that cannot renew stops acting before anyone else can take the lease over.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
import uuid
from collections.abc import Callable

from guardgrid.kubeapi.base import KubeAPI, KubeAPIError

__all__ = ["LeaderElector", "LEASE_NAME", "LEASE_SECONDS", "RENEW_DEADLINE_SECONDS", "RETRY_SECONDS",
           "default_identity"]

log = logging.getLogger(__name__)

LEASE_NAME = "guardgrid-predictor"
LEASE_SECONDS = 15
RENEW_DEADLINE_SECONDS = 10.0
RETRY_SECONDS = 2.0


def default_identity(pod_name: str) -> str:
    """The pod name (downward API) when set, else host name plus a random suffix (never shared by two)."""
    return pod_name or f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


class LeaderElector:
    """Keeps trying to hold the Lease; `is_leader()` is cheap and safe to call from any thread."""

    def __init__(self, api: KubeAPI, namespace: str, identity: str, name: str = LEASE_NAME,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.api = api
        self.namespace = namespace
        self.identity = identity
        self.name = name
        self.clock = clock
        self._renewed_at: float | None = None
        self._leading = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def try_acquire(self) -> bool:
        """One attempt to take or renew the Lease; returns whether this replica now leads."""
        try:
            held = self.api.acquire_lease(self.namespace, self.name, self.identity, LEASE_SECONDS)
        except KubeAPIError as exc:
            log.warning("leader election: lease %s/%s unavailable: %s (HTTP %s)", self.namespace, self.name, exc,
                        exc.status)
            held = False
        except Exception:  # noqa: BLE001 - an unexpected client error must not kill the elector thread
            log.exception("leader election: lease %s/%s attempt failed", self.namespace, self.name)
            held = False
        with self._lock:
            if held:
                self._renewed_at = self.clock()
            was = self._leading
            self._leading = self._fresh()
            now_leading = self._leading
        if now_leading != was:
            log.info("leader election: %s %s leadership of %s/%s", self.identity,
                     "acquired" if now_leading else "lost", self.namespace, self.name)
        return now_leading

    def _fresh(self) -> bool:
        return self._renewed_at is not None and self.clock() - self._renewed_at < RENEW_DEADLINE_SECONDS

    def is_leader(self) -> bool:
        with self._lock:
            return self._fresh()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.try_acquire()
            self._stop.wait(RETRY_SECONDS)

    def stop(self) -> None:
        """Stop renewing (the Lease then expires, and another replica takes over within LEASE_SECONDS)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            self._renewed_at = None
            self._leading = False
