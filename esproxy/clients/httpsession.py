"""HTTP off the hot path: one ``requests`` Session per endpoint, with esproxy's TLS, headers and credentials.

esproxy has one HTTP client per purpose. The proxy's requests to the clusters, the replay's and the copy's
bulk writes go through geventhttpclient (clients/elastic.py, clients/lean.py: measured, see their docstrings).
Everything else, the commands asking a proxy's or a replay's admin endpoints (``esproxy switchover`` /
``failover``, ``esproxy sync``, ``esproxy sync copy -c``), uses :class:`HttpSession`, built on ``requests``.
In a role's process (gevent-patched by ``esproxy.cli.main`` before any role is imported) ``requests`` runs
on gevent's sockets as it is; a session made there must be made after the patching, as every module
imported from ``esproxy.roles`` is.

TLS is the context esproxy builds from the config (``clients.tls.client_context`` for a cluster's ``tls``
and ``replayAdminTls``: a private CA, a fingerprint pin, client certificates, ``verify: false``;
``clients.tls.admin_base`` for a config's own admin listener), used as it is: ``requests`` adds no CA
(not certifi's bundle, not ``REQUESTS_CA_BUNDLE``), no hostname check of its own, and reads nothing else
from the environment either (proxies, ``.netrc``), as the cluster clients do. Without a context an
https:// endpoint is checked against the system's CAs with the host name, as Python's ``urllib`` does.

A URL's ``user:password@`` becomes Basic credentials unless the headers carry an ``Authorization`` (as
clients/elastic.py does), and never shows in an error: errors name the URL with the password masked and
the cause (``[Errno 111] Connection refused``, ``[SSL: CERTIFICATE_VERIFY_FAILED] ...``, ``timed out``).
"""

from __future__ import annotations

import base64
import json
import ssl
import warnings
from dataclasses import dataclass
from typing import Any, Mapping, Optional
from urllib.parse import urlsplit, urlunsplit

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from esproxy.core.logs import redact_url

DEFAULT_TIMEOUT = 10.0  # seconds to connect, and between two reads of the answer

# urllib3 warns on every request of a context that does not verify the chain: a pin (which does check it,
# after the handshake) or ``verify: false`` (which the config warns of once, at start and in --check).
warnings.filterwarnings("ignore", category=urllib3.exceptions.InsecureRequestWarning)


class Unreachable(OSError):
    """No answer: the connection, the TLS handshake or a read failed or timed out.
    ``str``: ``<url, password masked>: <cause>``; ``reason``: the cause alone."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass
class Answer:
    """An endpoint's answer, whatever its status."""

    status: int
    body: bytes
    url: str  # password masked

    def json(self) -> Any:
        """The body as JSON (``{}`` when empty); ValueError when it is not JSON."""
        return json.loads(self.body or b"{}")


class ContextAdapter(HTTPAdapter):
    """An adapter whose connections use ``context`` for TLS as it is: verifying the peer iff the context
    does, checking the host name iff the context does, trusting no CA but the context's."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context
        self.verify = context.verify_mode != ssl.CERT_NONE
        super().__init__(max_retries=0)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        pool_kwargs["ssl_context"] = self.context
        if not self.context.check_hostname:  # no host name check (a pin, verify: false, the admin's own cert)
            pool_kwargs["assert_hostname"] = False
        super().init_poolmanager(connections, maxsize, block, **pool_kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        # requests would point the pool at certifi's bundle, which urllib3 loads into the context
        conn.cert_reqs = "CERT_REQUIRED" if self.verify else "CERT_NONE"
        conn.ca_certs = conn.ca_cert_dir = None

    def build_connection_pool_key_attributes(self, request: Any, verify: Any, cert: Any = None) -> Any:
        return super().build_connection_pool_key_attributes(request, self.verify, None)


class HttpSession:
    """Requests to one endpoint (``base``, e.g. ``https://user:pw@host:2901``): its headers on each, its TLS.
    Safe to share between threads for the plain requests made here."""

    def __init__(
        self,
        base: str,
        headers: Optional[Mapping[str, str]] = None,
        tls: Optional[ssl.SSLContext] = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        parts = urlsplit(base.rstrip("/"))
        self.headers = dict(headers or {})
        if parts.username is not None and not any(k.lower() == "authorization" for k in self.headers):
            userinfo = f"{parts.username}:{parts.password or ''}".encode()
            self.headers["Authorization"] = "Basic " + base64.b64encode(userinfo).decode("ascii")
        netloc = parts.netloc.rpartition("@")[2]
        self.base = urlunsplit(parts._replace(netloc=netloc))  # what requests is given: no credentials
        self.shown = redact_url(base.rstrip("/"))  # what messages say
        self.timeout = timeout
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies, .netrc or CA bundle from the environment
        if parts.scheme == "https":
            self.session.mount("https://", ContextAdapter(tls or ssl.create_default_context()))

    def request(
        self,
        method: str,
        path: str,
        body: Optional[Any] = None,
        timeout: Optional[float] = None,
        headers: Optional[Mapping[str, str]] = None,
    ) -> Answer:
        """``method`` on ``base + path`` with ``body`` as JSON (none if None); Unreachable when nothing answered."""
        data = json.dumps(body).encode() if body is not None else None
        sent = {"Content-Type": "application/json", **self.headers, **(headers or {})}
        try:
            r = self.session.request(method, self.base + path, data=data, headers=sent, timeout=timeout or self.timeout)
            return Answer(r.status_code, r.content, self.shown + path)
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError, ValueError) as e:
            raise Unreachable(self.shown + path, reason(e, self.base, self.shown)) from None

    def get(self, path: str, timeout: Optional[float] = None) -> Answer:
        return self.request("GET", path, None, timeout)

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> HttpSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reason(e: BaseException, url: str = "", shown: str = "") -> str:
    """The cause of a failed request in one line, as ``urllib`` names it: the innermost socket, TLS or
    timeout error under requests' and urllib3's wrappers (``url`` replaced by ``shown`` if it occurs)."""
    seen: set[int] = set()
    while id(e) not in seen:
        seen.add(id(e))
        inner = _inner(e)
        if inner is None:
            break
        e = inner
    timeout = (TimeoutError, urllib3.exceptions.TimeoutError, requests.Timeout)
    if isinstance(e, timeout) and not isinstance(e, urllib3.exceptions.NewConnectionError):
        text = "timed out"
    else:
        text = str(e) or type(e).__name__
    return text.replace(url, shown) if url and shown else text


def _inner(e: BaseException) -> Optional[BaseException]:
    """What a requests or urllib3 exception wraps (None for any other)."""
    if isinstance(e, urllib3.exceptions.MaxRetryError) and e.reason is not None:
        return e.reason
    if not isinstance(e, (requests.RequestException, urllib3.exceptions.HTTPError)):
        return None
    wrapped = e.__cause__ or next((a for a in e.args if isinstance(a, BaseException)), None)
    return wrapped or e.__context__  # urllib3 1.x raises without "from"
