"""WSGI pieces the proxy's handler (esproxy.proxy.handler) and the admin endpoints (esproxy.admin.server)
share: the client header check, Elasticsearch-style error bodies, and what a proxy calls on its admin.
"""

from __future__ import annotations

import hmac
import json
from typing import Any, Callable, Iterable, Optional, Protocol

from .secretrefs import mask

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

# A header check: None when the request may pass, else the WWW-Authenticate value ('' if none).
Check = Callable[[Environ], Optional[str]]

JSON_TYPE = ("Content-Type", "application/json")
BASIC_CHALLENGE = 'Basic realm="esproxy" charset="UTF-8"'


def header_check(required: dict[str, str]) -> Check:
    """A check that every header in ``required`` has its value (``source.proxies[].header``, ``admin.header``).

    Values are compared in constant time (hmac.compare_digest), all of them, so that the time an
    answer takes tells nothing about how much of a credential was right.
    """
    wanted = [
        (f"HTTP_{k.upper().replace('-', '_')}", k, v.encode("utf-8", "surrogatepass")) for k, v in required.items()
    ]
    basic = any(k.lower() == "authorization" and v.startswith("Basic ") for k, v in required.items())
    challenge = BASIC_CHALLENGE if basic else ""

    def check(environ: Environ) -> Optional[str]:
        passed = True
        for key, _name, value in wanted:
            given = environ.get(key)
            same = hmac.compare_digest(value, given.encode("utf-8", "surrogatepass")) if given is not None else False
            passed &= same
        return None if passed else challenge

    return check


def error_doc(
    status: int,
    kind: str,
    reason: str,
    header: Optional[dict[str, str]] = None,
    root_causes: Optional[list[dict[str, Any]]] = None,
) -> dict[str, Any]:
    """An Elasticsearch-style error: ``{"error": {"root_cause": [...], "type", "reason"}, "status"}``.

    The root cause is the error itself unless ``root_causes`` lists several (health's problems).
    """
    cause: dict[str, Any] = {"type": kind, "reason": mask(reason)}  # no ${ENV} / file: secret in an answer
    if header:
        cause["header"] = header
    return {"error": {"root_cause": [cause] if root_causes is None else root_causes, **cause}, "status": status}


def error_body(status: int, kind: str, reason: str, header: Optional[dict[str, str]] = None) -> bytes:
    """:func:`error_doc` as compact JSON."""
    return json.dumps(error_doc(status, kind, reason, header), separators=(",", ":")).encode()


def unauthorized(challenge: str, reason: str) -> tuple[list[tuple[str, str]], bytes]:
    """Headers and body of a 401 for a request a :data:`Check` refused with ``challenge``."""
    if not challenge:
        return [JSON_TYPE], error_body(401, "security_exception", reason)
    header = {"WWW-Authenticate": challenge}
    return [JSON_TYPE, ("WWW-Authenticate", challenge)], error_body(401, "security_exception", reason, header)


class AdminEndpoints(Protocol):
    """What a proxy calls for ``/_esproxy/`` paths: esproxy.admin.server.Admin, or a pre-fork worker's
    esproxy.proxy.worker.MasterAdmin (its master answers)."""

    def serve(self, environ: Environ, start_response: StartResponse, check: Optional[Check] = None) -> Iterable[bytes]:
        """Answer the request; ``check`` (the proxy's header check) refuses it first if it fails."""
        ...
