"""Compatibility media types (elasticsearch-py 8 and the other official clients) and their plain forms."""

from __future__ import annotations

import pytest

from esproxy.core import mediatype


@pytest.mark.parametrize(
    "sent, plain",
    [
        ("application/vnd.elasticsearch+json; compatible-with=8", "application/json"),
        ("application/vnd.elasticsearch+x-ndjson; compatible-with=8", "application/x-ndjson"),
        ("application/vnd.elasticsearch+json;compatible-with=7", "application/json"),
        ("Application/VND.Elasticsearch+JSON; compatible-with=8; charset=UTF-8", "application/json; charset=UTF-8"),
        ("application/vnd.elasticsearch+yaml; compatible-with=8", "application/yaml"),
        ("application/vnd.elasticsearch+json", "application/json"),
    ],
)
def test_compatible_media_types_have_a_plain_form(sent, plain):
    assert mediatype.plain(sent) == plain


@pytest.mark.parametrize(
    "sent", ["application/json", "application/x-ndjson", "", "text/plain", "application/vnd.elasticsearch+csv; x=1"]
)
def test_other_media_types_have_none(sent):
    assert mediatype.plain(sent) is None


def test_refusals():
    assert mediatype.refused(406, b'{"error":"Content-Type header [...] is not supported","status":406}')
    media_error = b'{"error":{"type":"media_type_header_exception","reason":"Invalid media-type value"},"status":400}'
    assert mediatype.refused(400, media_error)
    assert not mediatype.refused(400, b'{"error":{"type":"mapper_parsing_exception"},"status":400}')
    assert not mediatype.refused(409, b"{}")


def test_the_accept_header_that_goes_with_it():
    assert mediatype.accept_for("application/vnd.elasticsearch+x-ndjson; compatible-with=8") == (
        "application/vnd.elasticsearch+json; compatible-with=8"
    )
    assert mediatype.accept_for("application/vnd.elasticsearch+json;compatible-with=7; charset=UTF-8") == (
        "application/vnd.elasticsearch+json; compatible-with=7"
    )
