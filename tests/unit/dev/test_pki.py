"""The cluster's certificates chain to its CA and carry what the API server reads from them."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from mlserve.operator.dev.cluster.pki import CertificateAuthority, ServiceAccountKeys


def _load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def test_client_certificate_names_user_and_group_and_is_signed_by_the_ca(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path, "test-ca")
    pair = ca.issue(tmp_path, "admin", "alice", organisation="system:masters")

    cert, ca_cert = _load(pair.cert), _load(ca.pair.cert)
    cert.verify_directly_issued_by(ca_cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usages) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert pair.key.stat().st_mode & 0o777 == 0o600


def test_serving_certificate_covers_the_hosts(tmp_path: Path) -> None:
    ca = CertificateAuthority.create(tmp_path, "test-ca")
    pair = ca.issue(tmp_path, "server", "kube-apiserver", server=True, hosts=["127.0.0.1", "localhost"])

    sans = _load(pair.cert).extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert sans.get_values_for_type(x509.DNSName) == ["localhost"]


def test_service_account_keys_are_a_pair(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    keys = ServiceAccountKeys.create(tmp_path)
    private = serialization.load_pem_private_key(keys.private.read_bytes(), password=None)
    public = serialization.load_pem_public_key(keys.public.read_bytes())
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    assert private.public_key().public_numbers() == public.public_numbers()  # type: ignore[union-attr]
