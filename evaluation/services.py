"""Start GuardGrid's three services as real processes on loopback, wait until they answer, stop them.

Why real processes: the demo should exercise what a cluster runs (gunicorn workers, TLS, the predictor's
loop), not an in-process shortcut. Each service runs in its own process group so that stopping it also
stops its gunicorn workers, and nothing outlives the demo even when it is interrupted.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import requests

__all__ = ["free_port", "Service", "ServiceError", "wait_until"]

REPO = Path(__file__).resolve().parent.parent


class ServiceError(RuntimeError):
    """A service did not start; the message carries the end of its log."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """Poll `check` until it is true or the deadline passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval)
    return check()


@dataclass
class Service:
    """One service process; `start()` then `wait_ready()`; `stop()` always (idempotent)."""

    name: str
    command: Sequence[str]
    env: Mapping[str, str]
    log_path: Path
    ready_url: str
    verify: str | bool = True
    process: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        environment = dict(os.environ)
        environment.update(self.env)
        environment.setdefault("PYTHONPATH", str(REPO))
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(list(self.command), cwd=REPO, env=environment, stdout=log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

    def ready(self) -> bool:
        if self.process is None or self.process.poll() is not None:
            return False
        try:
            return requests.get(self.ready_url, timeout=1.0, verify=self.verify).status_code == 200
        except requests.RequestException:
            return False

    def wait_ready(self, timeout: float = 45.0) -> None:
        if not wait_until(self.ready, timeout, 0.2):
            exited = self.process is not None and self.process.poll() is not None
            raise ServiceError(f"{self.name} {'exited' if exited else 'did not become ready'} "
                               f"({self.ready_url}); last log lines:\n{self.tail()}")

    def tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, signal.SIGTERM)  # gunicorn master and its workers
        except ProcessLookupError:
            return
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)


def python(*args: str) -> list[str]:
    return [sys.executable, *args]
