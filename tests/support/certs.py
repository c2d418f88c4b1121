"""Certificates made at test time: a private CA, a server certificate for loopback, client certificates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass(frozen=True)
class Pki:
    """PEM files in one directory: the CA, a server certificate + key for 127.0.0.1/localhost, a client one."""

    ca: Path
    server_cert: Path  # the chain: leaf first
    server_key: Path
    client_cert: Path
    client_key: Path
    authority: trustme.CA

    def issue_client(self, directory: Path, name: str) -> tuple[Path, Path]:
        """Another client certificate of this CA: (cert, key)."""
        return _write(self.authority.issue_cert(f"{name}@esproxy.test", common_name=name), directory, name)


def make_pki(directory: Path, name: str = "pki") -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    authority = trustme.CA(organization_name=f"esproxy test CA {name}")
    ca = directory / f"{name}-ca.pem"
    authority.cert_pem.write_to_path(str(ca))
    server_cert, server_key = _write(authority.issue_cert("127.0.0.1", "localhost"), directory, f"{name}-server")
    client_cert, client_key = _write(
        authority.issue_cert("client@esproxy.test", common_name="esproxy-client"), directory, f"{name}-client"
    )
    return Pki(ca, server_cert, server_key, client_cert, client_key, authority)


def _write(cert: trustme.LeafCert, directory: Path, name: str) -> tuple[Path, Path]:
    cert_path, key_path = directory / f"{name}.pem", directory / f"{name}-key.pem"
    with open(cert_path, "wb") as f:
        for blob in cert.cert_chain_pems:
            f.write(blob.bytes())
    cert.private_key_pem.write_to_path(str(key_path))
    key_path.chmod(0o600)
    return cert_path, key_path
