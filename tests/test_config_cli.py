"""CLI and configuration validation: --version, --check, config errors, init."""

from __future__ import annotations

import configparser
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from support.process import esproxy_cli

CONFIGS = Path(__file__).resolve().parent / "configs"
ERROR_LINE = re.compile(r"^esproxy: config error: (?P<path>\S+): (?P<reason>.+)$")


def run_cli(*args: str, cwd=None, timeout: float = 20.0) -> subprocess.CompletedProcess:
    return esproxy_cli(*args, cwd=cwd, timeout=timeout)


def lower_keys(obj):
    if isinstance(obj, dict):
        return {str(k).lower(): lower_keys(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [lower_keys(v) for v in obj]
    return obj


# --------------------------------------------------------------------------- version


def test_version_module():
    res = run_cli("--version")
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "esproxy 0.1.0"


def test_version_console_script():
    script = Path(sys.executable).parent / "esproxy"
    if not script.exists():
        pytest.skip(f"{script} not installed (run `make install`)")
    res = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=20)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "esproxy 0.1.0"


# --------------------------------------------------------------------------- valid samples


@pytest.mark.parametrize("sample", sorted(p.name for p in CONFIGS.glob("*.yml")))
def test_sample_configs_pass_check(sample):
    # --check contacts nothing: the brokers/URLs in the samples need not exist.
    res = run_cli("-c", str(CONFIGS / sample), "--check")
    assert res.returncode == 0, f"stdout={res.stdout!r} stderr={res.stderr!r}"
    assert "config error" not in res.stderr


def test_long_option_conf(tmp_path):
    res = run_cli("--conf", str(CONFIGS / "proxy-kafka.yml"), "--check")
    assert res.returncode == 0, res.stderr


# --------------------------------------------------------------------------- config errors

GOOD_PROXY = """\
source:
  proxies:
    - port: 2900
destination:
  primaries:
    - url: http://127.0.0.1:9200
      timeout: 3s
  kafkas:
    - topic: t
      brokers: [127.0.0.1:9092]
      codec: none
"""

BAD_CONFIGS = {
    "unknown-key": (
        """\
source:
  proxies:
    - port: 2900
      prot: 2901
destination:
  primaries:
    - url: http://127.0.0.1:9200
""",
        "source.proxies[0].prot",
        None,
    ),
    "wrong-type": ("chanSize: abc\n" + GOOD_PROXY, "chanSize", None),
    "bad-duration": (
        GOOD_PROXY.replace("timeout: 3s", "timeout: 3x"),
        "destination.primaries[0].timeout",
        "is not a duration",
    ),
    "bad-url": (
        GOOD_PROXY.replace("url: http://127.0.0.1:9200", "url: 'not a url'"),
        "destination.primaries[0].url",
        None,
    ),
    "below-its-minimum": ("workers: 0\n" + GOOD_PROXY, "workers", "0 must be at least 1"),
    "bad-codec": (
        GOOD_PROXY.replace("codec: none", "codec: brotli"),
        "destination.kafkas[0].codec",
        None,
    ),
    # Checked after loading by the modules that own them (esproxy/configfile.py), not by core/config.py.
    "bad-follow-rule": (
        GOOD_PROXY + "follow:\n  rules: [{name: ' ', indices: [logs]}]\n",
        "follow.rules[0].name",
        "is empty",
    ),
    "kafka-sasl-without-protocol": (
        GOOD_PROXY.replace("codec: none", "codec: none\n      sasl: {mechanism: PLAIN}"),
        "destination.kafkas[0].sasl",
        "securityProtocol is PLAINTEXT",
    ),
    "proxy-without-primary": (
        """\
source:
  proxies:
    - port: 2900
destination:
  kafkas:
    - topic: t
      brokers: [127.0.0.1:9092]
""",
        # Either side of the missing link may be named; the line must mention the primaries.
        ("source.proxies[0]", "destination.primaries"),
        "primaries",
    ),
}


def assert_one_error_line(res: subprocess.CompletedProcess) -> re.Match:
    assert res.returncode == 2, f"rc={res.returncode} stdout={res.stdout!r} stderr={res.stderr!r}"
    lines = res.stderr.splitlines()
    assert len(lines) == 1, f"expected exactly one stderr line, got: {res.stderr!r}"
    m = ERROR_LINE.match(lines[0])
    assert m, f"stderr line does not follow `esproxy: config error: <key.path>: <reason>`: {lines[0]!r}"
    return m


def test_good_proxy_base_is_valid(tmp_path):
    # The error cases below are one-line edits of this config: it must itself be valid.
    path = tmp_path / "good.yml"
    path.write_text(GOOD_PROXY)
    res = run_cli("-c", str(path), "--check")
    assert res.returncode == 0, res.stderr


@pytest.mark.parametrize("check", [True, False], ids=["check", "run"])
@pytest.mark.parametrize("case", sorted(BAD_CONFIGS))
def test_bad_config(tmp_path, case, check):
    text, key_path, reason = BAD_CONFIGS[case]
    path = tmp_path / "bad.yml"
    path.write_text(text)
    args = ["-c", str(path)] + (["--check"] if check else [])
    res = run_cli(*args)
    m = assert_one_error_line(res)
    accepted = key_path if isinstance(key_path, tuple) else (key_path,)
    assert m.group("path").lower() in [k.lower() for k in accepted], m.group(0)
    if reason:
        assert reason in m.group("reason"), m.group(0)


def test_bad_duration_exact_message(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text(GOOD_PROXY.replace("timeout: 3s", "timeout: 3x"))
    res = run_cli("-c", str(path), "--check")
    assert_one_error_line(res)
    # The spec's example line, possibly followed by a hint.
    assert res.stderr.startswith('esproxy: config error: destination.primaries[0].timeout: "3x" is not a duration')


def test_missing_config_file(tmp_path):
    missing = tmp_path / "nope.yml"
    res = run_cli("-c", str(missing), "--check")
    assert res.returncode == 2, res
    lines = res.stderr.splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("esproxy: config error: "), lines[0]
    assert "nope.yml" in lines[0]


def test_invalid_yaml(tmp_path):
    path = tmp_path / "bad.yml"
    path.write_text("source: [unclosed\n")
    res = run_cli("-c", str(path), "--check")
    assert res.returncode == 2, res
    assert len(res.stderr.splitlines()) == 1, res.stderr
    assert res.stderr.startswith("esproxy: config error: ")


# --------------------------------------------------------------------------- init


@pytest.mark.parametrize("role", ["proxy", "replay"])
def test_init_writes_valid_files_and_refuses_overwrite(tmp_path, role):
    res = run_cli("init", "--role", role, cwd=tmp_path)
    assert res.returncode == 0, f"stdout={res.stdout!r} stderr={res.stderr!r}"
    conf = tmp_path / "conf.yml"
    snippet = tmp_path / "supervisord-esproxy.conf"
    assert conf.is_file() and snippet.is_file(), sorted(p.name for p in tmp_path.iterdir())

    data = lower_keys(yaml.safe_load(conf.read_text()))
    source = data.get("source") or {}
    if role == "proxy":
        assert any(not p.get("disabled") for p in source.get("proxies") or []), data
        assert not any(not k.get("disabled") for k in source.get("kafkas") or []), data
    else:
        assert any(not k.get("disabled") for k in source.get("kafkas") or []), data
        assert not any(not p.get("disabled") for p in source.get("proxies") or []), data

    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(snippet.read_text())
    programs = [s for s in parser.sections() if s.startswith("program:")]
    assert programs, snippet.read_text()
    command = parser[programs[0]].get("command", "")
    assert "esproxy" in command and "conf.yml" in command, command

    check = run_cli("-c", str(conf), "--check", cwd=tmp_path)
    assert check.returncode == 0, f"generated conf.yml fails --check: {check.stderr!r}"

    before = {p: p.read_bytes() for p in (conf, snippet)}
    again = run_cli("init", "--role", role, cwd=tmp_path)
    assert again.returncode == 1, f"second init must refuse with exit 1: {again}"
    assert (again.stderr + again.stdout).strip(), "refusal must print a message"
    assert {p: p.read_bytes() for p in (conf, snippet)} == before


def test_init_refuses_when_only_snippet_exists(tmp_path):
    snippet = tmp_path / "supervisord-esproxy.conf"
    snippet.write_text("[program:mine]\ncommand=true\n")
    res = run_cli("init", "--role", "proxy", cwd=tmp_path)
    assert res.returncode == 1, res
    assert snippet.read_text() == "[program:mine]\ncommand=true\n"
    assert not (tmp_path / "conf.yml").exists(), "a refused init must write nothing"


def test_init_default_role(tmp_path):
    res = run_cli("init", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    check = run_cli("-c", str(tmp_path / "conf.yml"), "--check", cwd=tmp_path)
    assert check.returncode == 0, check.stderr
