"""The certificates and keys a test control plane needs, made with ``cryptography``.

As kubeadm lays them out (https://kubernetes.io/docs/setup/best-practices/certificates/), reduced
to what one kube-apiserver on loopback uses: a CA, the API server's serving certificate (SANs
``127.0.0.1``, ``localhost`` and the in-cluster names), an admin client certificate in the
``system:masters`` group (RBAC's built-in superuser group), and an RSA key that signs and verifies
service-account tokens. etcd listens on loopback without TLS, as envtest runs it.
"""
from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALID_FOR = datetime.timedelta(days=2)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def _builder(subject: x509.Name, issuer: x509.Name, public_key) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + VALID_FOR))


@dataclass(frozen=True)
class Pki:
    """Paths of the PEM files in one folder."""

    ca_cert: Path
    serving_cert: Path
    serving_key: Path
    admin_cert: Path
    admin_key: Path
    sa_key: Path       # RSA private key: signs service-account tokens
    sa_pub: Path       # its public key: verifies them

    @classmethod
    def create(cls, folder: Path) -> "Pki":
        folder.mkdir(parents=True, exist_ok=True)
        ca_key = _key()
        ca_name = _name("daic-test-ca")
        ca = (_builder(ca_name, ca_name, ca_key.public_key())
              .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
              .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                           content_commitment=False, key_encipherment=False,
                                           data_encipherment=False, key_agreement=False,
                                           encipher_only=False, decipher_only=False), critical=True)
              .sign(ca_key, hashes.SHA256()))

        def leaf(subject: x509.Name, usage, sans: list[x509.GeneralName] | None = None):
            key = _key()
            b = (_builder(subject, ca_name, key.public_key())
                 .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                 .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
            if sans:
                b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
            return b.sign(ca_key, hashes.SHA256()), key

        serving, serving_key = leaf(_name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, [
            x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost"),
            x509.DNSName("kubernetes"), x509.DNSName("kubernetes.default.svc"),
            x509.DNSName("kubernetes.default.svc.cluster.local")])
        admin, admin_key = leaf(_name("daic-test-admin", "system:masters"), ExtendedKeyUsageOID.CLIENT_AUTH)
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

        pki = cls(ca_cert=folder / "ca.crt", serving_cert=folder / "apiserver.crt",
                  serving_key=folder / "apiserver.key", admin_cert=folder / "admin.crt",
                  admin_key=folder / "admin.key", sa_key=folder / "sa.key", sa_pub=folder / "sa.pub")
        pem = serialization.Encoding.PEM
        pki.ca_cert.write_bytes(ca.public_bytes(pem))
        pki.serving_cert.write_bytes(serving.public_bytes(pem))
        pki.serving_key.write_bytes(_pem_key(serving_key))
        pki.admin_cert.write_bytes(admin.public_bytes(pem))
        pki.admin_key.write_bytes(_pem_key(admin_key))
        pki.sa_key.write_bytes(_pem_key(sa_key))
        pki.sa_pub.write_bytes(sa_key.public_key().public_bytes(
            pem, serialization.PublicFormat.SubjectPublicKeyInfo))
        for path in (pki.serving_key, pki.admin_key, pki.sa_key):
            path.chmod(0o600)
        return pki
