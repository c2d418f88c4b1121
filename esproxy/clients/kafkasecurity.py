"""Kafka TLS and SASL: a ``source.kafkas[]`` or ``destination.kafkas[]`` entry's ``securityProtocol``,
``tls`` and ``sasl`` as kafka-python client arguments, and their checks (``esproxy --check``).

Every kafka-python client esproxy builds (the proxy's producer, the replay's consumer and its
dead-letter producer, ``esproxy dlq``) takes them from :func:`client_kwargs`, so the roles cannot
drift apart. Those arguments hold the SASL password: hand them straight to the client, never log
them or keep them in a dict that someone may print.

This module must not import kafka: esproxy/configfile.py imports it to check a config, and the config is
loaded before gevent patches the standard library, which kafka-python must see patched (its selector,
above all).
"""

from __future__ import annotations

import os
import ssl
from typing import TYPE_CHECKING, Any, Protocol, Union

from esproxy.core.config import KafkaTls
from esproxy.core.schema import ConfigError

if TYPE_CHECKING:
    from esproxy.core.config import Config, KafkaSasl

MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
SASL_PROTOCOLS = ("SASL_PLAINTEXT", "SASL_SSL")


class Secured(Protocol):
    """What a config entry needs to reach its brokers securely (KafkaSource, KafkaDestination)."""

    securityProtocol: str
    tls: KafkaTls
    sasl: KafkaSasl


class TlsFileError(OSError):
    """A ``tls`` file that cannot be used; ``key`` names the setting (``ca``, ``cert``). The clients' connect
    loops retry on it, as they do while no broker answers (the file may be being replaced)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"tls.{key}: {reason}")
        self.key = key
        self.reason = reason


def protocol(entry: Secured) -> str:
    return entry.securityProtocol.upper()


def uses_tls(entry: Secured) -> bool:
    return protocol(entry) in TLS_PROTOCOLS


def uses_sasl(entry: Secured) -> bool:
    return protocol(entry) in SASL_PROTOCOLS


def client_kwargs(entry: Secured) -> dict[str, Any]:
    """The security arguments of a KafkaProducer / KafkaConsumer / KafkaAdminClient for ``entry``.
    Raises TlsFileError if a ``tls`` file cannot be loaded."""
    kwargs: dict[str, Any] = {"security_protocol": protocol(entry)}
    if uses_tls(entry):
        kwargs["ssl_context"] = ssl_context(entry.tls)
    if uses_sasl(entry):
        kwargs["sasl_mechanism"] = entry.sasl.mechanism.upper()
        kwargs["sasl_plain_username"] = entry.sasl.username
        kwargs["sasl_plain_password"] = entry.sasl.password
    return kwargs


def ssl_context(tls: KafkaTls) -> ssl.SSLContext:
    """One context for all of a client's connections (kafka-python would otherwise build one per
    connection from ssl_cafile & co., and has no way to turn verification off). CAs are loaded as for
    the clusters' ``tls.ca`` (esproxy/clients/tls.py): a file, or every PEM file of a directory."""
    # here: clients/tls.py brings gevent's ssl and pywsgi, which loading a config without Kafka TLS does not need
    from .tls import load_cas, load_system_cas

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if not tls.verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.check_hostname = tls.checkHostname
        try:
            if tls.ca:
                load_cas(ctx, tls.ca, "tls.ca")
            else:
                load_system_cas(ctx)
        except ConfigError as e:
            raise TlsFileError("ca", e.reason) from None
        except (ssl.SSLError, OSError) as e:
            raise TlsFileError("ca", f"cannot load {tls.ca or 'the system CAs'}: {_reason(e)}") from None
    if tls.cert:
        try:
            ctx.load_cert_chain(tls.cert, tls.key or None, password=_no_password)
        except (ssl.SSLError, OSError, _EncryptedKey) as e:
            raise TlsFileError("cert", f"cannot load {tls.cert} with key {tls.key or tls.cert}: {_reason(e)}") from None
    return ctx


class _EncryptedKey(Exception):
    def __str__(self) -> str:
        return "the key is encrypted (esproxy reads unencrypted keys only)"


def _no_password() -> str:
    """OpenSSL asks for a password only for an encrypted key: refuse, rather than prompt on a terminal."""
    raise _EncryptedKey()


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, ssl.SSLError) and e.strerror:
        return e.strerror
    return str(e)


def check_config(cfg: Config) -> list[str]:
    """Check the security settings of every enabled Kafka entry, ``destination.kafkas[]`` then ``source.kafkas[]``
    (esproxy.configfile runs this on every config it loads); return warnings, raise ConfigError naming the key."""
    warnings: list[str] = []
    for group, entries in (("destination", cfg.destination.kafkas), ("source", cfg.source.kafkas)):
        for i, entry in enumerate(entries):
            if not entry.disabled:
                warnings.extend(check(entry, f"{group}.kafkas[{i}]"))
    return warnings


def check(entry: Secured, path: str) -> list[str]:
    """Check ``entry``'s security settings (``path`` is its key path, `destination.kafkas[0]`); return
    warnings, raise ConfigError for what cannot work. Files are loaded, as the clients will."""
    warnings: list[str] = []
    proto, tls, sasl = protocol(entry), entry.tls, entry.sasl
    if not uses_tls(entry) and tls != KafkaTls():
        raise ConfigError(f"{path}.tls", f"is set, but securityProtocol is {proto}: TLS needs SSL or SASL_SSL")
    if not uses_sasl(entry) and (sasl.mechanism or sasl.username or sasl.password):
        raise ConfigError(
            f"{path}.sasl", f"is set, but securityProtocol is {proto}: SASL needs SASL_PLAINTEXT or SASL_SSL"
        )
    if uses_sasl(entry):
        mechanism = sasl.mechanism.upper()
        if not mechanism:
            raise ConfigError(f"{path}.sasl.mechanism", f"is required with securityProtocol {proto}")
        if mechanism not in MECHANISMS:
            raise ConfigError(f"{path}.sasl.mechanism", f'"{sasl.mechanism}" is not one of {", ".join(MECHANISMS)}')
        for key in ("username", "password"):
            if not getattr(sasl, key):
                raise ConfigError(f"{path}.sasl.{key}", f"is required with securityProtocol {proto}")
        if proto == "SASL_PLAINTEXT" and mechanism == "PLAIN":
            warnings.append(f"{path}: SASL PLAIN over SASL_PLAINTEXT sends the password unencrypted; use SASL_SSL")
    if uses_tls(entry):
        if tls.key and not tls.cert:
            raise ConfigError(f"{path}.tls.key", "is set without tls.cert")
        for key in ("ca", "cert", "key"):
            reason = _unreadable(getattr(tls, key))
            if reason:
                raise ConfigError(f"{path}.tls.{key}", reason)
        try:
            ssl_context(tls)
        except TlsFileError as e:
            raise ConfigError(f"{path}.tls.{e.key}", e.reason) from None
        if not tls.verify:
            warnings.append(
                f"{path}.tls.verify is false: the brokers' certificates are not checked; anyone in between can"
                " read and change the traffic"
            )
    return warnings


def _unreadable(name: Union[str, os.PathLike]) -> str:
    """Why the file (or CA directory) ``name`` cannot be read; "" when it can, or is not set."""
    if not name:
        return ""
    try:
        if os.path.isdir(name):
            os.listdir(name)
        else:
            with open(name, "rb"):
                pass
    except OSError as e:
        return f"cannot read {name}: {e.strerror or e}"
    return ""
