"""Fetching the predictor snapshot over HTTP, for the extender's refresher and the webhook's advice cache.

Why one client: both must treat an unreachable or malformed predictor the same way, as "no snapshot"
(fail open) with a reason for the log, never as an exception on a request path.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import requests

from guardgrid.snapshot import Snapshot, SnapshotError

__all__ = ["SnapshotFetch", "fetch_snapshot", "SnapshotRefresher"]

log = logging.getLogger(__name__)
SNAPSHOT_PATH = "/v1/snapshot"


@dataclass(frozen=True, slots=True)
class SnapshotFetch:
    snapshot: Snapshot | None
    error: str = ""
    body: bytes = b""
    unchanged: bool = False  # the body equals `previous_body`: not parsed again, the caller keeps its copy


def fetch_snapshot(base_url: str, timeout: float, session: requests.Session | None = None,
                   previous_body: bytes = b"") -> SnapshotFetch:
    """GET <base_url>/v1/snapshot; never raises: a failure comes back as `error`.

    Parsing a 5000-node snapshot holds the GIL for tens of milliseconds, stalling request threads; the
    predictor republishes only once per cycle, so an unchanged body is recognised and not parsed again.
    """
    if not base_url:
        return SnapshotFetch(None, "no predictor configured (GUARDGRID_PREDICTOR_URL is empty)")
    url = base_url.rstrip("/") + SNAPSHOT_PATH
    try:
        response = (session or requests).get(url, timeout=timeout)
    except requests.RequestException as exc:
        return SnapshotFetch(None, f"predictor unreachable at {url}: {exc.__class__.__name__}")
    if response.status_code != 200:
        return SnapshotFetch(None, f"predictor answered HTTP {response.status_code} at {url}")
    if previous_body and response.content == previous_body:
        return SnapshotFetch(None, body=response.content, unchanged=True)
    try:
        return SnapshotFetch(Snapshot.from_json(response.content), body=response.content)
    except SnapshotError as exc:
        return SnapshotFetch(None, f"predictor snapshot rejected: {exc}")


class SnapshotRefresher:
    """Keeps the latest good snapshot fresh from a background thread; readers never block on HTTP.

    A failed fetch keeps the last good snapshot (its age grows, so callers see it go stale).
    """

    def __init__(self, base_url: str, interval: float, timeout: float,
                 fetch: Callable[[], SnapshotFetch] | None = None,
                 on_update: Callable[[Snapshot], None] | None = None) -> None:
        self._session = requests.Session()
        self._fetch = fetch or (lambda: fetch_snapshot(base_url, timeout, self._session, self._body))
        self._body = b""
        self._on_update = on_update
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.latest: Snapshot | None = None
        self.last_error = ""
        self.last_attempt = 0.0

    def refresh_once(self) -> None:
        result = self._fetch()
        self.last_attempt = time.time()
        if result.unchanged:
            self.last_error = ""
        elif result.snapshot is not None:
            if self._on_update is not None:
                self._on_update(result.snapshot)  # e.g. pre-align it, before requests can see it
            self.latest = result.snapshot
            self._body = result.body
            self.last_error = ""
        elif result.error != self.last_error:
            log.warning("snapshot refresh failed, keeping last good one: %s", result.error)
            self.last_error = result.error

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="snapshot-refresher", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.refresh_once()
            except Exception:  # noqa: BLE001 - the refresher must outlive any surprise
                log.exception("snapshot refresher error")
            self._stop.wait(self._interval)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
