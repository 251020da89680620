"""Benchmark of the admission webhook as deployed: gunicorn over TLS on loopback (`make bench`).

What it measures: client-observed latency per AdmissionReview (p50, p99) and throughput (reviews/s) of the
real server process (webhook/gunicorn_conf.py: gthread workers, TLS from `webhook.certs` in a temp dir),
with the reviews captured from a real kube-apiserver (tests/fixtures/admission/, a fresh uid each time).
Clients are separate processes with one keep-alive TLS connection each, as the API server keeps its
connections; they share the machine's cores with the server, so the numbers are a lower bound.

Targets on 2 cores: p99 <= 5 ms, >= 1000 reviews/s. The last line printed is one JSON object with the keys
p50_ms, p99_ms, reviews_per_s (plus the run's parameters).
"""

from __future__ import annotations

import argparse
import http.client
import json
import multiprocessing
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from webhook.certs import generate_ca, issue_serving_cert, write_pem  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "admission"
START_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def review_bodies(count: int) -> list[bytes]:
    """`count` request bodies cycling through the captured reviews, each with its own uid."""
    templates = [json.loads(path.read_bytes()) for path in sorted(FIXTURES.glob("*.json"))]
    bodies = []
    for index in range(count):
        review = templates[index % len(templates)]
        review["request"]["uid"] = str(uuid.uuid4())
        bodies.append(json.dumps(review).encode())
    return bodies


def client(port: int, ca_pem: str, requests: int, warmup: int, start_at: float) -> list[float]:
    """One client process: one keep-alive TLS connection, `requests` sequential reviews, latencies in s."""
    context = ssl.create_default_context(cadata=ca_pem)
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=10, context=context)
    headers = {"Content-Type": "application/json", "User-Agent": "kube-apiserver-admission"}
    bodies = review_bodies(requests + warmup)
    for body in bodies[:warmup]:
        connection.request("POST", "/mutate?timeout=5s", body=body, headers=headers)
        connection.getresponse().read()
    while time.time() < start_at:  # all clients start together after their warm-up
        time.sleep(0.001)
    latencies = []
    for body in bodies[warmup:]:
        started = time.perf_counter()
        connection.request("POST", "/mutate?timeout=5s", body=body, headers=headers)
        reply = connection.getresponse()
        payload = reply.read()
        latencies.append(time.perf_counter() - started)
        if reply.status != 200 or b'"allowed":true' not in payload:
            raise RuntimeError(f"unexpected answer {reply.status}: {payload[:200]!r}")
    connection.close()
    return latencies


def wait_until_serving(port: int, ca_pem: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    context = ssl.create_default_context(cadata=ca_pem)
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("gunicorn exited during start-up")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as raw:
                with context.wrap_socket(raw, server_hostname="127.0.0.1"):
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("gunicorn did not start serving TLS in time")


def percentile(sorted_values: list[float], fraction: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="reviews per client (default %(default)s)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (default %(default)s)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default %(default)s)")
    parser.add_argument("--warmup", type=int, default=200, help="reviews per client before timing")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="guardgrid-bench-webhook-") as temp:
        tls = Path(temp) / "tls"
        ca = generate_ca()
        serving = issue_serving_cert(ca, ["localhost"], ["127.0.0.1"])
        write_pem(tls / "tls.key", serving.key_pem, private=True)
        write_pem(tls / "tls.crt", serving.cert_pem)
        ca_pem = ca.cert_pem.decode()
        port = free_port()
        env = {key: value for key, value in os.environ.items() if not key.startswith("GUARDGRID_")}
        env.update({"GUARDGRID_TLS_CERT_FILE": str(tls / "tls.crt"), "GUARDGRID_TLS_KEY_FILE": str(tls / "tls.key"),
                    "GUARDGRID_LOG_LEVEL": "WARNING", "PROMETHEUS_MULTIPROC_DIR": str(Path(temp) / "metrics")})
        log = (Path(temp) / "gunicorn.log").open("wb")
        server = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "webhook/gunicorn_conf.py", "-b", f"127.0.0.1:{port}",
             "--workers", str(args.workers), "webhook.app:create_app()"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_until_serving(port, ca_pem, server)
            start_at = time.time() + 1.0 + 0.002 * args.warmup
            with multiprocessing.get_context("spawn").Pool(args.clients) as pool:
                jobs = [pool.apply_async(client, (port, ca_pem, args.requests, args.warmup, start_at))
                        for _ in range(args.clients)]
                results = [job.get(timeout=600) for job in jobs]
            wall = time.time() - start_at
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=10)
            log.close()

    latencies = sorted(value for result in results for value in result)
    summary: dict[str, Any] = {
        "p50_ms": round(percentile(latencies, 0.50) * 1000, 3),
        "p99_ms": round(percentile(latencies, 0.99) * 1000, 3),
        "reviews_per_s": round(len(latencies) / wall, 1),
        "reviews": len(latencies),
        "clients": args.clients,
        "workers": args.workers,
        "cpus": os.cpu_count(),
    }
    print(f"webhook over TLS on loopback: {summary['reviews']} reviews, {args.clients} keep-alive clients, "
          f"{args.workers} gunicorn workers, {os.cpu_count()} CPUs")
    print(f"  latency p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms; throughput "
          f"{summary['reviews_per_s']} reviews/s")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
