"""TLS helpers shared by the WebSocket (wss) and QUIC drivers.

Certificates are kept both as ``cryptography`` objects (aioquic takes those) and as PEM
bytes (the :mod:`ssl` module takes those). :func:`self_signed` makes the in-memory
certificate ``flare serve`` uses when given no ``--cert`` (DESIGN §7; like the original's
rcgen pair: ECDSA P-256, SANs ``localhost``, ``127.0.0.1``, ``::1``, reference §4.2), and
:class:`LocalCA` issues certificates from a throwaway authority for tests.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import ssl
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

LOCAL_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1", "::1")
"""The names a loopback certificate is valid for."""

PrivateKey: TypeAlias = (
    ec.EllipticCurvePrivateKey
    | rsa.RSAPrivateKey
    | ed25519.Ed25519PrivateKey
    | ed448.Ed448PrivateKey
)
"""Key types usable by both :mod:`ssl` and aioquic."""


@dataclass(frozen=True, slots=True)
class CertifiedKey:
    """A certificate (plus any chain after it) and its private key, in both forms."""

    certificate: x509.Certificate
    private_key: PrivateKey = field(repr=False)
    cert_pem: bytes = field(repr=False)
    """The certificate, then the rest of its chain, PEM."""
    key_pem: bytes = field(repr=False)
    """The private key, PEM (PKCS#8, unencrypted)."""
    chain: tuple[x509.Certificate, ...] = ()
    """Intermediate certificates sent after :attr:`certificate`."""


def load_pem(cert_pem: bytes, key_pem: bytes, password: bytes | None = None) -> CertifiedKey:
    """Parse a PEM certificate chain and its private key (``--cert``/``--key``)."""
    certs = x509.load_pem_x509_certificates(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password)
    if not isinstance(key, PrivateKey):
        raise ValueError(f"unsupported private key type {type(key).__name__}")
    return CertifiedKey(
        certificate=certs[0],
        private_key=key,
        cert_pem=b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs),
        key_pem=_key_pem(key),
        chain=tuple(certs[1:]),
    )


def load_pem_files(
    certfile: str | os.PathLike[str], keyfile: str | os.PathLike[str]
) -> CertifiedKey:
    """:func:`load_pem` from files."""
    with open(certfile, "rb") as c, open(keyfile, "rb") as k:
        return load_pem(c.read(), k.read())


def self_signed(hosts: Sequence[str] = LOCAL_HOSTS, *, days: int = 365) -> CertifiedKey:
    """A fresh self-signed ECDSA P-256 server certificate for ``hosts``, in memory.

    Clients trust it by taking its :attr:`~CertifiedKey.cert_pem` as their CA data.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name("flare self-signed")
    builder = _builder(name, name, key.public_key(), days)
    builder = _leaf_extensions(builder, hosts, issuer_key=key)
    return _certified(builder.sign(key, hashes.SHA256()), key)


@dataclass(frozen=True, slots=True)
class LocalCA:
    """A throwaway certificate authority (tests: wss/QUIC with real chain validation)."""

    ca: CertifiedKey

    @classmethod
    def create(cls, common_name: str = "flare test CA", *, days: int = 30) -> LocalCA:
        """A new CA with a fresh P-256 key."""
        key = ec.generate_private_key(ec.SECP256R1())
        name = _name(common_name)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            _builder(name, name, key.public_key(), days)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        return cls(_certified(cert, key))

    @property
    def cert_pem(self) -> bytes:
        """The CA certificate, PEM: what clients trust (``cadata``)."""
        return self.ca.cert_pem

    def issue(self, hosts: Sequence[str] = LOCAL_HOSTS, *, days: int = 30) -> CertifiedKey:
        """A server certificate for ``hosts`` signed by this CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _builder(_name(hosts[0]), self.ca.certificate.subject, key.public_key(), days)
        builder = _leaf_extensions(builder, hosts, issuer_key=self.ca.private_key)
        return _certified(builder.sign(self.ca.private_key, hashes.SHA256()), key)


def server_context(cert: CertifiedKey) -> ssl.SSLContext:
    """A TLS 1.2+ server context presenting ``cert``.

    :mod:`ssl` only loads keys from files, so the PEM goes through a private temporary
    directory that is removed before returning.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="flare-tls-") as tmp:  # mode 0700
        certfile = os.path.join(tmp, "cert.pem")
        keyfile = os.path.join(tmp, "key.pem")
        for path, data in ((certfile, cert.cert_pem), (keyfile, cert.key_pem)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        context.load_cert_chain(certfile, keyfile)
    return context


def client_context(
    *, cadata: bytes | None = None, cafile: str | os.PathLike[str] | None = None
) -> ssl.SSLContext:
    """A verifying client context trusting ``cadata`` (PEM) / ``cafile``, or the system
    store when neither is given."""
    return ssl.create_default_context(
        cafile=cafile, cadata=None if cadata is None else cadata.decode("ascii")
    )


# -- building blocks ----------------------------------------------------------------------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, days: int
) -> x509.CertificateBuilder:
    # Back-dated a little so a peer whose clock is slightly behind still accepts it.
    start = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
    )


def _leaf_extensions(
    builder: x509.CertificateBuilder,
    hosts: Sequence[str],
    *,
    issuer_key: PrivateKey,
) -> x509.CertificateBuilder:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    # Key identifiers and a critical BasicConstraints keep OpenSSL's strict X.509 mode
    # (default since Python 3.13) happy.
    return (
        builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
            critical=False,
        )
    )


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certified(cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> CertifiedKey:
    return CertifiedKey(
        certificate=cert,
        private_key=key,
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=_key_pem(key),
    )
