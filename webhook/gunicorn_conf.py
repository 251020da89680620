"""gunicorn settings for the webhook: `gunicorn -c webhook/gunicorn_conf.py "webhook.app:create_app()"`.

TLS: certificate and key paths come from GUARDGRID_TLS_CERT_FILE / GUARDGRID_TLS_KEY_FILE (required: the API
server only calls webhooks over HTTPS). Rotation is picked up two ways:
- SIGHUP: gunicorn re-reads this file and replaces its workers; the new workers load the files afresh.
- Without a signal: gunicorn builds the TLS context per new connection through the `ssl_context` hook below,
  which keeps one context per worker and reloads it when either file changes on disk (cert-manager's Secret
  volume swaps both atomically). A pair that does not load (half-written, mismatched) is logged and the last
  good context stays in service, so a bad rotation never takes the webhook down.

Workers: gthread, so the API server's keep-alive connections are kept (the sync worker closes every
connection, and a TLS handshake per review would cost more than the review). Two processes use both cores;
threads keep a slow predictor call in one request from stalling the others. Override with gunicorn's own
flags, e.g. `GUNICORN_CMD_ARGS="--workers 4"`; `-b` overrides the bind address (tests, benchmark).

Metrics: prometheus-client's multiprocess mode. PROMETHEUS_MULTIPROC_DIR (an emptyDir in the pod) is set to a
fresh temp directory when absent, emptied at start and cleaned of dead workers, and it is set here, before
any worker imports prometheus_client, because the library picks its storage at import time.
"""

from __future__ import annotations

import logging
import os
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from guardgrid.config import load_settings

_settings = load_settings()
if not _settings.tls_cert_file or not _settings.tls_key_file:
    raise SystemExit("GUARDGRID_TLS_CERT_FILE and GUARDGRID_TLS_KEY_FILE must both be set: the API server "
                     "calls webhooks over HTTPS only (see `python -m webhook.certs`)")

if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="guardgrid-webhook-metrics-")
Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).mkdir(parents=True, exist_ok=True)

bind = ["0.0.0.0:8443"]
certfile = _settings.tls_cert_file
keyfile = _settings.tls_key_file
worker_class = "gthread"
workers = 2
threads = 4
keepalive = 75  # seconds an idle keep-alive connection of the API server stays open for reuse
timeout = 30
graceful_timeout = 10
accesslog = None
errorlog = "-"
loglevel = _settings.log_level.lower()
# No `gunicornc` control socket: it would be created under $HOME (read-only in the pod) and several gunicorns
# on one machine (tests, benchmark) would fight over the same default path.
control_socket_disable = True
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # heartbeat files; root fs is read-only

_log = logging.getLogger("guardgrid.webhook.tls")
_FileStamp = tuple[int, int, int, int]


def _stamp(path: str) -> _FileStamp:
    info = os.stat(path)  # follows symlinks: a Secret volume's `..data` swap changes inode and mtime
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


class _ReloadingContext:
    """One SSLContext per worker, rebuilt when the certificate or key file changes; last good one kept."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._context: ssl.SSLContext | None = None
        self._stamps: tuple[_FileStamp, _FileStamp] | None = None

    def get(self, conf: Any, factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
        try:
            stamps = (_stamp(conf.certfile), _stamp(conf.keyfile))
        except OSError as exc:
            if self._context is None:
                raise
            _log.error("TLS files unreadable (%s); keeping the current certificate", exc)
            return self._context
        with self._lock:
            if self._context is not None and stamps == self._stamps:
                return self._context
            try:
                context = factory()
            except (OSError, ssl.SSLError, ValueError) as exc:
                if self._context is None:
                    raise
                _log.error("new TLS certificate/key did not load (%s); keeping the current one", exc)
                self._stamps = stamps  # do not retry on every connection; the next change triggers a reload
                return self._context
            if self._context is not None:
                _log.info("TLS certificate reloaded from %s", conf.certfile)
            self._context, self._stamps = context, stamps
            return context


_contexts = _ReloadingContext()


def ssl_context(conf: Any, default_ssl_context_factory: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
    """gunicorn hook, called per new connection: the cached context unless the files changed."""
    return _contexts.get(conf, default_ssl_context_factory)


def post_worker_init(worker: Any) -> None:
    """Load the TLS pair as the worker starts, so it has a last good context before any rotation begins.

    A failure is logged, not raised: raising here would make gunicorn halt the whole server. Such a worker
    refuses TLS connections until the files load (and says why in the log)."""
    from gunicorn import sock

    try:
        sock.ssl_context(worker.cfg)
    except (OSError, ssl.SSLError, ValueError) as exc:
        _log.error("TLS certificate/key did not load at worker start: %s", exc)


def when_ready(server: Any) -> None:
    """Load the TLS pair in the master, before workers are forked, so every worker inherits a good context.

    Why: a worker that first loads the files after a broken rotation (a late boot, or a replacement for a
    crashed worker) would have no last-good pair and refuse TLS. Forked from the master it starts with the
    pair that was good at server start and reloads only when the files change and load."""
    from gunicorn import sock

    try:
        sock.ssl_context(server.cfg)
    except (OSError, ssl.SSLError, ValueError) as exc:
        _log.error("TLS certificate/key did not load at server start: %s", exc)


def on_starting(server: Any) -> None:
    """Master start (not on HUP): drop metric files a previous run in the same emptyDir left behind."""
    for stale in Path(os.environ["PROMETHEUS_MULTIPROC_DIR"]).glob("*.db"):
        stale.unlink(missing_ok=True)


def child_exit(server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess  # imported late: the env var above must come first

    multiprocess.mark_process_dead(worker.pid)
