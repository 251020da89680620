"""`python -m webhook.certs`: a self-signed CA and a serving certificate for clusters without cert-manager.

Why a CA and not one self-signed serving certificate: the MutatingWebhookConfiguration pins the CA
(`caBundle`). With a separate CA, the serving certificate can be rotated (`--reuse-ca`) while the caBundle,
and so the webhook configuration, stays the same; the webhook picks the new files up without a restart.

The serving certificate names `<service>`, `<service>.<namespace>`, `<service>.<namespace>.svc` (what the API
server dials) and `....svc.cluster.local`, plus any `--extra-san` (tests and the benchmark add 127.0.0.1).
Keys are ECDSA P-256: small, fast handshakes, accepted by the API server's Go TLS client.

Output in `--out-dir`: ca.crt, ca.key, tls.crt, tls.key (keys mode 0600, written atomically). stdout gets
exactly one line, the base64 caBundle, so `CA_BUNDLE=$(python -m webhook.certs --out-dir d)` works.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import ipaddress
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["KeyPair", "generate_ca", "issue_serving_cert", "service_dns_names", "write_pem", "load_pair",
           "ca_bundle", "main"]

CA_FILE, CA_KEY_FILE, CERT_FILE, KEY_FILE = "ca.crt", "ca.key", "tls.crt", "tls.key"
_CLOCK_SKEW = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def service_dns_names(service: str, namespace: str) -> list[str]:
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def generate_ca(common_name: str = "guardgrid-webhook-ca", days: int = 3650) -> KeyPair:
    """A CA that may sign leaf certificates only (pathLen 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = _now()
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def issue_serving_cert(ca: KeyPair, dns_names: Sequence[str], ip_addresses: Sequence[str] = (),
                       days: int = 365) -> KeyPair:
    """A TLS server certificate for `dns_names` (and IPs) signed by `ca`. Go verifies SANs only, not the CN."""
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key()
    names: list[x509.GeneralName] = [x509.DNSName(name) for name in dns_names]
    names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ip_addresses]
    now = _now()
    common_name = dns_names[0] if dns_names else ip_addresses[0]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])]))
        .issuer_name(ca.certificate.subject).public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    return KeyPair(cert, key)


def write_pem(path: Path, data: bytes, private: bool = False) -> None:
    """Write atomically (temp file + rename): a reader never sees half a certificate."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(temp, 0o600 if private else 0o644)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def load_pair(cert_path: Path, key_path: Path) -> KeyPair:
    certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError(f"{key_path}: expected an EC private key")
    return KeyPair(certificate, key)


def ca_bundle(ca: KeyPair) -> str:
    """The MutatingWebhookConfiguration's `caBundle`: base64 of the CA certificate's PEM."""
    return base64.b64encode(ca.cert_pem).decode("ascii")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m webhook.certs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", required=True, type=Path, help="directory for ca.crt, ca.key, tls.crt, tls.key")
    parser.add_argument("--service", default="guardgrid-webhook", help="Service name (default %(default)s)")
    parser.add_argument("--namespace", default="guardgrid-system", help="namespace (default %(default)s)")
    parser.add_argument("--days", type=int, default=365, help="serving certificate validity (default %(default)s)")
    parser.add_argument("--ca-days", type=int, default=3650, help="CA validity (default %(default)s)")
    parser.add_argument("--extra-san", action="append", default=[],
                        help="additional DNS name or IP address (repeatable), e.g. 127.0.0.1 for local tests")
    parser.add_argument("--reuse-ca", action="store_true",
                        help="sign with the existing ca.crt/ca.key in --out-dir (rotate the serving cert only)")
    args = parser.parse_args(argv)
    if args.days < 1 or args.ca_days < 1:
        parser.error("--days and --ca-days must be at least 1")
    out: Path = args.out_dir
    dns = service_dns_names(args.service, args.namespace)
    ips: list[str] = []
    for extra in args.extra_san:
        try:
            ips.append(str(ipaddress.ip_address(extra)))
        except ValueError:
            dns.append(extra)
    if args.reuse_ca:
        try:
            ca = load_pair(out / CA_FILE, out / CA_KEY_FILE)
        except (OSError, ValueError) as exc:
            parser.error(f"--reuse-ca: cannot load the CA from {out}: {exc}")
    else:
        ca = generate_ca(days=args.ca_days)
        write_pem(out / CA_KEY_FILE, ca.key_pem, private=True)
        write_pem(out / CA_FILE, ca.cert_pem)
    serving = issue_serving_cert(ca, dns, ips, days=args.days)
    # Key before certificate: a watcher that sees the new certificate finds its key already in place.
    write_pem(out / KEY_FILE, serving.key_pem, private=True)
    write_pem(out / CERT_FILE, serving.cert_pem)
    sys.stderr.write(f"wrote {out / CA_FILE}, {out / CERT_FILE}, {out / KEY_FILE} for {', '.join(dns + ips)}\n")
    sys.stdout.write(ca_bundle(ca) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
