"""`python -m webhook.certs`: the self-signed CA, the serving certificate and the caBundle it prints."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import socket
import ssl
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from webhook.certs import generate_ca, issue_serving_cert, main, service_dns_names

ROOT = Path(__file__).resolve().parent.parent
SERVICE_HOST = "guardgrid-webhook.guardgrid-system.svc"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "webhook.certs", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, check=False)


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_the_cli_writes_ca_and_serving_pair_and_prints_only_the_ca_bundle(tmp_path: Path) -> None:
    done = run_cli("--out-dir", str(tmp_path), "--extra-san", "127.0.0.1", "--extra-san", "webhook.local")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ca.crt", "ca.key", "tls.crt", "tls.key"]
    assert done.stdout.count("\n") == 1
    assert base64.b64decode(done.stdout.strip(), validate=True) == (tmp_path / "ca.crt").read_bytes()
    for key in ("ca.key", "tls.key"):
        assert stat.S_IMODE((tmp_path / key).stat().st_mode) == 0o600


def test_the_serving_certificate_names_the_service_and_is_signed_by_the_ca(tmp_path: Path) -> None:
    assert main(["--out-dir", str(tmp_path), "--service", "gw", "--namespace", "ops", "--extra-san", "::1"]) == 0
    ca, serving = load(tmp_path / "ca.crt"), load(tmp_path / "tls.crt")
    serving.verify_directly_issued_by(ca)
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["gw", "gw.ops", "gw.ops.svc", "gw.ops.svc.cluster.local"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]
    assert serving.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert ExtendedKeyUsageOID.SERVER_AUTH in serving.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    lifetime = serving.not_valid_after_utc - dt.datetime.now(dt.timezone.utc)
    assert dt.timedelta(days=364) < lifetime <= dt.timedelta(days=365)


def test_reusing_the_ca_rotates_the_serving_pair_and_keeps_the_ca_bundle(tmp_path: Path) -> None:
    first = run_cli("--out-dir", str(tmp_path))
    old_serial = load(tmp_path / "tls.crt").serial_number
    old_key = (tmp_path / "tls.key").read_bytes()
    second = run_cli("--out-dir", str(tmp_path), "--reuse-ca", "--days", "30")
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout  # same caBundle: the webhook configuration needs no change
    assert load(tmp_path / "tls.crt").serial_number != old_serial
    assert (tmp_path / "tls.key").read_bytes() != old_key
    load(tmp_path / "tls.crt").verify_directly_issued_by(load(tmp_path / "ca.crt"))


def test_reusing_a_missing_ca_is_a_clear_usage_error(tmp_path: Path) -> None:
    done = run_cli("--out-dir", str(tmp_path / "empty"), "--reuse-ca")
    assert done.returncode == 2 and "cannot load the CA" in done.stderr and done.stdout == ""


def test_a_serving_certificate_needs_a_name() -> None:
    with pytest.raises(ValueError, match="at least one DNS name"):
        issue_serving_cert(generate_ca(), [])


def test_a_go_style_verifying_client_accepts_the_service_hostname_and_rejects_others(tmp_path: Path) -> None:
    """A real TLS handshake with hostname verification, as the API server does it (SANs, not the CN)."""
    ca = generate_ca()
    serving = issue_serving_cert(ca, service_dns_names("guardgrid-webhook", "guardgrid-system"))
    (tmp_path / "tls.crt").write_bytes(serving.cert_pem)
    (tmp_path / "tls.key").write_bytes(serving.key_pem)
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client_context = ssl.create_default_context(cadata=ca.cert_pem.decode())

    def handshake(hostname: str) -> None:
        server_side, client_side = socket.socketpair()
        failures: list[BaseException] = []

        def serve() -> None:
            try:
                with server_context.wrap_socket(server_side, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError) as exc:
                failures.append(exc)

        thread = threading.Thread(target=serve)
        thread.start()
        try:
            with client_context.wrap_socket(client_side, server_hostname=hostname) as tls:
                tls.sendall(b"x")
        finally:
            client_side.close()
            thread.join(timeout=10)

    handshake(SERVICE_HOST)
    with pytest.raises(ssl.SSLCertVerificationError):
        handshake("evil.example.com")
