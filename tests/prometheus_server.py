"""A real Prometheus for tests: a TSDB built from generated history, served on loopback.

How: the history is written as OpenMetrics text (one `# TYPE` block per metric family, samples with
timestamps in seconds, the mandatory `# EOF` line last), turned into TSDB blocks with
`promtool tsdb create-blocks-from openmetrics`, and served by `prometheus --storage.tsdb.path=<those blocks>`
on 127.0.0.1 and a free port, with no scrape targets. Everything lives in a temporary directory; `stop()`
ends the server (SIGTERM, then SIGKILL after a deadline). Debian's `prometheus` package provides both
binaries (scripts/ensure-prometheus.sh installs it; tests are skipped with a reason when it is missing).

Why backfilled blocks rather than a scraped test exporter: a six-hour history with NotReady episodes,
counter resets and OOM kills at chosen minutes, available the moment the server is ready, with exact
expected values to assert against.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["Series", "PrometheusServer", "SilentServer", "openmetrics_text", "prometheus_available", "free_port"]

READY_TIMEOUT_SECONDS = 30.0


def prometheus_available() -> bool:
    return shutil.which("prometheus") is not None and shutil.which("promtool") is not None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Series:
    """One time series: metric name, labels, and samples (epoch seconds, value); NaN values are skipped."""

    name: str
    labels: Mapping[str, str]
    times: np.ndarray
    values: np.ndarray
    kind: str = "gauge"
    extra: dict[str, str] = field(default_factory=dict)

    def label_text(self) -> str:
        escaped = (f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                   for k, v in sorted(self.labels.items()))
        return "{" + ",".join(escaped) + "}"


def openmetrics_text(series: Iterable[Series]) -> str:
    """OpenMetrics exposition of `series`, families contiguous, ending with `# EOF`."""
    families: dict[str, list[Series]] = {}
    for one in series:
        families.setdefault(one.name, []).append(one)
    lines: list[str] = []
    for name, members in families.items():
        lines.append(f"# TYPE {name} {members[0].kind}")
        for one in members:
            labels = one.label_text()
            for t, v in zip(one.times, one.values):
                if np.isfinite(v):
                    lines.append(f"{name}{labels} {float(v)!r} {float(t):.3f}")
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


class PrometheusServer:
    """A running Prometheus over backfilled history. Use `start()`; always `stop()` (fixtures do)."""

    def __init__(self, workdir: Path, process: subprocess.Popen[bytes], port: int) -> None:
        self.workdir = workdir
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    @classmethod
    def start(cls, workdir: Path, series: Iterable[Series] = ()) -> PrometheusServer:
        workdir.mkdir(parents=True, exist_ok=True)
        data = workdir / "data"
        data.mkdir(exist_ok=True)
        series = list(series)
        if series:
            source = workdir / "history.om"
            source.write_text(openmetrics_text(series))
            subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", str(source), str(data)],
                           check=True, capture_output=True, timeout=120)
        config = workdir / "prometheus.yml"
        config.write_text("global:\n  scrape_interval: 1h\n  evaluation_interval: 1h\n")
        port = free_port()
        log = (workdir / "prometheus.log").open("wb")
        process = subprocess.Popen(
            ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
             f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=3650d",
             "--log.level=warn"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        server = cls(workdir, process, port)
        try:
            server.wait_ready()
        except Exception:
            server.stop()
            raise
        return server

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited with {self.process.returncode}: "
                                   f"{(self.workdir / 'prometheus.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("prometheus did not become ready in time")
            threading.Event().wait(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


class SilentServer:
    """Accepts TCP connections and never answers: a Prometheus that hangs. Closed by `stop()`."""

    def __init__(self) -> None:
        self._socket = socket.socket()
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)
        self.url = f"http://127.0.0.1:{self._socket.getsockname()[1]}"

    def stop(self) -> None:
        self._socket.close()
