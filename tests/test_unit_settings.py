"""Settings that carry their own bounds (esproxy.core.schema.setting: minimum, above, check): the builder
refuses a value out of them with the key path and the reason, the defaults keep them, the reference shows them."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from esproxy.core import config
from esproxy.core.config import Config, ConfigError, parse
from esproxy.core.schema import bounds_text, out_of_bounds

MINIMAL = "source: {proxies: [{port: 2900}]}\ndestination: {primaries: [{url: 'http://127.0.0.1:9200/'}]}\n"
REPLAY = (
    "source: {kafkas: [{brokers: 'k:9092', topics: t, group: g, %s}]}\n"
    "destination: {primaries: [{url: 'http://127.0.0.1:9200/'}]}\n"
)


def _bounded(cls: type) -> list[tuple[type, dataclasses.Field, typing.Any]]:
    """Every setting under ``cls`` (nested sections and list entries too) that declares bounds."""
    out = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else tp
        if dataclasses.is_dataclass(item):
            out += _bounded(item)
        elif bounds_text(f, tp) or f.metadata.get("check"):
            out.append((cls, f, tp))
    return out


BOUNDED = list(dict.fromkeys(_bounded(Config)))  # ElasticDestination is under three keys


def test_the_settings_that_had_rules_in_check_declare_their_bounds() -> None:
    names = {f"{cls.__name__}.{f.name}" for cls, f, _ in BOUNDED}
    for name in (
        "Config.workers",
        "Config.stopTimeout",
        "ProxySource.port",
        "ProxySource.readTimeout",
        "KafkaSource.batchBytes",
        "KafkaSource.chunkTimeout",
        "KafkaSource.connectTimeout",
        "KafkaDestination.connectTimeout",
        "KafkaDestination.maxMessageBytes",
        "HealthSettings.deadLetterWindow",
        "AdminListener.port",
        "ElasticDestination.labelEval",
    ):
        assert name in names


@pytest.mark.parametrize("cls,f,tp", BOUNDED, ids=[f"{c.__name__}.{f.name}" for c, f, _ in BOUNDED])
def test_a_default_keeps_its_own_bounds(cls: type, f: dataclasses.Field, tp: typing.Any) -> None:
    if f.metadata.get("required"):
        return
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
    assert out_of_bounds(f, tp, default) == ""


@pytest.mark.parametrize(
    "text,path,reason",
    [
        ("workers: 0\n" + MINIMAL, "workers", "0 must be at least 1"),
        ("chanSize: -1\n" + MINIMAL, "chanSize", "-1 must be 0 (direct hand-off) or more"),
        ("stopTimeout: 2s\n" + MINIMAL, "stopTimeout", "2s must be at least 5s"),
        ("maxInFlightBytes: -1\n" + MINIMAL, "maxInFlightBytes", "-1b must be 0 (no budget) or more"),
        ("health: {maxReplayLag: -1}\n" + MINIMAL, "health.maxReplayLag", "-1s must be 0 (never) or more"),
        ("spool: {maxBytes: 0}\n" + MINIMAL, "spool.maxBytes", "0 must be at least 1"),
        ("admin: {port: 70000}\n" + MINIMAL, "admin.port", "70000 is not a TCP port"),
        (MINIMAL.replace("2900", "0"), "source.proxies[0].port", "0 is not a TCP port"),
        (
            MINIMAL.replace("2900}", "2900, maxHeaderSize: 0}"),
            "source.proxies[0].maxHeaderSize",
            "0b must be at least 1b",
        ),
        (
            MINIMAL.replace("2900}", "2900, idleTimeout: -1}"),
            "source.proxies[0].idleTimeout",
            "-1s must be 0 (no limit) or more",
        ),
        (
            MINIMAL.replace("2900}", "2900, readYourWrites: -0.5}"),
            "source.proxies[0].readYourWrites",
            "-500ms must be 0 (off) or more",
        ),
        (MINIMAL.replace("/'}", "/', maxConns: 0}"), "destination.primaries[0].maxConns", "0 must be at least 1"),
        (MINIMAL.replace("/'}", "/', labelEval: 'a=b'}"), "destination.primaries[0].labelEval", ""),
        (REPLAY % "batchBytes: 0", "source.kafkas[0].batchBytes", "0 must be at least 1"),
        (REPLAY % "maxBytesPerSecond: -5", "source.kafkas[0].maxBytesPerSecond", "-5 must be 0 (unbounded) or more"),
        (REPLAY % "chunkTimeout: 0s", "source.kafkas[0].chunkTimeout", "0s must be more than 0s"),
        (REPLAY % "sessionTimeout: 500ms", "source.kafkas[0].sessionTimeout", "500ms must be at least 1s"),
        (REPLAY % "connectTimeout: 0s", "source.kafkas[0].connectTimeout", "0s must be at least 1s"),
        # an entry's own bounds hold whether it is enabled or not
        (REPLAY % "concurrency: 0, disabled: true", "source.kafkas[0].concurrency", "0 must be at least 1"),
        (
            MINIMAL.replace("/'}]}", "/'}], kafkas: [{topic: t, brokers: b, maxMessageBytes: 100}]}"),
            "destination.kafkas[0].maxMessageBytes",
            "100 must be at least 16384",
        ),
    ],
)
def test_a_value_out_of_its_bounds_names_the_key_and_the_bound(text: str, path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(text)
    assert e.value.path == path
    assert reason in e.value.reason and e.value.reason


def test_the_bounds_themselves_are_allowed() -> None:
    cfg = parse("workers: 1\nchanSize: 0\nstopTimeout: 5s\nhealth: {maxReplayLag: 0}\nadmin: {port: 0}\n" + MINIMAL)
    assert cfg.workers == 1 and cfg.stopTimeout == 5 and cfg.admin.port == 0
    cfg = parse(REPLAY % "chunkTimeout: 1ms, connectTimeout: 1s, maxDocsPerSecond: 0")
    assert cfg.source.kafkas[0].chunkTimeout == 0.001


def test_the_reference_shows_the_bounds() -> None:
    ref = config.reference_markdown()
    assert "| `workers` | int ≥ 1 |" in ref
    assert "| `source.kafkas[].chunkTimeout` | duration > 0s |" in ref
    assert "| `source.proxies[].port` | int 1–65535 |" in ref
    assert "| `health.maxReplayLag` | duration ≥ 0 |" in ref
