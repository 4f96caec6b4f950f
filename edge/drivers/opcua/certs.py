"""The gateway's OPC UA client certificate: loaded if configured, else made once and kept.

Servers that sign or encrypt (Basic256Sha256) need a client application instance
certificate, and most want it trusted by an operator once; so it is made on first use, kept
next to the config, and reused on every start rather than regenerated. Its subject alternative
name carries the application URI the client then announces, since servers compare the two.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

#: self-signed, so the operator's trust decision lasts as long as the gateway does
VALID_DAYS = 10 * 365


def application_uri(hostname: str | None = None) -> str:
    return f"urn:guantong:gateway:{hostname or socket.gethostname()}"


def ensure_certificate(cert_path: Path, key_path: Path) -> str:
    """Make the pair if neither file exists; return the certificate's application URI.

    One file without the other is an error rather than a reason to overwrite the survivor.
    """
    if not cert_path.exists() and not key_path.exists():
        _generate(cert_path, key_path)
    elif not cert_path.exists() or not key_path.exists():
        missing = cert_path if not cert_path.exists() else key_path
        raise FileNotFoundError(f"{missing} is missing (its partner exists; restore or remove it)")
    return uri_of(cert_path)


def uri_of(cert_path: Path) -> str:
    """The application URI in a certificate's subject alternative name."""
    data = cert_path.read_bytes()
    cert = (
        x509.load_pem_x509_certificate(data)
        if data.lstrip().startswith(b"-----")
        else x509.load_der_x509_certificate(data)
    )
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValueError(
            f"{cert_path}: no subject alternative name with an application URI"
        ) from None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    if not uris:
        raise ValueError(f"{cert_path}: no application URI in its subject alternative name")
    return str(uris[0])


def _generate(cert_path: Path, key_path: Path) -> None:
    host = socket.gethostname()
    uri = application_uri(host)
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        "Guantong gateway",
        {"organizationName": "Guantong"},
        [x509.UniformResourceIdentifier(uri), x509.DNSName(host)],
        [ExtendedKeyUsageOID.CLIENT_AUTH],
        days=VALID_DAYS,
    )
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(cert_gen.dump_private_key_as_pem(key))
    cert_path.write_bytes(cert.public_bytes(Encoding.DER))
