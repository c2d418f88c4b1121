"""`${ENV}` and `file:` values in the config, and the masking of what they bring (no servers)."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys

import pytest

from esproxy.core import secretrefs
from esproxy.core.config import ConfigError, parse
from esproxy.core.deadletters import make_record
from esproxy.core.logs import MaskedStream, SeedFormatter
from esproxy.core.secretrefs import Unresolved, keep, mask, mask_bytes, resolve, resolve_tree
from esproxy.core.wsgi import error_body, header_check

BASE = """
source:
  proxies:
    - port: 9201
      header: {{Authorization: "{client}"}}
destination:
  primaries:
    - url: "{url}"
      header: {{Authorization: "{cluster}"}}
"""


@pytest.fixture(autouse=True)
def no_kept_secrets():
    secretrefs.forget_all()
    yield
    secretrefs.forget_all()


def conf(client: str = "Basic x", url: str = "http://127.0.0.1:9200", cluster: str = "Basic y") -> str:
    return BASE.format(client=client, url=url, cluster=cluster)


def test_env_reference_inside_a_longer_value(monkeypatch):
    monkeypatch.setenv("ESP_TOKEN", "dG9rZW4tZnJvbS1lbnY=")
    cfg = parse(conf(client="Basic ${ESP_TOKEN}"))
    assert cfg.source.proxies[0].header == {"Authorization": "Basic dG9rZW4tZnJvbS1lbnY="}


def test_file_reference_is_the_whole_value_without_its_trailing_newline(tmp_path):
    cred = tmp_path / "cred"
    cred.write_text("ApiKey c2VjcmV0LWluLWEtZmlsZQ==\n")
    cfg = parse(conf(cluster=f"file:{cred}"))
    assert cfg.destination.primaries[0].header == {"Authorization": "ApiKey c2VjcmV0LWluLWEtZmlsZQ=="}


def test_file_path_may_use_the_environment(tmp_path, monkeypatch):
    (tmp_path / "cred").write_text("from-the-dir")
    monkeypatch.setenv("ESP_CREDS_DIR", str(tmp_path))
    assert resolve("file:${ESP_CREDS_DIR}/cred") == "from-the-dir"


@pytest.mark.parametrize(
    "text,value",
    [("$${NOT_A_REF}", "${NOT_A_REF}"), ("cost: $5 and $HOME", "cost: $5 and $HOME"), ("plain", "plain")],
)
def test_literals(text, value):
    assert resolve(text) == value
    assert not getattr(resolve(text), "secrets", ())


def test_numbers_and_durations_may_come_from_the_environment_and_are_no_secrets(monkeypatch):
    monkeypatch.setenv("ESP_PORT", "9299")
    cfg = parse(conf().replace("port: 9201", "port: ${ESP_PORT}"))
    assert cfg.source.proxies[0].port == 9299
    assert mask("listening on 127.0.0.1:9299") == "listening on 127.0.0.1:9299"


def test_every_unresolved_reference_is_reported_with_its_key_path(monkeypatch, tmp_path):
    monkeypatch.delenv("ESP_MISSING", raising=False)
    text = conf(client="Basic ${ESP_MISSING}", cluster=f"file:{tmp_path}/absent") + "      labelEval: '${'\n"
    with pytest.raises(ConfigError) as e:
        parse(text)
    lines = str(e.value).splitlines()
    assert lines == [
        "source.proxies[0].header.Authorization: environment variable ESP_MISSING is not set",
        f"destination.primaries[0].header.Authorization: file {tmp_path}/absent unreadable: No such file or directory",
        "destination.primaries[0].labelEval: ${ without a variable name and } (write $${ for a literal ${)",
    ]


def test_a_bad_value_from_the_environment_is_not_quoted_in_the_error(monkeypatch):
    monkeypatch.setenv("ESP_URL", "elastic-s3cr3t-host:9200")  # no scheme: not a URL
    with pytest.raises(ConfigError) as e:
        parse(conf(url="${ESP_URL}"))
    assert "s3cr3t" not in str(e.value)
    assert str(e.value) == 'destination.primaries[0].url: "***" is not an http(s) URL'


def test_what_came_from_outside_is_masked_everywhere_it_is_printed(monkeypatch):
    monkeypatch.setenv("ESP_CLIENT", "Zm9yLXRoZS1jbGllbnQ=")
    monkeypatch.setenv("ESP_KEY", "plain-key-1234")
    parse(conf(client="Basic ${ESP_CLIENT}", cluster="Token ${ESP_KEY}"))
    line = "header Token plain-key-1234 and Zm9yLXRoZS1jbGllbnQ="
    assert mask(line) == "header Token *** and ***"
    record = logging.LogRecord("esproxy", logging.INFO, "", 0, "%s", (line,), None)
    assert "plain-key-1234" not in SeedFormatter().format(record)
    assert b"plain-key-1234" not in mask_bytes(json.dumps({"x": line}).encode())
    assert "plain-key-1234" not in json.loads(error_body(502, "x", f"failed: {line}"))["error"]["reason"]
    letter = make_record(b"not a bean", f"refused: {line}", "t", 0, 1)
    assert "plain-key-1234" not in json.dumps(letter)


def test_a_url_from_the_environment_has_only_its_password_masked(monkeypatch):
    monkeypatch.setenv("ESP_URL", "http://elastic:pa55-w0rd@es.example:9200")
    parse(conf(url="${ESP_URL}"))
    assert mask("GET http://elastic:pa55-w0rd@es.example:9200/x") == "GET http://elastic:***@es.example:9200/x"
    assert mask("es.example:9200") == "es.example:9200"


def test_secret_with_json_escapes_is_masked_inside_json_too():
    data, problems, _ = resolve_tree({"k": "file:/dev/null"})  # a Resolved string, then its secret set by hand
    assert not problems
    data["k"].secrets = ('pa"ss\\word',)
    keep(data["k"])
    assert "ss" not in mask(json.dumps({"reason": 'pa"ss\\word'}))


def test_short_values_are_not_masked_and_check_says_so(monkeypatch):
    monkeypatch.setenv("ESP_SHORT", "ab")
    cfg = parse(conf(client="Basic ${ESP_SHORT}"))
    assert mask("abc tab") == "abc tab"
    assert (
        "source.proxies[0].header: its value from ${...} or file: is shorter than 4 characters:"
        " too short to be masked in logs" in cfg.warnings
    )


def test_choices_are_no_secrets(monkeypatch):
    monkeypatch.setenv("ESP_DURABILITY", "spool")
    cfg = parse(conf().replace("port: 9201", "port: 9201\n      durability: ${ESP_DURABILITY}"))
    assert cfg.source.proxies[0].durability == "spool"
    assert mask("spool dir") == "spool dir"


def test_unresolved_raises_without_the_value(monkeypatch):
    monkeypatch.delenv("ESP_NOPE", raising=False)
    with pytest.raises(Unresolved, match="ESP_NOPE is not set"):
        resolve("x ${ESP_NOPE}")


def test_header_check_compares_every_header():
    check = header_check({"Authorization": "Basic dXNlcjpwYXNz", "X-Team": "search"})
    good = {"HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz", "HTTP_X_TEAM": "search"}
    assert check(good) is None
    assert check({**good, "HTTP_X_TEAM": "searcH"}) is not None
    assert check({"HTTP_X_TEAM": "search"}).startswith("Basic")
    assert check({**good, "HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz "}) is not None
    assert check({**good, "HTTP_AUTHORIZATION": "Basic dXNlcjpwYXNz\u00e9"}) is not None  # not ASCII: no TypeError
    assert header_check({"X-Empty": ""})({}) is not None  # a missing header is not an empty one


def test_the_log_formatter_masks_tracebacks(monkeypatch):
    monkeypatch.setenv("ESP_TB", "traceback-secret-99")
    parse(conf(cluster="Token ${ESP_TB}"))
    try:
        raise RuntimeError("Token traceback-secret-99 refused")
    except RuntimeError:
        record = logging.LogRecord("esproxy", logging.ERROR, "", 0, "boom", (), sys.exc_info())
    assert "traceback-secret-99" not in SeedFormatter().format(record)


def test_stderr_is_masked_for_gevents_tracebacks(monkeypatch):
    monkeypatch.setenv("ESP_ERR", "stderr-secret-77")
    parse(conf(cluster="Token ${ESP_ERR}"))
    out = io.StringIO()
    MaskedStream(out).write("Traceback ...\nValueError: Token stderr-secret-77\n")
    assert out.getvalue() == "Traceback ...\nValueError: Token ***\n"


def test_check_masks_a_secret_in_a_later_error_too(tmp_path):
    # --check builds the TLS contexts after the config is read: their errors are masked as well
    from support.certs import make_pki

    pki = make_pki(tmp_path)
    hidden = tmp_path / "hidden-cert-name.pem"
    hidden.write_bytes(pki.server_cert.read_bytes())
    conf_path = tmp_path / "conf.yml"
    tls = f"tls: {{cert: '${{ESP_CERT}}', key: '{pki.client_key}'}}"  # not the certificate's key
    conf_path.write_text(conf().replace("port: 9201", f"port: 9201\n      {tls}"))
    env = {**os.environ, "ESP_CERT": str(hidden)}
    ran = subprocess.run(
        [sys.executable, "-m", "esproxy", "-c", str(conf_path), "--check"], env=env, capture_output=True, text=True
    )
    assert ran.returncode == 2, ran.stderr
    assert ran.stderr.startswith("esproxy: config error: source.proxies[0].tls.cert: cannot use *** / "), ran.stderr
    assert "hidden-cert-name" not in ran.stderr
