"""Throwaway credentials for the provider stand-ins, made fresh for each test session."""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pem_private(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def pem_public(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


@dataclass(frozen=True)
class FcmAccount:
    private_key: rsa.RSAPrivateKey
    project_id: str = "tandem-standin"
    client_email: str = "push@tandem-standin.iam.gserviceaccount.com"
    private_key_id: str = "standin-key-1"

    def json(self, token_uri: str) -> str:
        return json.dumps(
            {
                "type": "service_account",
                "project_id": self.project_id,
                "private_key_id": self.private_key_id,
                "private_key": pem_private(self.private_key),
                "client_email": self.client_email,
                "token_uri": token_uri,
            }
        )


@dataclass(frozen=True)
class ApnsKey:
    private_key: ec.EllipticCurvePrivateKey
    key_id: str = "ABC123DEFG"
    team_id: str = "TEAM123456"
    topic: str = "org.example.tandem"


@dataclass(frozen=True)
class BrowserSubscription:
    """What a browser holds for one push subscription: its ECDH key and auth secret."""

    private_key: ec.EllipticCurvePrivateKey
    auth_secret: bytes

    @property
    def p256dh(self) -> str:
        return b64url(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    @property
    def auth(self) -> str:
        return b64url(self.auth_secret)


@cache
def fcm_account() -> FcmAccount:
    return FcmAccount(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@cache
def apns_key() -> ApnsKey:
    return ApnsKey(ec.generate_private_key(ec.SECP256R1()))


@cache
def vapid_private_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def vapid_private_key_setting() -> str:
    """The raw 32-byte private value, base64url: the form VAPID key generators print."""
    return b64url(vapid_private_key().private_numbers().private_value.to_bytes(32, "big"))


def browser_subscription() -> BrowserSubscription:
    return BrowserSubscription(ec.generate_private_key(ec.SECP256R1()), os.urandom(16))


def self_signed_certificate(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that is its own CA: the APNs stand-in serves TLS with it."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apns-standin")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    folder.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = folder / "apns-standin.pem", folder / "apns-standin.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_text(pem_private(key))
    return cert_path, key_path
