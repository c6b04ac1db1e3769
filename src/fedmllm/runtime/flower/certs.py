"""Offline key material for a loopback Flower federation: a TLS CA + server certificate and
SuperNode authentication key pairs, generated with ``cryptography`` (a flwr dependency), so
neither the network nor the ``openssl`` binary is needed.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

DEFAULT_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: ``ca_cert`` for the clients, ``server_cert`` + ``server_key`` for the servers."""

    ca_cert: Path
    server_cert: Path
    server_key: Path


@dataclass(frozen=True)
class NodeKeys:
    """A SuperNode's authentication key pair in OpenSSH format (what flwr 1.42 reads)."""

    private_key: Path
    public_key: Path


def _write(path: Path, data: bytes, *, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    if private:
        os.chmod(tmp, 0o600)
    tmp.replace(path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def generate_tls_files(
    folder: Path, hosts: tuple[str, ...] = DEFAULT_HOSTS, *, days: int = 30
) -> TlsFiles:
    """A fresh CA and a server certificate it signs, valid for ``hosts`` (IPs or DNS names).

    Writes ``ca.crt``, ``ca.key``, ``server.crt``, ``server.key`` (keys 0600) under ``folder``.
    """
    folder = Path(folder)
    now = _dt.datetime.now(_dt.UTC)
    valid = (now - _dt.timedelta(minutes=5), now + _dt.timedelta(days=days))
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedmllm local Flower CA")])
    ca_cert = _ca_cert(ca_key, ca_name, valid)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = _server_cert(server_key, hosts, ca_key, ca_name, valid)

    files = TlsFiles(folder / "ca.crt", folder / "server.crt", folder / "server.key")
    _write(folder / "ca.key", _key_pem(ca_key), private=True)
    _write(files.ca_cert, ca_cert.public_bytes(serialization.Encoding.PEM))
    _write(files.server_key, _key_pem(server_key), private=True)
    _write(files.server_cert, server_cert.public_bytes(serialization.Encoding.PEM))
    return files


def _builder(subject: x509.Name, issuer: x509.Name, key, valid) -> x509.CertificateBuilder:
    """A certificate of ``key``'s public key for ``subject``, signed by ``issuer``, valid over
    ``valid`` = (not before, not after)."""
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid[0])
        .not_valid_after(valid[1])
    )


def _ca_cert(ca_key, ca_name: x509.Name, valid) -> x509.Certificate:
    """The self-signed CA: it signs certificates (path length 0) and CRLs, nothing else."""
    return (
        _builder(ca_name, ca_name, ca_key, valid)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )


def _server_cert(key, hosts: tuple[str, ...], ca_key, ca_name: x509.Name,
                 valid) -> x509.Certificate:
    """The server's certificate for ``hosts`` (IP addresses or DNS names), signed by the CA."""
    sans: list[x509.GeneralName] = []
    for host in hosts:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            sans.append(x509.DNSName(host))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    return (
        _builder(subject, ca_name, key, valid)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )


def generate_node_keys(folder: Path, name: str) -> NodeKeys:
    """An EC P-384 key pair for SuperNode authentication, as ``<name>`` / ``<name>.pub``.

    flwr 1.42 loads the private key with ``load_ssh_private_key`` (so OpenSSH format) and
    ``flwr supernode register`` wants an OpenSSH public key on a NIST curve.
    """
    folder = Path(folder)
    key = ec.generate_private_key(ec.SECP384R1())
    keys = NodeKeys(folder / name, folder / f"{name}.pub")
    _write(
        keys.private_key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
        private=True,
    )
    _write(
        keys.public_key,
        key.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        + b"\n",
    )
    return keys
