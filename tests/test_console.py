"""The console (/_esproxy/ui, issue 27) over HTTP, without a browser: a replay whose admin port requires a
header and a proxy (two pre-fork workers) that requires one on its own port.

Without the header the page answers 401 with its form and no figure, and its fragments 401 as the other admin
paths; with it, the HTML the server sends holds the verdict and the rules table (what a browser without
JavaScript shows) and the series has its first sample. A pause sent from another origin's page is refused
403; the same request as `esproxy sync` sends it (no Origin) pauses the rule.
"""

from __future__ import annotations

import re

import requests
from support.basics import free_port
from support.configs import proxy_config, replay_config
from support.kafka import create_topic

TOKEN = {"X-Admin-Token": "console-secret"}


def test_console_auth_html_and_series(es_a, es_b, kafka, esproxy, names):
    topic, group = names.topic(), names.group()
    create_topic(kafka, topic, partitions=1)
    admin, port = free_port(), free_port()
    replay = replay_config(kafka, topic, group, es_b)
    replay["admin"] = {"port": admin, "header": TOKEN}
    replay["follow"] = {"rules": [{"name": "web", "indices": [f"{names.index('w')}-*"]}]}
    esproxy(replay)
    proxy = proxy_config(port, es_a, kafka, topic, header={"X-Proxy-Key": "k"})
    proxy["workers"] = 2  # its /_esproxy/ paths answered by the master, the query passed on
    esproxy(proxy)
    base = f"http://127.0.0.1:{admin}/_esproxy"

    refused = requests.get(f"{base}/ui", timeout=5)
    assert refused.status_code == 401 and refused.headers["Content-Type"].startswith("text/html")
    assert '<form id="login" autocomplete' in refused.text and 'id="verdict"' not in refused.text
    assert "web" not in refused.text
    for path in ("ui/refresh", "ui/series"):
        r = requests.get(f"{base}/{path}", timeout=5)
        assert r.status_code == 401 and r.json()["error"]["type"] == "security_exception", path

    page = requests.get(f"{base}/ui", headers=TOKEN, timeout=5)
    assert page.status_code == 200 and "script-src 'sha256-" in page.headers["Content-Security-Policy"]
    main = page.text[page.text.index('<main id="panel">') : page.text.index("</main>")]
    assert re.search(r'<span id="verdict" class="verdict">(ok|unhealthy)</span>', main), main[:500]
    rules = main[main.index('id="rules"') :]
    assert "<td>web</td>" in rules and '<span class="state following">following</span>' in rules
    assert 'id="partitions"' in main and 'id="proxy"' not in main  # the replay's tables only

    series = requests.get(f"{base}/ui/series", headers=TOKEN, timeout=5).json()
    assert series["bound"] == 720 and series["fields"][0] == "t" and len(series["points"]) >= 1
    last = series["points"][-1][0]
    later = requests.get(f"{base}/ui/series?after={last}", headers=TOKEN, timeout=5).json()
    assert all(p[0] > last for p in later["points"])

    pause = f"{base}/sync/rules/web/_pause"
    evil = requests.post(pause, headers={**TOKEN, "Origin": "http://evil.example"}, timeout=5)
    assert evil.status_code == 403
    assert requests.get(f"{base}/sync/rules", headers=TOKEN, timeout=5).json()["rules"][0]["state"] == "following"
    assert requests.post(pause, headers=TOKEN, timeout=5).json()["state"] == "paused"
    panel = requests.get(f"{base}/ui/refresh?after={last}", headers=TOKEN, timeout=5).json()["panel"]
    assert '<span class="state paused">paused</span>' in panel and 'data-action="resume"' in panel

    on_proxy = f"http://127.0.0.1:{port}/_esproxy/ui"  # the proxy's own port: its client header
    assert requests.get(on_proxy, timeout=5).status_code == 401
    page = requests.get(on_proxy, headers={"X-Proxy-Key": "k"}, timeout=5).text
    assert 'id="proxy"' in page and 'id="workers"' in page and 'id="rules"' not in page
    whole = requests.get(f"{on_proxy}/refresh", headers={"X-Proxy-Key": "k"}, timeout=5).json()["series"]["points"]
    after = whole[-1][0]
    since = requests.get(f"{on_proxy}/refresh?after={after}", headers={"X-Proxy-Key": "k"}, timeout=5).json()
    assert whole and all(p[0] > after for p in since["series"]["points"])
