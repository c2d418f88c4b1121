"""TLS contexts from the config: to clusters (``destination.*[].tls``) and on listeners (``tls`` of a proxy
entry, ``admin.tls``).

The contexts are gevent's (cooperative handshakes, usable by geventhttpclient and gevent's servers),
built once per cluster client or listener. A fingerprint pin accepts a chain iff one of its
certificates has that SHA-256, as Elasticsearch's clients do with ES 8's HTTP CA fingerprint.
"""

from __future__ import annotations

import hashlib
import logging
import os
import socket
from _ssl import ENCODING_DER  # type: ignore[attr-defined]  # what Certificate.public_bytes takes
from typing import Any, Optional
from urllib.parse import urlsplit

import gevent.ssl as gssl
from gevent.pywsgi import WSGIServer

from esproxy.core.config import AdminListener, ClientTls, Config, ConfigError, ServerTls, fingerprint_hex

log = logging.getLogger("esproxy.tls")

HANDSHAKE_TIMEOUT = 10.0  # a client that connects and never handshakes gives its connection up then


class UntrustedCertificate(gssl.SSLCertVerificationError):
    """The cluster's chain has no certificate with the pinned fingerprint."""

    def __str__(self) -> str:
        return str(self.args[0])


class ClientContext(gssl.SSLContext):
    """A client context that also checks a fingerprint pin once the handshake is done."""

    pin = ""  # lowercase hex SHA-256; empty = no pin

    def wrap_socket(self, sock: Any, *args: Any, **kwargs: Any) -> Any:
        wrapped = super().wrap_socket(sock, *args, **kwargs)
        if self.pin and self.pin not in chain_fingerprints(wrapped):
            wrapped.close()
            raise UntrustedCertificate(f"no certificate of its chain has the pinned SHA-256 fingerprint {self.pin}")
        return wrapped


def chain_fingerprints(sock: Any) -> list[str]:
    """SHA-256 (hex) of every certificate the peer sent, leaf first (unverified: the pin is the check)."""
    sslobj = getattr(sock, "_sslobj", None)
    chain = getattr(sslobj, "get_unverified_chain", None)  # public from Python 3.13, present since 3.10
    if chain is not None:
        certs = chain() or []
        return [hashlib.sha256(c.public_bytes(ENCODING_DER)).hexdigest() for c in certs]
    leaf = sock.getpeercert(binary_form=True)
    return [hashlib.sha256(leaf).hexdigest()] if leaf else []


def client_context(t: ClientTls, where: str) -> ClientContext:
    """The context for an https:// cluster; ConfigError (at ``where``) for a file that cannot be used."""
    ctx = ClientContext(gssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = gssl.TLSVersion.TLSv1_2
    if t.fingerprint or not t.verify:
        ctx.check_hostname = False
        ctx.verify_mode = gssl.CERT_NONE
        try:
            ctx.pin = fingerprint_hex(t.fingerprint) if t.fingerprint else ""
        except ValueError as e:
            raise ConfigError(f"{where}.fingerprint", str(e)) from None
    elif t.ca:
        load_cas(ctx, t.ca, f"{where}.ca")
    else:
        load_system_cas(ctx)
    if t.cert:
        try:
            ctx.load_cert_chain(t.cert, t.key or None, password=_no_passphrase)
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            raise ConfigError(f"{where}.cert", f"cannot use {t.cert} / {t.key or t.cert}: {_reason(e)}") from None
    return ctx


def server_context(t: ServerTls, where: str) -> gssl.SSLContext:
    """The context of an HTTPS listener; with ``clientCa``, clients must show a certificate it signed."""
    ctx = gssl.SSLContext(gssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = gssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(t.cert, t.key or None, password=_no_passphrase)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{where}.cert", f"cannot use {t.cert} / {t.key or t.cert}: {_reason(e)}") from None
    if t.clientCa:
        load_cas(ctx, t.clientCa, f"{where}.clientCa")
        ctx.verify_mode = gssl.CERT_REQUIRED
    return ctx


def load_system_cas(ctx: gssl.SSLContext) -> None:
    """The system's CAs; certifi's bundle where the system has no CA file (as geventhttpclient did)."""
    ctx.load_default_certs()
    if not gssl.get_default_verify_paths().cafile:
        try:
            import certifi
        except ImportError:
            return
        ctx.load_verify_locations(cafile=certifi.where())


def load_cas(ctx: gssl.SSLContext, path: str, where: str) -> None:
    """Trust the CAs of a PEM file, or of every PEM file in a directory (no `c_rehash` needed)."""
    files = [path]
    if os.path.isdir(path):
        files = sorted(os.path.join(path, n) for n in os.listdir(path) if os.path.isfile(os.path.join(path, n)))
    loaded = 0
    for name in files:
        try:
            ctx.load_verify_locations(cafile=name)
            loaded += 1
        except (OSError, ValueError) as e:
            if name == path:
                raise ConfigError(where, f"cannot use {path}: {_reason(e)}") from None
            log.debug("%s: %s holds no CA certificate: %s", where, name, e)
    if not loaded:
        raise ConfigError(where, f"no CA certificate (PEM) in {path}")


def _no_passphrase() -> bytes:
    # OpenSSL would otherwise ask for it on the terminal, and a service would hang there
    raise ValueError("the key is encrypted: give esproxy an unencrypted one (openssl pkey -in KEY -out NEW)")


def _reason(e: BaseException) -> str:
    return getattr(e, "strerror", None) or getattr(e, "reason", None) or str(e)


class HttpsServer(WSGIServer):
    """gevent's WSGIServer, with a failed or stalled handshake closed quietly rather than logged as a crash
    (without TLS arguments, gevent's WSGIServer itself)."""

    handshake_timeout = HANDSHAKE_TIMEOUT

    def wrap_socket_and_handle(self, client_socket: socket.socket, address: Any) -> Any:
        client_socket.settimeout(self.handshake_timeout)
        try:
            tls_socket = self.wrap_socket(client_socket, **self.ssl_args)
        except (OSError, ValueError) as e:  # no or an untrusted client certificate, plain HTTP, a scanner...
            log.debug("TLS handshake with %s failed: %s", address, e)
            client_socket.close()
            return None
        tls_socket.settimeout(None)
        try:
            return self.handle(tls_socket, address)
        finally:
            tls_socket.close()


def wsgi_server(
    listener: Any,
    app: Any,
    tls: Optional[ServerTls],
    where: str,
    server_class: type[HttpsServer] = HttpsServer,
    **kwargs: Any,
) -> WSGIServer:
    """A WSGIServer for ``listener`` (an address or a bound socket); HTTPS when ``tls`` has a certificate."""
    if tls:
        return server_class(listener, app, ssl_context=server_context(tls, where), **kwargs)
    return server_class(listener, app, **kwargs)


def check_contexts(cfg: Config) -> None:
    """Build every TLS context the config asks for (certificates parse, keys match): ``esproxy --check``."""
    for kind in ("primaries", "followers", "rests"):
        for i, e in enumerate(getattr(cfg.destination, kind)):
            if not e.disabled and e.tls and urlsplit(e.url).scheme == "https":
                client_context(e.tls, f"destination.{kind}[{i}].tls")
            if not e.disabled and e.replayAdminTls and urlsplit(e.replayAdmin).scheme == "https":
                client_context(e.replayAdminTls, f"destination.{kind}[{i}].replayAdminTls")
    source = cfg.follow.source
    if source.tls and urlsplit(source.url).scheme == "https":
        client_context(source.tls, "follow.source.tls")
    for i, p in enumerate(cfg.source.proxies):
        if not p.disabled and p.tls:
            server_context(p.tls, f"source.proxies[{i}].tls")
    if cfg.admin.port and cfg.admin.tls:
        server_context(cfg.admin.tls, "admin.tls")


def admin_base(admin: AdminListener) -> tuple[str, Optional[gssl.SSLContext]]:
    """How esproxy's own commands reach a config's admin listener: its base URL, and for HTTPS a context
    trusting exactly the certificates of ``admin.tls.cert`` (the listener is this config's own)."""
    host = "127.0.0.1" if admin.host in ("0.0.0.0", "") else admin.host
    if not admin.tls:
        return f"http://{host}:{admin.port}", None
    ctx = gssl.SSLContext(gssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # host is where it listens, which its certificate need not name
    ctx.verify_flags |= gssl.VERIFY_X509_PARTIAL_CHAIN  # its own leaf is the anchor
    try:
        ctx.load_verify_locations(cafile=admin.tls.cert)
    except (OSError, ValueError) as e:
        raise ConfigError("admin.tls.cert", f"cannot use {admin.tls.cert}: {_reason(e)}") from None
    return f"https://{host}:{admin.port}", ctx
