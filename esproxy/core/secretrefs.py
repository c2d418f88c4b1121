"""Secrets kept out of the config file: ``${ENV_VAR}`` and ``file:/path`` values, and their masking.

Any string in the YAML may say where its value is: ``${TOKEN}`` anywhere in it (``"Basic ${TOKEN}"``;
``$${`` writes a literal ``${``), or ``file:/run/secrets/es`` as the whole value (the file's content,
trailing newlines stripped; ``${...}`` in the path is substituted first). :func:`resolve_tree` does
this on the parsed YAML before any setting is built, so every setting, present or future, takes them.

What came from the environment or a file and lands in a string setting is a secret (the schema
calls :func:`keep`): :func:`mask` replaces it by ``***``, and the log formatter, error answers,
dead letters, the admin endpoints and ``--check`` all go through it. A value that is an http(s) URL
is the exception: only its password is a secret. Values shorter than :data:`MIN_MASKED` characters
are not masked (they would turn up inside unrelated words).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Iterable
from urllib.parse import urlsplit

MASK = "***"
MIN_MASKED = 4

# ``$${`` (a literal ``${``), ``${NAME}``, or a ``${`` that is neither (an error).
_REFERENCE = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$\{")
FILE_PREFIX = "file:"


class Unresolved(Exception):
    """A reference that cannot be resolved; ``str()`` says which and why, never a value."""


class Resolved(str):
    """A config string that took some of its value from the environment or a file; ``secrets``: those parts."""

    secrets: tuple[str, ...] = ()


def resolve(text: str) -> str:
    """``text`` with its references replaced: a :class:`Resolved` if it had any, else ``text`` itself."""
    if text.startswith(FILE_PREFIX):
        path = _substitute(text[len(FILE_PREFIX) :], [])
        try:
            with open(path, encoding="utf-8") as f:
                content = f.read().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as e:
            reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            raise Unresolved(f"file {path} unreadable: {reason}") from None
        return _resolved(content, [content])
    if "${" not in text:
        return text
    pieces: list[str] = []
    out = _substitute(text, pieces)
    return _resolved(out, pieces) if pieces else out


def _substitute(text: str, pieces: list[str]) -> str:
    def replace(m: re.Match[str]) -> str:
        if m.group(0) == "$${":
            return "${"
        name = m.group(1)
        if name is None:
            raise Unresolved("${ without a variable name and } (write $${ for a literal ${)")
        value = os.environ.get(name)
        if value is None:
            raise Unresolved(f"environment variable {name} is not set")
        pieces.append(value)
        return value

    return _REFERENCE.sub(replace, text)


def _resolved(value: str, pieces: list[str]) -> Resolved:
    out = Resolved(value)
    out.secrets = tuple(pieces)
    return out


def resolve_tree(data: Any, path: str = "") -> tuple[Any, list[tuple[str, str]], list[str]]:
    """Parsed YAML with every string resolved; the (key path, reason) of each reference that is not,
    and every piece taken from the environment or a file (to mask in error messages)."""
    problems: list[tuple[str, str]] = []
    pieces: list[str] = []

    def walk(value: Any, where: str) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, f"{where}.{k}" if where else str(k)) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v, f"{where}[{i}]") for i, v in enumerate(value)]
        if isinstance(value, str):
            try:
                out = resolve(value)
            except Unresolved as e:
                problems.append((where, str(e)))
                return value
            pieces.extend(getattr(out, "secrets", ()))
            return out
        return value

    return walk(data, path), problems, pieces


# ---------------------------------------------------------------------------------------- masking

_masked: list[str] = []  # longest first, so that a secret holding another is masked whole


too_short: list[str] = []  # key paths of values kept but too short to mask (``--check`` warns)


def keep(value: Any, path: str = "") -> None:
    """Mask from now on what ``value`` (a resolved string, or a list or mapping of them) took from outside."""
    if isinstance(value, dict):
        value = list(value.values())
    for item in value if isinstance(value, list) else [value]:
        for piece in getattr(item, "secrets", ()):
            for secret in _secret_parts(piece):
                if 0 < len(secret) < MIN_MASKED:
                    too_short.append(path)
                _add(secret)


def _secret_parts(piece: str) -> Iterable[str]:
    parts = urlsplit(piece) if "://" in piece else None
    if parts is not None and parts.scheme in ("http", "https") and parts.hostname:
        return [parts.password] if parts.password else []  # a URL: only its password is secret
    return [piece]


def _add(secret: str) -> None:
    if len(secret) < MIN_MASKED:
        return
    escaped = json.dumps(secret, ensure_ascii=False)[1:-1]  # as it appears inside a JSON string
    for form in {secret, escaped}:
        if form not in _masked:
            _masked.append(form)
    _masked.sort(key=len, reverse=True)


def mask(text: str, extra: Iterable[str] = ()) -> str:
    """``text`` with every kept secret (and each of ``extra`` at least MIN_MASKED long) replaced by ``***``."""
    more = sorted((s for s in extra if len(s) >= MIN_MASKED), key=len, reverse=True)
    for secret in (_masked + more) if more else _masked:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def mask_bytes(data: bytes) -> bytes:
    """:func:`mask` for an answer's body (UTF-8; other bytes are left as they are)."""
    if not _masked:
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    masked = mask(text)
    return data if masked is text else masked.encode("utf-8")


def forget_all() -> None:
    """Drop every kept secret (tests)."""
    _masked.clear()
