"""The console's pure parts (esproxy.admin.console, issue 27): the ring buffer stays bounded, the panel
renders every section from a full snapshot with names escaped, the page's files are small and allowed by
their own Content-Security-Policy, and refusals (401 page, 403 to another origin's change)."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
from typing import Any

import pytest
from test_unit_admin_metrics import _admin

from esproxy.admin import console
from esproxy.admin.server import Admin, cross_origin, refuse
from esproxy.core.wsgi import header_check


def test_the_series_keeps_the_last_bound_samples() -> None:
    series = console.Series(bound=720)
    for i in range(2000):
        series.add((1000.0 + 5 * i, i, 2 * i, 0, 0, 0.5, 3))
    assert len(series.points) == 720
    assert series.points[0][0] == 1000.0 + 5 * 1280 and series.points[-1][0] == 1000.0 + 5 * 1999
    assert series.rate("requests") == pytest.approx(0.2) and series.rate("captured") == pytest.approx(0.4)
    doc = json.loads(series.as_json())
    assert doc["bound"] == 720 and doc["fields"] == list(console.FIELDS) and len(doc["points"]) == 720
    after = json.loads(series.as_json(after=1000.0 + 5 * 1997))
    assert [p[0] for p in after["points"]] == [1000.0 + 5 * 1998, 1000.0 + 5 * 1999]
    with pytest.raises(ValueError, match="7 numbers"):
        series.add((1.0, 2))


def test_the_default_bound_is_an_hour_of_samples() -> None:
    assert console.BOUND * console.EVERY == 3600
    assert console.Series().points.maxlen == console.BOUND


def test_no_rate_before_two_samples() -> None:
    series = console.Series()
    assert series.rate("requests") is None
    series.add((1.0, 5, 0, 0, 0, 0, 0))
    assert series.rate("requests") is None


def _full(state: str = "following", rule: str = "logs") -> Admin:
    admin = _admin(full=True)
    rules = [{"name": rule, "state": state, "indices": ["logs-*"], "exclude": [], "rename": "{{remote_index}}-sync"}]
    index = {"index": "logs-1-sync", "source": "logs-1", "rule": rule, "docs": 3, "bytes": 300, "failures": 1}
    index.update(last_applied=0.0, lag_seconds=1.25, state=state, last_applied_seconds_ago=None)

    def sync(method: str, parts: list[str], body: bytes) -> tuple[int, Any]:
        return 200, {"rules": rules} if parts == ["rules"] else {"indices": [index]}

    admin.view = dataclasses.replace(admin.view, sync=sync, roles=("proxy", "replay"))
    admin.stats.dead_letter_reason("t-0@7: index logs-1 refused (400)")
    return admin


def test_the_page_holds_every_section_without_javascript() -> None:
    admin = _full()
    admin.sample()
    status, headers, body = admin.render("/_esproxy/ui", "GET")
    page = body.decode()
    assert status == "200 OK" and dict(headers)["Content-Type"].startswith("text/html")
    main = page[page.index('<main id="panel">') : page.index("</main>")]
    assert '<span id="verdict" class="verdict">unhealthy</span>' in main  # the dead letter
    for section in ("health", "proxy", "kafka-failed", "followers", "switchover", "workers", "replay", "rules"):
        assert f'id="{section}"' in main, section
    for section in ("indices", "partitions", "unassigned", "dead-letters"):
        assert f'id="{section}"' in main, section
    assert "<td>logs</td>" in main and '<span class="state following">following</span>' in main
    assert "t-0@7: index logs-1 refused (400)" in main
    assert 'data-rule="logs" data-action="pause"' in main


def test_names_are_escaped() -> None:
    body = console.panel(_full(rule='<img src=x onerror="alert(1)">').console_data())
    assert "<img" not in body and "&lt;img src=x onerror=&quot;alert(1)&quot;&gt;" in body


@pytest.mark.parametrize(
    "state,actions",
    [("following", ["pause", "stop"]), ("paused", ["resume", "stop"]), ("stopped", []), ("held", ["pause", "stop"])],
)
def test_the_buttons_fit_the_rule_state(state: str, actions: list[str]) -> None:
    body = console.panel(_full(state=state).console_data())
    assert re.findall(r'data-action="(\w+)"', body) == actions
    assert f'<span class="state {state}">{state}</span>' in body  # any state the replay reports is shown


def test_the_page_is_small_and_its_policy_allows_its_own_style_and_script() -> None:
    assets = console.assets()
    assert assets.weight < 100_000
    page = assets.page
    for tag, directive in (("style", "style-src"), ("script", "script-src")):
        inline = page[page.index(f"<{tag}>") + len(tag) + 2 : page.index(f"</{tag}>")]
        digest = base64.b64encode(hashlib.sha256(inline.encode()).digest()).decode()
        assert f"{directive} 'sha256-{digest}'" in assets.csp
    assert "unsafe-inline" not in assets.csp and "frame-ancestors 'none'" in assets.csp


def _call(path: str, method: str = "GET", **environ: str) -> tuple[str, dict[str, str], bytes]:
    seen: list[Any] = []
    env = {"PATH_INFO": path, "REQUEST_METHOD": method, **environ}
    out = refuse(env, lambda status, headers: seen.append((status, headers)), header_check({"X-Token": "s"}))
    if out is None:
        return "", {}, b""
    return seen[0][0], dict(seen[0][1]), b"".join(out)


def test_refused_the_page_asks_for_the_header_and_shows_no_figure() -> None:
    status, headers, body = _call("/_esproxy/ui")
    assert status == "401 Unauthorized" and headers["Content-Type"].startswith("text/html")
    assert b'<form id="login" autocomplete' in body and b'id="verdict"' not in body
    status, headers, body = _call("/_esproxy/ui/refresh")
    assert status == "401 Unauthorized" and json.loads(body)["status"] == 401
    assert _call("/_esproxy/ui", HTTP_X_TOKEN="s")[0] == ""


def test_a_change_from_another_origin_is_refused() -> None:
    path = "/_esproxy/sync/rules/logs/_pause"
    status, _, body = _call(
        path, "POST", HTTP_X_TOKEN="s", HTTP_HOST="127.0.0.1:2901", HTTP_ORIGIN="http://evil.example"
    )
    assert status == "403 Forbidden" and b"another origin" in body
    assert (
        _call(path, "POST", HTTP_X_TOKEN="s", HTTP_HOST="127.0.0.1:2901", HTTP_ORIGIN="http://127.0.0.1:2901")[0] == ""
    )
    assert _call(path, "POST", HTTP_X_TOKEN="s", HTTP_HOST="127.0.0.1:2901")[0] == ""  # esproxy sync: no Origin
    assert not cross_origin({"REQUEST_METHOD": "GET", "HTTP_HOST": "h:1", "HTTP_ORIGIN": "https://H:1/"})
    assert cross_origin({"HTTP_HOST": "h:1", "HTTP_ORIGIN": "null"})
