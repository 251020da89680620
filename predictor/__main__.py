"""`python -m predictor`: the cycle loop and the HTTP server (GUARDGRID_LISTEN), until SIGTERM.

Served by gunicorn (embedded, one gthread worker): one worker because the loop must run exactly once per
pod (it holds the Lease and creates standby pods); threads so /metrics and /v1/snapshot are answered while a
cycle runs. The app is built inside the worker (no preload: threads do not survive fork). On SIGTERM gunicorn
finishes in-flight requests and the worker_exit hook stops the loop, the elector and the informer, so the
Lease is released by expiry and no half-done cycle is left behind. If the worker dies, gunicorn starts a new
one, which rebuilds everything from the cluster (the planner keeps no state that matters across restarts).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from gunicorn.app.base import BaseApplication

from guardgrid.config import ConfigError, load_settings

__all__ = ["main"]


class _PredictorServer(BaseApplication):  # type: ignore[misc] - gunicorn is untyped
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        from predictor.app import create_app

        return create_app()


def _worker_exit(server: Any, worker: Any) -> None:  # gunicorn hook signature
    from predictor.app import stop_all

    stop_all()


def main() -> int:
    try:
        settings = load_settings()
    except ConfigError as exc:
        sys.stderr.write(f"guardgrid predictor: {exc}\n")
        return 2
    options = {
        "bind": settings.listen,
        "workers": 1,
        "worker_class": "gthread",
        "threads": 4,
        "timeout": 120,  # a cycle runs on its own thread; this only bounds a wedged worker
        "graceful_timeout": 10,
        "keepalive": 30,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": settings.log_level.lower(),
        "worker_tmp_dir": os.environ.get("GUARDGRID_WORKER_TMP_DIR", "/tmp"),  # read-only root: /tmp is an emptyDir
        "worker_exit": _worker_exit,
        "proc_name": "guardgrid-predictor",
        "control_socket_disable": True,  # gunicorn >= 25 would create ~/.gunicorn/: read-only root filesystem
    }
    _PredictorServer(options).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
