"""The TLS settings of esproxy's config (a cluster's, a listener's, the brokers') and the checks of their files.

Declared here, composed into :class:`esproxy.core.config.Config` (the one place that says what a config is).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from .logs import redact_url
from .schema import ConfigError, setting


@dataclass
class ClientTls:
    """How esproxy checks a cluster's certificate and which one it shows (an https:// `url` only)."""

    ca: str = setting(
        "",
        "PEM file, or directory of PEM files, of the CAs trusted for this cluster instead of the system's"
        " (ES 8: `config/certs/http_ca.crt`) (ours).",
    )
    cert: str = setting("", "Client certificate (PEM, leaf first) shown to the cluster, for PKI authentication (ours).")
    key: str = setting("", "Private key (PEM, unencrypted) of `cert` (ours).")
    verify: bool = setting(
        True,
        "false: accept any certificate (encryption without authentication of the cluster); logged as a warning"
        " at start and by `--check` (ours).",
    )
    fingerprint: str = setting(
        "",
        "SHA-256 of a certificate (hex, colons optional), e.g. ES 8's HTTP CA fingerprint printed at its first"
        " start: the cluster is trusted iff its chain holds that certificate; instead of `ca` (ours).",
    )

    def __bool__(self) -> bool:
        return self != ClientTls()


@dataclass
class ServerTls:
    """TLS on a listener: off unless `cert` is set."""

    cert: str = setting("", "Certificate chain (PEM, leaf first) the listener shows; set = HTTPS only (ours).")
    key: str = setting("", "Private key (PEM, unencrypted) of `cert` (ours).")
    clientCa: str = setting(
        "",
        "PEM file or directory of CAs: clients must show a certificate one of them signed, else the TLS"
        " handshake fails; empty = no client certificates asked for (ours).",
    )

    def __bool__(self) -> bool:
        return bool(self.cert)


@dataclass
class KafkaTls:
    ca: str = setting(
        "",
        "PEM file, or directory of PEM files, of the CAs the brokers' certificates must chain to; empty = the"
        " system's trusted CAs (ours).",
    )
    cert: str = setting("", "Client certificate (PEM, leaf first), for brokers that require one (ours).")
    key: str = setting("", "Private key of `cert` (PEM, not encrypted); empty when `cert` holds it too (ours).")
    verify: bool = setting(
        True,
        "Check the broker's certificate. false turns every check off (a warning at each start: anyone in"
        " between can read and change the traffic) (ours).",
    )
    checkHostname: bool = setting(
        True, "Check that the broker's certificate names the host it is reached by (with `verify`) (ours)."
    )


@dataclass(repr=False)
class KafkaSasl:
    mechanism: str = setting(
        "", "SASL mechanism, required with `SASL_*`: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512` (ours)."
    )
    username: str = setting("", "SASL user name, required with `SASL_*` (ours).")
    password: str = setting("", "SASL password, required with `SASL_*`; never logged (ours).")

    def __repr__(self) -> str:  # the password stays out of any repr that reaches a log
        return f"KafkaSasl(mechanism={self.mechanism!r}, username={self.username!r}, password=<hidden>)"


def fingerprint_hex(text: str) -> str:
    """A SHA-256 fingerprint as lowercase hex without separators; ValueError if it is not one."""
    digits = "".join(text.split()).replace(":", "").lower()
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        raise ValueError(f'"{text}" is not a SHA-256 fingerprint (64 hex digits, colons optional)')
    return digits


def check_client_tls(t: ClientTls, url: str, path: str, url_key: str = "url") -> list[str]:
    """The files of a client TLS block (a cluster's ``tls``, ``replayAdminTls``) exist and can be read (their
    contents: esproxy --check)."""
    if not t:
        return []
    if urlsplit(url).scheme != "https":
        return [f"{path}: the {url_key} is not https://, so TLS settings are not used"]
    if t.fingerprint:
        try:
            fingerprint_hex(t.fingerprint)
        except ValueError as err:
            raise ConfigError(f"{path}.fingerprint", str(err)) from None
        if t.ca:
            raise ConfigError(f"{path}.fingerprint", "a pin replaces the CA check: set fingerprint or ca, not both")
        if not t.verify:
            raise ConfigError(f"{path}.verify", "false would ignore the pinned fingerprint: remove one of them")
    _check_pair(t.cert, t.key, path)
    if t.ca:
        _readable(t.ca, f"{path}.ca", directory=True)
    if not t.verify:
        return [f"{path}.verify: false: the certificate of {redact_url(url)} is not checked (anyone can pose as it)"]
    return []


def check_server_tls(t: ServerTls, path: str) -> None:
    if not t.cert and (t.key or t.clientCa):
        raise ConfigError(f"{path}.cert", "is required for TLS (key and clientCa need it)")
    if t.cert:
        _check_pair(t.cert, t.key, path)
    if t.clientCa:
        _readable(t.clientCa, f"{path}.clientCa", directory=True)


def _check_pair(cert: str, key: str, path: str) -> None:
    if key and not cert:
        raise ConfigError(f"{path}.cert", "is required with key")
    if cert:
        _readable(cert, f"{path}.cert")
    if key:
        _readable(key, f"{path}.key")


def _readable(name: str, path: str, directory: bool = False) -> None:
    """A PEM file (or, if allowed, a directory) that this process can read."""
    target = Path(name)
    try:
        if directory and target.is_dir():
            list(target.iterdir())
            return
        with open(target, "rb") as f:
            head = f.read(1 << 20)
    except OSError as e:
        raise ConfigError(path, f"cannot read {name}: {e.strerror or e}") from None
    if b"-----BEGIN " not in head:
        raise ConfigError(path, f"{name} is not a PEM file (no -----BEGIN line)")
