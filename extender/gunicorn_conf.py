"""gunicorn settings for the extender: `gunicorn -c extender/gunicorn_conf.py "extender.app:create_app()"`.

Why these: kube-scheduler calls filter then prioritize sequentially per pod over a kept-alive connection.
gunicorn's sync workers close every connection after one response (the benchmark saw 5,999 TCP connections
for 3,000 pairs), so we use gthread workers, which keep it open; two threads per worker let a slow
/metrics scrape never stall a scheduling request. Two workers keep both cores busy. Each worker
builds its own node/pod cache (no preload: threads do not survive fork). prometheus-client's multiprocess
mode needs PROMETHEUS_MULTIPROC_DIR (an emptyDir in the pod) and the dead-worker cleanup below.
"""

import os
import sys

from prometheus_client import multiprocess

bind = os.environ.get("GUARDGRID_EXTENDER_BIND", "0.0.0.0:8888")
workers = int(os.environ.get("GUARDGRID_EXTENDER_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUARDGRID_EXTENDER_THREADS", "2"))
keepalive = 30  # seconds an idle kube-scheduler connection stays open
timeout = 30
graceful_timeout = 10
accesslog = None
errorlog = "-"
# No control socket: gunicorn 27 would create it under $HOME, read-only in the pod and shared between
# gunicorns started side by side (tests, the demo).
control_socket_disable = True
worker_tmp_dir = os.environ.get("GUARDGRID_WORKER_TMP_DIR", "/tmp")  # read-only root: heartbeat files in /tmp


def on_starting(server):  # noqa: ANN001 - gunicorn hook signature
    """The metrics emptyDir outlives container restarts: start from zero, not from dead workers' counters."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.path.isdir(directory):
        for name in os.listdir(directory):
            if name.endswith(".db"):
                os.remove(os.path.join(directory, name))


def worker_exit(server, worker):  # noqa: ANN001 - gunicorn hook signature
    """In the worker, as it exits: the request metrics it counted since its last flush (extender.metrics)."""
    if "extender.metrics" in sys.modules:
        sys.modules["extender.metrics"].TALLY.flush()


def child_exit(server, worker):  # noqa: ANN001 - gunicorn hook signature
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(worker.pid)
