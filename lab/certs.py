"""An expired server certificate signed by a topology's own CA (the tls_expiry fault)."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def expired_cert(ca_crt: Path, ca_key: Path, out_crt: Path, out_key: Path, cn: str) -> None:
    """A certificate for cn (and *.<its domain>, 127.0.0.1) valid from 30 days ago to yesterday."""
    import ipaddress

    ca = x509.load_pem_x509_certificate(ca_crt.read_bytes())
    cakey = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    domain = cn.split(".", 1)[-1]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now - dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(cn), x509.DNSName(f"*.{domain}"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .sign(cakey, hashes.SHA256()))
    out_key.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    out_crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
