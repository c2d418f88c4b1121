"""WSGI pieces the proxy's handler (esproxy.source.proxy) and the admin endpoints (esproxy.admin)
share: the client header check, Elasticsearch-style error bodies, and what a proxy calls on its admin.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Iterable, Optional, Protocol

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

# A header check: None when the request may pass, else the WWW-Authenticate value ('' if none).
Check = Callable[[Environ], Optional[str]]

JSON_TYPE = ("Content-Type", "application/json")
BASIC_CHALLENGE = 'Basic realm="esproxy" charset="UTF-8"'


def header_check(required: dict[str, str]) -> Check:
    """A check that every header in ``required`` has its value (``source.proxies[].header``, ``admin.header``)."""
    wanted = [(f"HTTP_{k.upper().replace('-', '_')}", k, v) for k, v in required.items()]

    def check(environ: Environ) -> Optional[str]:
        for key, name, value in wanted:
            if environ.get(key) != value:
                basic = name.lower() == "authorization" and value.startswith("Basic ")
                return BASIC_CHALLENGE if basic else ""
        return None

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
    cause: dict[str, Any] = {"type": kind, "reason": reason}
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
    """What a proxy calls for ``/_esproxy/`` paths: esproxy.admin.Admin, or a pre-fork worker's
    esproxy.worker.MasterAdmin (its master answers)."""

    def serve(self, environ: Environ, start_response: StartResponse, check: Optional[Check] = None) -> Iterable[bytes]:
        """Answer the request; ``check`` (the proxy's header check) refuses it first if it fails."""
        ...
