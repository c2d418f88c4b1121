"""The console (/_esproxy/ui, issue 27) in a real browser: headless Chromium (Debian's chromium and
chromium-driver, driven by selenium) against a running proxy and replay on the stand-ins.

The replay's admin port requires a header: the page answers 401 with its form, the header entered there
is kept in the tab and sent with the script's requests. Then the page shows the verdict and the sync
rule's row; pause (confirmed in the browser's dialog) goes through /_esproxy/sync/ and the row says
paused; the lag chart has points. At a phone's width nothing is wider than the screen.

Skipped, with the reason, where Chromium, its driver or selenium is not installed (.ci/run installs them
where it can).
"""

from __future__ import annotations

import shutil

import pytest
import requests
from support.basics import free_port, wait_until
from support.configs import proxy_config, replay_config
from support.kafka import create_topic

TOKEN = {"X-Admin-Token": "console-test-secret"}


def _chromium() -> tuple[str, str]:
    browser = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
    driver = shutil.which("chromedriver")
    if browser is None or driver is None:
        pytest.skip("no Chromium or no chromedriver installed (Debian: apt-get install chromium chromium-driver)")
    return browser, driver


@pytest.fixture
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (the test extra)")
    from selenium.common.exceptions import WebDriverException

    binary, driver = _chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
    ):
        options.add_argument(arg)
    try:
        chrome = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver))
    except WebDriverException as e:
        pytest.skip(f"Chromium does not start here: {e.msg}")
    chrome.set_page_load_timeout(20)
    yield chrome
    chrome.quit()


def _text(chrome, css: str) -> str:
    from selenium.webdriver.common.by import By

    found = chrome.find_elements(By.CSS_SELECTOR, css)
    return found[0].text if found else ""


def test_console_in_chromium(browser, es_a, es_b, kafka, esproxy, names):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    topic, group = names.topic(), names.group()
    create_topic(kafka, topic, partitions=1)
    base = names.index("c")
    admin, port = free_port(), free_port()
    replay = replay_config(kafka, topic, group, es_b)
    replay["admin"] = {"port": admin, "header": TOKEN}
    replay["follow"] = {"rules": [{"name": "console", "indices": [f"{base}-*"], "rename": "{{remote_index}}-copy"}]}
    esproxy(replay)
    esproxy(proxy_config(port, es_a, kafka, topic))
    proxy = f"http://127.0.0.1:{port}"
    for i in range(5):
        r = requests.put(f"{proxy}/{base}-x/_doc/{i}", json={"n": i}, timeout=10)
        assert r.status_code < 300, r.text
    wait_until(
        lambda: requests.get(f"{es_b}/{base}-x-copy/_doc/4", timeout=5).status_code == 200,
        timeout=30,
        msg="the writes reached B",
    )
    ui = f"http://127.0.0.1:{admin}/_esproxy/ui"
    wait = WebDriverWait(browser, 20)

    browser.get(ui)  # no header yet: the 401 page and its form
    form = wait.until(expected_conditions.visibility_of_element_located((By.ID, "login")))
    form.find_element(By.NAME, "name").send_keys(*TOKEN)
    form.find_element(By.NAME, "value").send_keys(*TOKEN.values())
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()

    wait.until(lambda b: _text(b, "#verdict") in ("ok", "unhealthy"))
    row = wait.until(lambda b: b.find_element(By.XPATH, "//section[@id='rules']//tr[td[1]='console']"))
    assert "following" in row.text
    wait.until(lambda b: f"{base}-x-copy" in _text(b, "#indices"))

    row.find_element(By.CSS_SELECTOR, "button.act.pause").click()
    alert = wait.until(expected_conditions.alert_is_present())
    assert "pause sync rule console?" in alert.text
    alert.accept()
    wait.until(lambda b: "paused" in _text(b, "#rules tr:has(td)"))
    assert "rule console: paused" in _text(browser, "#note")
    rules = requests.get(f"http://127.0.0.1:{admin}/_esproxy/sync/rules", headers=TOKEN, timeout=5).json()
    assert [r["state"] for r in rules["rules"]] == ["paused"]  # the replay's own state, not only the page's

    def lag_points(b) -> int:
        lines = b.find_elements(By.CSS_SELECTOR, "#chart-lag polyline")
        return len((lines[0].get_attribute("points") or "").split()) if lines else 0

    WebDriverWait(browser, 15).until(lambda b: lag_points(b) >= 2)  # a sample every 5 s, the first at start

    browser.set_window_size(390, 844)  # a phone's width: the tables scroll inside their cards
    wait.until(lambda b: b.execute_script("return document.documentElement.scrollWidth <= window.innerWidth + 1"))
    assert _text(browser, "#verdict") in ("ok", "unhealthy")
