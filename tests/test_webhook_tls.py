"""The webhook as it runs in the pod: gunicorn over TLS on loopback, certificates from webhook.certs.

A real server process, real TLS with CA verification, real AdmissionReview requests; certificate rotation
with and without SIGHUP. Every server started here is stopped in the fixture's teardown.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509

from guardgrid import metrics as names
from webhook.certs import KeyPair, generate_ca, issue_serving_cert, service_dns_names, write_pem

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "tests" / "fixtures" / "admission" / "pod-create-by-job-controller.json"
DEADLINE_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = DEADLINE_SECONDS) -> None:
    """Poll `condition` until it holds or the deadline passes (no fixed sleeps)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    tls_dir: Path
    ca: KeyPair
    log: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cadata=self.ca.cert_pem.decode())

    def served_serial(self) -> int:
        """Serial number of the certificate a *new* connection is offered."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
            with self.client_context().wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                der = tls.getpeercert(binary_form=True)
        assert der is not None
        return x509.load_der_x509_certificate(der).serial_number

    def connection(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=10, context=self.client_context())

    def rotate(self, key_too: bool = True) -> KeyPair:
        """Write a new serving pair signed by the same CA (the key first, as webhook.certs does)."""
        pair = issue_serving_cert(self.ca, ["localhost"], ["127.0.0.1"])
        if key_too:
            write_pem(self.tls_dir / "tls.key", pair.key_pem, private=True)
        write_pem(self.tls_dir / "tls.crt", pair.cert_pem)
        return pair

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def _answers_tls(server: Server) -> bool:
    assert server.process.poll() is None, server.output()
    try:
        server.served_serial()
        return True
    except OSError:
        return False


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    ca = generate_ca()
    pair = issue_serving_cert(ca, service_dns_names("guardgrid-webhook", "guardgrid-system") + ["localhost"],
                              ["127.0.0.1"])
    tls_dir = tmp_path / "tls"
    write_pem(tls_dir / "tls.key", pair.key_pem, private=True)
    write_pem(tls_dir / "tls.crt", pair.cert_pem)
    port = free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith("GUARDGRID_")}
    env.update({"GUARDGRID_TLS_CERT_FILE": str(tls_dir / "tls.crt"), "GUARDGRID_TLS_KEY_FILE": str(tls_dir / "tls.key"),
                "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "metrics")})
    log = tmp_path / "gunicorn.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-c", "webhook/gunicorn_conf.py", "-b", f"127.0.0.1:{port}",
             "webhook.app:create_app()"], cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
    running = Server(process, port, tls_dir, ca, log)
    try:
        wait_for(lambda: _answers_tls(running), "gunicorn to serve TLS")
        yield running
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def test_a_real_review_over_verified_tls_is_answered_with_a_patch(server: Server) -> None:
    connection = server.connection()
    try:
        connection.request("POST", "/mutate?timeout=5s", body=FIXTURE.read_bytes(),
                           headers={"Content-Type": "application/json", "User-Agent": "kube-apiserver-admission"})
        reply = connection.getresponse()
        body = json.loads(reply.read())
        assert reply.status == 200
        assert body["response"]["uid"] == "2775e424-2442-49b1-877f-3ea4a7748f90"
        assert body["response"]["patchType"] == "JSONPatch"
        # Same connection again: keep-alive works (the API server reuses its connections).
        connection.request("GET", "/healthz")
        health = connection.getresponse()
        assert (health.status, health.read()) == (200, b"ok\n")
    finally:
        connection.close()


def test_metrics_are_aggregated_across_gunicorn_workers(server: Server) -> None:
    for _ in range(6):  # fresh connections spread over both workers
        connection = server.connection()
        try:
            connection.request("POST", "/mutate", body=FIXTURE.read_bytes(),
                               headers={"Content-Type": "application/json"})
            assert connection.getresponse().status == 200
        finally:
            connection.close()
    connection = server.connection()
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    assert f'{names.WEBHOOK_REVIEWS}{{result="mutated"}} 6.0' in text
    assert f"{names.WEBHOOK_LATENCY}_count 6.0" in text


def test_a_hup_after_replacing_the_files_serves_the_new_certificate(server: Server) -> None:
    old = server.served_serial()
    new = server.rotate()
    assert new.certificate.serial_number != old
    os.kill(server.process.pid, signal.SIGHUP)
    wait_for(lambda: server.served_serial() == new.certificate.serial_number, "the rotated certificate")
    wait_for(lambda: "Hang up" in server.output(), "gunicorn to log the HUP")
    connection = server.connection()
    try:
        connection.request("POST", "/mutate?timeout=5s", body=FIXTURE.read_bytes())
        assert connection.getresponse().status == 200
    finally:
        connection.close()
    assert server.process.poll() is None


def test_rotated_files_are_served_on_the_next_connection_even_without_a_signal(server: Server) -> None:
    new = server.rotate()
    wait_for(lambda: server.served_serial() == new.certificate.serial_number, "the rotated certificate")


def test_a_certificate_without_its_key_keeps_the_last_good_pair_in_service(server: Server) -> None:
    old = server.served_serial()
    server.rotate(key_too=False)  # new certificate, old key: does not load
    for _ in range(5):
        assert server.served_serial() == old
    fixed = server.rotate()
    wait_for(lambda: server.served_serial() == fixed.certificate.serial_number, "the repaired pair")
    assert "did not load" in server.output()
    assert server.process.poll() is None


def test_gunicorn_refuses_to_start_without_certificate_paths() -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("GUARDGRID_")}
    done = subprocess.run([sys.executable, "-m", "gunicorn", "-c", "webhook/gunicorn_conf.py", "-b",
                           f"127.0.0.1:{free_port()}", "webhook.app:create_app()"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "GUARDGRID_TLS_CERT_FILE" in done.stdout + done.stderr


def _workers(server: Server) -> set[int]:
    children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    return {int(pid) for pid in children}


def test_a_worker_replaced_after_a_broken_rotation_still_serves_the_last_good_certificate(server: Server) -> None:
    old = server.served_serial()
    wait_for(lambda: len(_workers(server)) == 2, "both workers to boot")
    server.rotate(key_too=False)  # a broken pair on disk, then a worker dies and gunicorn replaces it
    victim = min(_workers(server))
    os.kill(victim, signal.SIGKILL)
    wait_for(lambda: victim not in _workers(server) and len(_workers(server)) == 2, "a replacement worker")
    for _ in range(10):  # connections reach both the surviving and the new worker
        assert server.served_serial() == old
