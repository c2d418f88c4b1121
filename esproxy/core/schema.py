"""Declare settings once (type, default, doc) and build typed objects from YAML data.

A settings class is a dataclass whose fields are made with :func:`setting`. :func:`build` turns
parsed YAML into instances, raising :class:`ConfigError` with the key path on the first bad value;
:func:`reference` renders the same declarations as Markdown for the README.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
import typing
from typing import Any, Callable, TypeVar
from urllib.parse import urlsplit

from . import secretrefs

T = TypeVar("T")


class ConfigError(Exception):
    """A config value that cannot be used; ``str()`` is the one line shown to the operator."""

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}" if path else reason)
        self.path = path
        self.reason = reason


class Duration(float):
    """Seconds, written in the config like Go durations: ``500ms``, ``3s``, ``1m30s``, ``2h``."""


class Url(str):
    """An absolute http(s) URL."""


class ByteSize(int):
    """Bytes, written in the config like Elasticsearch's byte sizes: ``100mb``, ``16kb``, ``512b``, or a number."""


_SIZE_UNITS = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgtp]?b?)", re.IGNORECASE)


def parse_size(text: str) -> int:
    """``"100mb"`` → 104857600 (units of 1024, as Elasticsearch counts); ValueError for anything else."""
    m = _SIZE.fullmatch(text.strip())
    if not m or (not m.group(2) and "." in m.group(1)):
        raise ValueError(text)
    unit = m.group(2).lower().rstrip("b") or "b"
    value = float(m.group(1)) * _SIZE_UNITS[unit]
    if not math.isfinite(value) or value != int(value):  # too many digits: inf, and int(inf) is an OverflowError
        raise ValueError(text)
    return int(value)


def format_size(n: int) -> str:
    """The largest unit that writes ``n`` exactly: 104857600 → ``100mb``."""
    for unit in "ptgmk":
        if n and n % _SIZE_UNITS[unit] == 0:
            return f"{n // _SIZE_UNITS[unit]}{unit}b"
    return f"{n}b"


_INTEGER = re.compile(r"-?[0-9]+")  # not str.isdigit(): it takes "²", which int() does not
_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> float:
    """``"1m30s"`` → 90.0; raises ValueError for anything Go's time.ParseDuration would reject."""
    s = text.strip()
    if s in ("0", ""):
        if s == "":
            raise ValueError(text)
        return 0.0
    pos, total = 0, 0.0
    while pos < len(s):
        m = _DURATION_PART.match(s, pos)
        if not m:
            raise ValueError(text)
        total += float(m.group(1)) * _DURATION_UNITS[m.group(2)]
        pos = m.end()
    return total


def format_duration(seconds: float) -> str:
    """Go's time.Duration.String() style, as the original's access log prints: ``29.114144ms``."""
    if seconds == 0:
        return "0s"
    if seconds < 1e-6:
        return f"{round(seconds * 1e9)}ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.3f}".rstrip("0").rstrip(".") + "µs"
    if seconds < 1:
        return f"{seconds * 1e3:.6f}".rstrip("0").rstrip(".") + "ms"
    if seconds < 60:
        return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"
    minutes, secs = divmod(seconds, 60)
    hours, minutes = divmod(int(minutes), 60)
    sec_text = f"{secs:.9f}".rstrip("0").rstrip(".") + "s"
    return (f"{hours}h" if hours else "") + f"{minutes}m" + sec_text


def setting(
    default: Any = dataclasses.MISSING,
    doc: str = "",
    *,
    required: bool = False,
    choices: tuple[str, ...] = (),
    compat: str = "",
    key: str = "",
    minimum: float | None = None,
    above: float | None = None,
    zero: str = "",
    check: Callable[[Any], object] | None = None,
    shown: str = "",
) -> Any:
    """A declared setting. ``compat`` marks a key of the Go original and says what esproxy does with it;
    ``key`` is the YAML key where it cannot be the attribute name (``async``).

    Its own bounds, checked by :func:`build` with the key path in the error: ``minimum`` (at least),
    ``above`` (more than), ``zero`` (what 0 means, for the message of a ``minimum`` of 0), ``check`` (a
    callable that raises ValueError with the reason for a bad value; ``shown``: the rule as the reference
    states it). Rules across settings stay in esproxy.core.config._check."""
    meta = {"doc": doc, "required": required, "choices": choices, "compat": compat, "key": key}
    meta.update(minimum=minimum, above=above, zero=zero, check=check, shown=shown)
    if default is dataclasses.MISSING:
        default = None  # only for required settings: build() refuses a config without them
    if isinstance(default, (list, dict)):
        value = default
        return dataclasses.field(default_factory=lambda: type(value)(value), metadata=meta)
    if dataclasses.is_dataclass(default):
        cls = type(default)
        return dataclasses.field(default_factory=cls, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def tcp_port(value: int) -> None:
    """A setting's ``check``: a TCP port, 1 to 65535."""
    if not 0 < value < 65536:
        raise ValueError(f"{value} is not a TCP port")


def tcp_port_or_zero(value: int) -> None:
    """A setting's ``check``: 0 (off) or a TCP port."""
    if value:
        tcp_port(value)


def _show(tp: Any, value: float) -> str:
    """A number as the config writes it: durations and sizes in their units."""
    if tp is Duration:
        return "-" + format_duration(-value) if value < 0 else format_duration(value)
    if tp is ByteSize:
        return "-" + format_size(int(-value)) if value < 0 else format_size(int(value))
    return str(value)


def out_of_bounds(f: dataclasses.Field, tp: Any, value: Any) -> str:
    """Why ``value`` breaks the bounds ``f`` declares; "" when it keeps them."""
    minimum, above = f.metadata.get("minimum"), f.metadata.get("above")
    if minimum is not None and value < minimum:
        if minimum == 0:
            zero = f" ({f.metadata['zero']})" if f.metadata.get("zero") else ""
            return f"{_show(tp, value)} must be 0{zero} or more"
        return f"{_show(tp, value)} must be at least {_show(tp, minimum)}"
    if above is not None and not value > above:
        return f"{_show(tp, value)} must be more than {_show(tp, above)}"
    check = f.metadata.get("check")
    if check is not None:
        try:
            check(value)
        except ValueError as e:
            return str(e)
    return ""


def bounds_text(f: dataclasses.Field, tp: Any) -> str:
    """The bounds of a setting as the reference shows them: ``≥ 1``, ``> 0s``, ``1–65535``; "" for none."""
    if f.metadata.get("minimum") is not None:
        return f"≥ {_show(tp, f.metadata['minimum'])}" if f.metadata["minimum"] else "≥ 0"
    if f.metadata.get("above") is not None:
        return f"> {_show(tp, f.metadata['above'])}"
    return f.metadata.get("shown") or ""


def _fields(cls: type) -> dict[str, tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return {key_of(f).lower(): (f, hints[f.name]) for f in dataclasses.fields(cls)}


def key_of(f: dataclasses.Field) -> str:
    return f.metadata.get("key") or f.name


def _describe(value: Any) -> str:
    return f'"{value}"' if isinstance(value, str) else repr(value)


def _coerce(tp: Any, value: Any, path: str) -> Any:
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, path)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if isinstance(value, str) and not dataclasses.is_dataclass(item_tp):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            raise ConfigError(path, f"{_describe(value)} is not a list")
        return [_coerce(item_tp, item, f"{path}[{i}]") for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(path, f"{_describe(value)} is not a mapping")
        out = {}
        for k, v in value.items():
            if isinstance(v, (dict, list)):
                raise ConfigError(f"{path}.{k}", f"{_describe(v)} is not a plain value")
            out[str(k)] = "" if v is None else (str(v).lower() if isinstance(v, bool) else str(v))
        return out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise ConfigError(path, f"{_describe(value)} is not a boolean (true or false)")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INTEGER.fullmatch(value.strip()):
            return int(value)
        raise ConfigError(path, f"{_describe(value)} is not an integer")
    if tp is Duration:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return Duration(value)
        try:
            return Duration(parse_duration(str(value)))
        except ValueError:
            raise ConfigError(path, f"{_describe(value)} is not a duration (like 500ms, 3s, 5m)") from None
    if tp is ByteSize:
        if isinstance(value, int) and not isinstance(value, bool):
            return ByteSize(value)
        try:
            return ByteSize(parse_size(str(value)))
        except ValueError:
            raise ConfigError(path, f"{_describe(value)} is not a size (like 512b, 16kb, 100mb, 1gb)") from None
    if tp is Url:
        parts = urlsplit(str(value))
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(path, f"{_describe(value)} is not an http(s) URL")
        try:
            parts.port  # noqa: B018 — raises ValueError on a bad port
        except ValueError:
            raise ConfigError(path, f"{_describe(value)} has a bad port") from None
        return Url(str(value))
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(path, f"{_describe(value)} is not a string")
        return str(value).lower() if isinstance(value, bool) else str(value)
    raise TypeError(f"unsupported setting type {tp!r} at {path}")


def build(cls: type[T], data: Any, path: str = "") -> T:
    """Instantiate ``cls`` from a YAML mapping; unknown keys, wrong types and bad values raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(path, f"{_describe(data)} is not a mapping")
    known = _fields(cls)
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        entry = known.get(str(key).lower())
        if entry is None:
            names = [key_of(f) for f, _ in known.values()]
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(key_path, f"unknown key{hint}")
        f, tp = entry
        if value is None:
            continue  # `key:` with nothing after it keeps the default, as in the Go original
        coerced = _coerce(tp, value, key_path)
        choices = f.metadata.get("choices")
        if choices and str(coerced).lower() not in choices:
            raise ConfigError(key_path, f"{_describe(value)} is not one of {', '.join(choices)}")
        kwargs[f.name] = str(coerced).lower() if choices else coerced
        if not choices and _holds_text(tp):
            secretrefs.keep(value, key_path)  # what came from ${ENV} or file: is masked in every output from now on
        broken = out_of_bounds(f, tp, coerced)
        if broken:
            raise ConfigError(key_path, broken)
    for f, _ in known.values():
        if f.metadata.get("required") and f.name not in kwargs:
            raise ConfigError(f"{path}.{key_of(f)}" if path else key_of(f), "is required")
    return cls(**kwargs)


def _holds_text(tp: Any) -> bool:
    """Whether a setting of this type keeps strings as given (numbers, booleans and durations are no secrets)."""
    if typing.get_origin(tp) in (list, dict):
        return typing.get_args(tp)[-1] in (str, Url)
    return tp in (str, Url)


def walk_compat(obj: Any, path: str, visit: Callable[[str, str], None]) -> None:
    """Call ``visit(key_path, note)`` for every Go-original key that is set and only partly honoured."""
    if isinstance(obj, list):
        for i, item in enumerate(obj):
            walk_compat(item, f"{path}[{i}]", visit)
        return
    if not dataclasses.is_dataclass(obj):
        return
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key_path = f"{path}.{key_of(f)}" if path else key_of(f)
        note = f.metadata.get("compat")
        if note and value != (f.default if f.default is not dataclasses.MISSING else None):
            visit(key_path, note)
        walk_compat(value, key_path, visit)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        (item,) = typing.get_args(tp)
        return "list of entries" if dataclasses.is_dataclass(item) else f"list of {_type_name(item)}"
    if origin is dict:
        return "map"
    names = {bool: "bool", int: "int", str: "string", Duration: "duration", Url: "URL", ByteSize: "size"}
    return names.get(tp, tp.__name__)


def reference(cls: type, path: str = "") -> list[str]:
    """Markdown table rows (key, type, default, meaning) for every setting under ``cls``."""
    rows: list[str] = []
    for f, tp in _fields(cls).values():
        key = f"{path}.{key_of(f)}" if path else key_of(f)
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp
        if dataclasses.is_dataclass(item):
            suffix = "[]" if typing.get_origin(tp) is list else ""
            rows.append(f"| `{key}{suffix}` | {_type_name(tp)} | | {f.metadata['doc']} |")
            rows.extend(reference(item, key + suffix))
            continue
        if f.metadata.get("required"):
            default = "required"
        elif f.default is not dataclasses.MISSING and f.default is not None:
            d = f.default
            if tp is Duration:
                default = f"`{format_duration(d)}`"
            elif tp is ByteSize:
                default = f"`{format_size(d)}`"
            else:
                default = f"`{str(d).lower() if isinstance(d, bool) else d}`"
            default = "" if default == "``" else default
        else:
            default = f"`{f.default_factory()}`" if f.default_factory() else ""  # type: ignore[misc]
        doc = f.metadata["doc"]
        if f.metadata.get("choices"):
            doc += " One of: " + ", ".join(f"`{c}`" for c in f.metadata["choices"]) + "."
        if f.metadata.get("compat"):
            doc += f" *Go original:* {f.metadata['compat']}"
        bounds = bounds_text(f, tp)
        rows.append(f"| `{key}` | {_type_name(tp)}{' ' + bounds if bounds else ''} | {default} | {doc} |")
    return rows
