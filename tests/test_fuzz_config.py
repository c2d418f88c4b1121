"""Property-based tests of the config loader and of label expressions (no servers).

The loader's promise: any YAML text or data gives a Config or a ConfigError naming the key, never another
exception. Examples per property: the hypothesis profile (tests/conftest.py).
"""

from __future__ import annotations

import dataclasses
import typing

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from support.fuzz import costly

from esproxy.configfile import parse
from esproxy.core import labels
from esproxy.core.config import Config, ConfigError
from esproxy.core.schema import ByteSize, Duration, Url, build, key_of

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20), st.binary(max_size=8)
)
odd_strings = st.sampled_from(
    ["", " ", "²", "--5", "-", "1_000", "0x10", "1e400", "inf", "nan", "-0", "٣", "true ", "TRUE", "1m1", ".5s", "5µs"]
    + ["ms", "http://", "https://:9200", "http://h:99999", "http://h:x", "${ENV}", "file:/nonexistent", "a,b,,c"]
)
junk = st.recursive(
    st.one_of(json_scalars, odd_strings),
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)),
    max_leaves=8,
)
scalars_for = {
    bool: st.one_of(st.booleans(), st.sampled_from(["true", "False", "yes"]), odd_strings),
    int: st.one_of(st.integers(-(2**70), 2**70), st.integers(-2, 70000).map(str), odd_strings),
    Duration: st.one_of(st.sampled_from(["500ms", "3s", "1m30s", "0", "2h", "1.5s"]), st.floats(), odd_strings),
    ByteSize: st.one_of(
        st.sampled_from(["100mb", "16kb", "512b", "1.5kb", "0", "1gb", "9" * 400 + "pb"]), st.integers()
    ),
    Url: st.one_of(
        st.sampled_from(["http://127.0.0.1:9200", "https://es.example:443/", "http://[::1]:9200"]), odd_strings
    ),
}


def value_for(tp: typing.Any, f: dataclasses.Field, depth: int) -> st.SearchStrategy:
    """A value of the type a setting declares, or junk: what an operator may write for it."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        good = settings_of(tp, depth + 1)
    elif origin is list:
        (item,) = typing.get_args(tp)
        if dataclasses.is_dataclass(item):
            good = st.lists(settings_of(item, depth + 1), max_size=2)
        else:
            good = st.one_of(st.lists(value_for(item, f, depth), max_size=3), st.text(max_size=20))
    elif origin is dict:
        good = st.dictionaries(st.text(max_size=8), st.one_of(json_scalars, junk), max_size=3)
    elif tp is str:
        choices = f.metadata.get("choices") or ()
        good = st.one_of(st.sampled_from(choices), st.text(max_size=20)) if choices else st.text(max_size=30)
    else:
        good = scalars_for[tp]
    return st.one_of(good, good, junk)


def settings_of(cls: type, depth: int = 0) -> st.SearchStrategy:
    """A YAML mapping for a settings class: any subset of its keys (in any letter case), a stray key now and then."""
    if depth > 3:
        return st.just({})
    hints = typing.get_type_hints(cls)
    keys = {key_of(f): value_for(hints[f.name], f, depth) for f in dataclasses.fields(cls)}
    known = st.fixed_dictionaries({}, optional=keys)
    stray = st.dictionaries(st.sampled_from([k.upper() for k in keys] + ["unknown", "prot"]), junk, max_size=1)
    return st.builds(lambda a, b: {**a, **b}, known, st.one_of(st.just({}), stray))


def _leaves(cls: type, path: tuple = ()) -> list[tuple[tuple, typing.Any, dataclasses.Field]]:
    """Every setting under ``cls``: its key path (0 for the one entry of a list), its type, its field."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        tp, key = hints[f.name], (*path, key_of(f))
        item = typing.get_args(tp)[0] if typing.get_origin(tp) is list else None
        if dataclasses.is_dataclass(tp):
            out += _leaves(tp, key)
        elif item is not None and dataclasses.is_dataclass(item):
            out += _leaves(item, (*key, 0))
        else:
            out.append((key, tp, f))
    return out


LEAVES = _leaves(Config)


@st.composite
def one_setting(draw) -> dict:
    """A config that sets one setting (anywhere in the tree) to a value of its type, an odd string or junk."""
    path, tp, f = draw(st.sampled_from(LEAVES))
    value: typing.Any = draw(value_for(tp, f, 0))
    for part in reversed(path):
        value = [value] if part == 0 else {part: value}
    return value


def _parse_or_config_error(text: str) -> None:
    try:
        cfg = parse(text)
    except ConfigError as e:
        assert str(e)  # the one line shown to the operator
        return
    assert isinstance(cfg, Config) and (cfg.proxies() or cfg.kafka_sources())


@costly(10)
@given(st.one_of(settings_of(Config), one_setting(), junk))
def test_any_config_data_builds_or_gives_a_config_error(data) -> None:
    try:
        build(Config, data)
    except ConfigError:
        pass


@costly(10)
@given(settings_of(Config))
def test_any_config_file_parses_or_gives_a_config_error(data) -> None:
    _parse_or_config_error(yaml.safe_dump(data, allow_unicode=True))


yaml_bits = st.sampled_from(
    ["source:", "proxies:", "- ", "port: ", "&a ", "*a", "!!python/object:os.system", "{", "[", "'", '"', ": ", "\t"]
    + ["\n", "  ", "---", "...", "%YAML 1.1", "? ", "|", ">", "#", "\x00", "\ufeff", "9200", "destination:"]
)


@given(st.one_of(st.text(max_size=300), st.lists(st.one_of(yaml_bits, st.text(max_size=5)), max_size=60).map("".join)))
def test_any_config_text_parses_or_gives_a_config_error(text) -> None:
    _parse_or_config_error(text)


def test_a_config_nested_deeper_than_the_parser_goes_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="nested deeper"):
        parse("source: " + "[" * 2000)


@pytest.mark.parametrize("text", ["²", "--5", "1_000", "٣", "5-", "+5", "0x10", ""])
def test_an_integer_setting_takes_only_decimal_digits(text: str) -> None:
    """Found by the fuzz test: str.isdigit() let "²" and "--5" through to int(), whose ValueError escaped."""
    with pytest.raises(ConfigError, match="chanSize.*is not an integer"):
        build(Config, {"chanSize": text})
    assert build(Config, {"chanSize": " 12 "}).chanSize == 12
    with pytest.raises(ConfigError, match="workers: -1 must be at least 1"):  # read as -1, then its bound
        build(Config, {"workers": "-1"})


@pytest.mark.parametrize("text", ["9" * 400 + "pb", "9" * 400, "1e400", "-1kb", "1.5b", "kb"])
def test_a_size_setting_takes_only_sizes(text: str) -> None:
    """Found by the fuzz test: a size with 400 digits is a float infinity, and int() of it an OverflowError."""
    with pytest.raises(ConfigError, match="maxContentLength.*is not a size"):
        build(Config, {"source": {"proxies": [{"maxContentLength": text}]}})


# --------------------------------------------------------------------------- labelEval

words = st.text("abcXY019_-.:/", max_size=6)
keys = words.filter(bool)
comparisons = st.tuples(keys, st.sampled_from(["==", "!="]), words)
spaces = st.sampled_from(["", " ", "  ", "\t"])


@st.composite
def expressions(draw):
    """A labelEval expression as an operator may write it, and its alternatives of comparisons."""
    alternatives = draw(st.lists(st.lists(comparisons, min_size=1, max_size=3), min_size=1, max_size=3))
    quote = draw(st.sampled_from(["", "'", '"']))

    def term(c: tuple[str, str, str]) -> str:
        key, op, value = c
        return draw(spaces) + key + draw(spaces) + op + draw(spaces) + quote + value + quote + draw(spaces)

    return "||".join("&&".join(term(c) for c in alt) for alt in alternatives), alternatives


label_sets = st.one_of(st.none(), st.dictionaries(keys, st.one_of(words, json_scalars), max_size=5))


@given(expressions(), label_sets)
def test_label_expressions_match_as_the_grammar_says(expr_alternatives, source_labels) -> None:
    expr, alternatives = expr_alternatives
    got = source_labels or {}
    expected = any(all((str(got.get(k, "")) == v) == (op == "==") for k, op, v in alt) for alt in alternatives)
    assert labels.parse(expr)(source_labels) is expected


@given(
    st.one_of(
        st.text(max_size=80),
        st.lists(
            st.one_of(words, st.sampled_from(["==", "!=", "&&", "||", "&", "|", "=", "!", " ", "'", '"'])), max_size=20
        ).map("".join),
    ),
    label_sets,
)
def test_any_label_expression_parses_or_gives_a_value_error(expr, source_labels) -> None:
    try:
        match = labels.parse(expr)
    except ValueError as e:
        assert str(e)
        return
    assert match(source_labels) in (True, False)
