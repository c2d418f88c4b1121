"""The log line machinery: redaction's shortcut, the grouped writes, the access line (no servers)."""

from __future__ import annotations

import io
import json
import logging
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from esproxy.core import logs
from esproxy.core.logs import _SECRETS, LazyFlushHandler, SeedFormatter, access_log, redact


def _full_redact(text: str) -> str:
    for pattern, repl in _SECRETS:
        text = pattern.sub(repl, text)
    return text


@pytest.mark.parametrize(
    "line",
    [
        'kafka write size: 9, message: {"header":{"Authorization":["Basic dXNlcjpwYXNz"]}},to kafka',
        "Authorization: ApiKey Zm9vOmJhcg==",
        "Authorization: apikey Zm9vOmJhcg==",  # not masked by the pattern either (case-sensitive)
        "Bearer%20eyJhbGciOiJIUzI1NiJ9.e30.abc",
        "GET http://elastic:changeme@10.0.0.1:9200/x",
        "GET HTTPS://Elastic:changeme@10.0.0.1:9200/x",
        '{"body":"{\\"password\\":\\"hunter2\\"}"}',
        '{"PassWord": "hunter2", "Secret":"s", "API_KEY":"k", "apiKey": "k2", "passwd":"p"}',
        '{"_id":"x","result":"created","_shards":{"total":2}}',
        '{"pa\u017f\u017fword": "hunter2", "ap\u0131_key": "k", "AP\u0130KEY": "k2"}',  # what re.I also matches
        "plain text without anything",
        "",
    ],
)
def test_redact_shortcut_masks_what_the_patterns_mask(line: str) -> None:
    assert redact(line) == _full_redact(line)


def test_redact_masks_each_kind_in_one_line() -> None:
    line = 'Bearer abcdefgh http://u:pw1234@h/ {"secret": "s3cr3t"}'
    out = redact(line)
    assert "abcdefgh" not in out and "pw1234" not in out and "s3cr3t" not in out


def _handler() -> tuple[LazyFlushHandler, io.StringIO, logging.Logger]:
    stream = io.StringIO()
    handler = LazyFlushHandler(stream, interval=3600)  # only WARNING+ or flush() write
    handler.setFormatter(SeedFormatter())
    logger = logging.getLogger(f"test-lazy-{id(handler)}")
    logger.propagate = False
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    return handler, stream, logger


def test_lines_wait_for_a_warning_or_a_flush_and_keep_their_order() -> None:
    handler, stream, logger = _handler()
    logger.info("one")
    logger.info("two")
    assert stream.getvalue() == ""
    logger.warning("three")
    assert [line.rsplit(": ", 1)[1] for line in stream.getvalue().splitlines()] == ["one", "two", "three"]
    logger.info("four")
    handler.flush()
    assert stream.getvalue().splitlines()[-1].endswith(": four")
    handler.close()


def test_logging_shutdown_writes_what_waits() -> None:
    handler, stream, logger = _handler()
    logger.info("last words")
    logging.shutdown([lambda: handler])  # what atexit runs, for this handler only
    assert stream.getvalue().endswith(": last words\n")


def _access_entry(body: bytes) -> dict:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    logs.log.addHandler(handler)
    level = logs.log.level
    logs.log.setLevel(logging.INFO)
    try:
        access_log("127.0.0.1:1", "POST", "/i/_doc", "http://u:pw@h:9200/i/_doc", "primary", 0.0012, 201, body)
    finally:
        logs.log.removeHandler(handler)
        logs.log.setLevel(level)
    line = stream.getvalue()
    assert line.startswith("access log: ") and line.count("\n") == 1
    return json.loads(line[len("access log: ") :])


@pytest.mark.parametrize(
    "body,expected",
    [
        (
            b'{"_id":"a","result":"created","_shards":{"total":2}}',
            {"_id": "a", "result": "created", "_shards": {"total": 2}},
        ),
        (b'{\n  "pretty" : true\n}\n', {"pretty": True}),
        (b'{"name":"\\u00e9t\\u00e9"}', {"name": "été"}),
        (b'[1, 2, "x"]', [1, 2, "x"]),
        (b"", ""),
        (b"<html>oops</html>", "<html>oops</html>"),
        (b'{"cut": ', '{"cut": '),
        (b"\xff\xfe not utf-8", "\ufffd\ufffd not utf-8"),
    ],
)
def test_access_line_is_json_with_the_original_fields(body: bytes, expected: object) -> None:
    entry = _access_entry(body)
    assert list(entry) == [
        "RemoteAddr",
        "Method",
        "Path",
        "Target",
        "Direction",
        "Duration",
        "StatusCode",
        "ResponseBody",
    ]
    assert entry["ResponseBody"] == expected
    assert entry["Target"] == "http://u:***@h:9200/i/_doc" and entry["StatusCode"] == 201


@given(
    remote=st.text(max_size=30),
    path=st.text(max_size=60),
    target=st.sampled_from(["http://h:9200/x", "http://u:p@h/x", 'http://h/"q"\\']),
    seconds=st.floats(min_value=0, max_value=4000, allow_nan=False),
    status=st.integers(min_value=100, max_value=599),
)
@settings(max_examples=200, deadline=None)
def test_access_log_entry_is_what_json_dumps_wrote(remote, path, target, seconds, status):
    """access_log writes its fields without json.dumps of a dict: the same text, whatever they hold."""
    lines: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    keep = Keep()
    root = logging.getLogger()
    level = root.level
    root.addHandler(keep)
    root.setLevel(logging.INFO)
    try:
        access_log(remote, "GET", path, target, "primary", seconds, status, b'{"a":1}')
    finally:
        root.removeHandler(keep)
        root.setLevel(level)
    entry = {
        "RemoteAddr": remote,
        "Method": "GET",
        "Path": path,
        "Target": logs.redact_url(target),
        "Direction": "primary",
        "Duration": logs.format_duration(seconds),
        "StatusCode": status,
    }
    head = json.dumps(entry, ensure_ascii=False, separators=(",", ":"))
    assert lines == ["access log: " + head[:-1] + ',"ResponseBody":{"a":1}}']


def test_access_lines_written_past_the_logger_read_as_through_it():
    """With logs.setup()'s handler alone, access_log adds its line to the handler itself: the same
    line as through the Logger (a filter on the root forces that way), time aside."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    stream = io.StringIO()
    try:
        logs.setup("INFO")
        handler = root.handlers[0]
        handler.setStream(stream)
        assert logs._direct_handler() is handler
        body = b'{"user":"u","password":"secret-1"}'
        access_log("10.0.0.1:5", "GET", "/i/_doc/1", "http://u:p@h:9200/i/_doc/1", "primary", 0.25, 200, body)
        root.addFilter(lambda record: True)
        assert logs._direct_handler() is None
        access_log("10.0.0.1:5", "GET", "/i/_doc/1", "http://u:p@h:9200/i/_doc/1", "primary", 0.25, 200, body)
        handler.flush()
    finally:
        root.filters.clear()
        root.handlers[:], level = saved
        root.setLevel(level)
    direct, through = [line.split(" [INFO ] ", 1) for line in stream.getvalue().splitlines()]
    assert direct[1] == through[1] and "secret-1" not in direct[1] and "u:***@h" in direct[1]
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}", direct[0])


def test_access_entries_keep_their_place_and_their_own_redaction():
    """Access lines are formatted with their group: in the order they came among other lines, each
    redacted as its own line (a secret in one does not touch the others), as through the Logger."""
    handler, stream, logger = _handler()
    quiet = b'{"found":true}'
    secret = b'{"user":"u","password":"secret-2"}'
    handler.add_access((1.5, 7, "10.0.0.1:5", "GET", "/a", "http://h:9200/a", "primary", 0.25, 200, quiet))
    logger.info("between")
    handler.add_access((2.0, 8, "10.0.0.1:5", "GET", "/b", "http://u:p@h:9200/b", "primary", 0.5, 200, secret))
    handler.flush()
    first, middle, last = stream.getvalue().splitlines()
    assert "[7    ]" in first and first.endswith(
        'access log: {"RemoteAddr":"10.0.0.1:5","Method":"GET","Path":"/a",'
        '"Target":"http://h:9200/a","Direction":"primary","Duration":"250ms","StatusCode":200,"ResponseBody":{"found":true}}'
    )
    assert middle.endswith(" : between")
    assert "[8    ]" in last and "secret-2" not in last and '"password":"***"' in last and "u:***@h" in last
    assert first[:23] != last[:23]  # each line's own time


def test_access_entries_holding_large_answers_are_written_at_once():
    handler, stream, _ = _handler()
    body = b'"' + b"x" * (logs.HELD_BODIES // 2) + b'"'
    handler.add_access((1.0, 1, "r:1", "GET", "/a", "t", "primary", 0.1, 200, body))
    assert stream.getvalue() == ""
    handler.add_access((1.0, 1, "r:1", "GET", "/a", "t", "primary", 0.1, 200, body))
    assert stream.getvalue().count("access log: ") == 2


def test_an_access_entry_that_cannot_be_formatted_loses_no_other_line():
    handler, stream, _ = _handler()
    handler.add_access((1.0, 1, "r:1", "GET", "/a", "t", "primary", 0.1, 200, b"{}"))
    handler.add_access((1.0, 1, "r:1", "GET", "/b", "t", "primary", 0.1, "x", b"{}"))  # type: ignore[arg-type]
    handler.add_access((1.0, 1, "r:1", "GET", "/c", "t", "primary", 0.1, 200, b"{}"))
    handler.flush()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3 and '"Path":"/a"' in lines[0] and '"Path":"/c"' in lines[2]
    assert "not formatted: ValueError" in lines[1] and "'/b'" in lines[1]
