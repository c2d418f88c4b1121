"""Pure logic: durations, label expressions, write classification, beans, config validation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from esproxy.core import config, labels, routing
from esproxy.core.bean import Bean, BeanError
from esproxy.core.messages import partition_key
from esproxy.core.schema import ConfigError, format_duration, parse_duration

HERE = Path(__file__).parent


@pytest.mark.parametrize(
    "text,seconds",
    [("500ms", 0.5), ("3s", 3), ("5m", 300), ("1h", 3600), ("1m30s", 90), ("1.5s", 1.5), ("0", 0), ("250us", 0.00025)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["3x", "", "s", "3", "-1s", "1 s", "ms5"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


@pytest.mark.parametrize(
    "seconds,text", [(0.029114144, "29.114144ms"), (2, "2s"), (90, "1m30s"), (0.0000015, "1.5µs"), (3661, "1h1m1s")]
)
def test_format_duration_like_go(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


def test_label_expressions() -> None:
    m = labels.parse("SRC==PROXY || SRC==KAFKA")
    assert m({"SRC": "PROXY"}) and m({"SRC": "KAFKA"})
    assert not m({"SRC": "OTHER"}) and not m(None)
    both = labels.parse("A==1 && B!=2")
    assert both({"A": "1", "B": "3"}) and not both({"A": "1", "B": "2"})
    assert labels.parse("")(None)
    with pytest.raises(ValueError, match="cannot parse"):
        labels.parse("SRC=PROXY")


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/idx/_search"),
        ("POST", "/_search/scroll"),
        ("DELETE", "/_search/scroll"),
        ("POST", "/idx/_count?q=x"),
        ("POST", "/_mget"),
        ("POST", "/idx/_msearch/template"),
        ("POST", "/_sql?format=txt"),
        ("POST", "/idx/_analyze"),
        ("POST", "/idx/_validate/query"),
        ("POST", "/idx/_explain/1"),
        ("POST", "/idx/_field_caps"),
        ("POST", "/idx/_termvectors/1"),
        ("POST", "/_mtermvectors"),
        ("POST", "/idx/_pit?keep_alive=1m"),
        ("POST", "/idx/_async_search"),
        ("POST", "/idx/_eql/search"),
        ("POST", "/idx/_knn_search"),
        ("POST", "/_render/template"),
        ("POST", "/idx/_rank_eval"),
        ("POST", "/idx/_search/template"),
        ("GET", "/idx/_doc/1"),
        ("HEAD", "/idx"),
    ],
)
def test_reads_are_not_writes(method: str, path: str) -> None:
    assert not routing.is_write(method, path)


@pytest.mark.parametrize(
    "method,path",
    [
        ("POST", "/idx/_doc"),
        ("PUT", "/idx/_doc/1"),
        ("DELETE", "/idx/_doc/1"),
        ("POST", "/_bulk"),
        ("POST", "/idx/_update/1"),
        ("PUT", "/idx"),
        ("POST", "/idx/_delete_by_query"),
        ("PUT", "/idx/_mapping"),
    ],
)
def test_writes(method: str, path: str) -> None:
    assert routing.is_write(method, path)


def test_go_beans_parse() -> None:
    lines = (HERE / "go-beans.jsonl").read_bytes().splitlines()
    beans = [Bean.from_json(line) for line in lines]
    assert beans[0].method == "POST" and beans[0].requestUri.startswith("/person/_doc/")
    assert json.loads(beans[0].body)["sex"] == "男"
    # The original logs bodies as embedded objects: such a bean carries the JSON text of it.
    assert json.loads(beans[1].body)["idcard"] == "467063198902092332"
    assert beans[1].labels == {"SRC": "PROXY"}
    assert beans[2].body.count(b"\n") == 4 and beans[2].header["Content-Type"] == ["application/x-ndjson"]


def test_bean_round_trip_keeps_go_field_names() -> None:
    bean = Bean("PUT", "/i/_doc/1", '{"名":1}'.encode(), {"Content-Type": ["application/json"]}, "h", "r", None, ["x"])
    raw = json.loads(bean.to_json())
    assert set(raw) == {"labels", "host", "remoteAddr", "method", "requestUri", "header", "body", "clusterIds"}
    assert Bean.from_json(bean.to_json()) == bean
    binary = Bean("PUT", "/i/_doc/1", b"\xff\xfe")
    assert Bean.from_json(binary.to_json()).body == b"\xff\xfe"


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"not json", "not JSON"),
        (b"[1]", "not a JSON object"),
        (b'{"requestUri": "/x"}', "no method"),
        (b'{"method": "PUT"}', "no requestUri"),
    ],
)
def test_bad_beans(data: bytes, reason: str) -> None:
    with pytest.raises(BeanError, match=reason):
        Bean.from_json(data)


def test_partition_key_is_the_index() -> None:
    assert partition_key(Bean("PUT", "/logs-1/_doc/1?refresh=true")) == b"logs-1"
    assert partition_key(Bean("POST", "/_bulk")) == b"_bulk"


MINIMAL = "source: {proxies: [{port: 2900}]}\ndestination: {primaries: [{url: 'http://127.0.0.1:9200/'}]}\n"


@pytest.mark.parametrize(
    "text,path,reason",
    [
        ("chanSize: abc\n" + MINIMAL, "chanSize", "is not an integer"),
        (MINIMAL.replace("port: 2900", "port: 2900, prot: 1"), "source.proxies[0].prot", "unknown key"),
        (MINIMAL.replace("'}", "', timeout: 3x}"), "destination.primaries[0].timeout", "is not a duration"),
        (MINIMAL.replace("http://127.0.0.1:9200/", "localhost:9200"), "destination.primaries[0].url", "URL"),
        ("source: {proxies: [{port: 2900}]}\n", "source.proxies[0]", "no destination.primaries"),
        (MINIMAL.replace("2900", "70000"), "source.proxies[0].port", "not a TCP port"),
        ("destination: {primaries: [{url: 'http://a:1/'}]}\n", "source", "nothing to run"),
        (
            MINIMAL.replace("/'}]}", "/'}], kafkas: [{topic: t, brokers: b, codec: brotli}]}"),
            "destination.kafkas[0].codec",
            "one of",
        ),
        (MINIMAL.replace("[{port: 2900}]", "[{port: 2900, header: [a]}]"), "source.proxies[0].header", "mapping"),
        ("stopTimeout: 2s\n" + MINIMAL, "stopTimeout", "at least 5s"),
        (
            MINIMAL.replace("/'}]}", "/'}], kafkas: [{topic: t, brokers: b, connectTimeout: 0s}]}"),
            "destination.kafkas[0].connectTimeout",
            "at least 1s",
        ),
    ],
)
def test_config_errors_name_the_key(text: str, path: str, reason: str) -> None:
    with pytest.raises(ConfigError) as e:
        config.parse(text)
    assert e.value.path == path
    assert reason in e.value.reason


def test_config_keys_are_case_insensitive_and_go_spellings_work() -> None:
    cfg = config.parse(
        "ChanSize: 5\nsource: {proxies: [{Port: 2900, noaccesslog: true}]}\n"
        "destination:\n  primaries: [{url: 'http://127.0.0.1:9200/', labelEval: ''}]\n"
        "  kafkas: [{topic: t, brokers: 'a:1,b:2', async: false, requiredAcks: WaitForAll, version: 2.7.2}]\n"
    )
    assert cfg.chanSize == 5 and cfg.source.proxies[0].port == 2900
    k = cfg.destination.kafkas[0]
    assert k.brokers == ["a:1", "b:2"] and k.synchronous and k.acks == "all"
    assert any("version" in w for w in cfg.warnings)


def test_reference_lists_every_key() -> None:
    ref = config.reference_markdown()
    for key in (
        "chanSize",
        "source.proxies[].port",
        "source.kafkas[].assignor",
        "destination.kafkas[].requiredAcks",
        "destination.rests[].url",
        "destination.primaries[].timeout",
    ):
        assert f"`{key}`" in ref


def test_generated_references_match_their_declarations() -> None:
    script = HERE.parent / "ops" / "update-config-reference"
    result = subprocess.run([sys.executable, str(script), "--check"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(
    "status,retried",
    [(401, True), (403, True), (429, True), (500, True), (503, True), (400, False), (404, False), (409, False)],
)
def test_replay_retries_what_b_may_accept_later(status: int, retried: bool) -> None:
    from esproxy.clients.elastic import is_retriable

    assert is_retriable(status) is retried


@pytest.mark.parametrize("client", ["KafkaProducer", "KafkaConsumer"])
def test_connect_timeout_is_an_argument_of_the_installed_kafka_python(client: str) -> None:
    import kafka

    from esproxy.clients.kafkaconnect import connect_kwargs

    cls = getattr(kafka, client)
    entry = config.parse(MINIMAL.replace("/'}]}", "/'}], kafkas: [{topic: t, brokers: b, connectTimeout: 2s}]}"))
    kwargs = connect_kwargs(entry.destination.kafkas[0], cls)
    assert list(kwargs.values()) == [2000] and set(kwargs) <= set(cls.DEFAULT_CONFIG)
