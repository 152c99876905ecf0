"""The dashboard in a real headless browser: ``streamlit run app.py`` on 127.0.0.1 against a small
demo store, Debian ``chromium`` loads every page, the rendered DOM must hold each page's key text,
a PNG screenshot of each page goes to ``docs/screenshots/``, and a keyboard shortcut on the review
queue stores a human label.

Chromium is driven over the DevTools protocol (``--remote-debugging-port``; the client is the
``websockets`` package Streamlit already depends on) because ``--dump-dom`` alone returns the page
before Streamlit's websocket has delivered any content. The DOM checked is the same serialisation
``--dump-dom`` prints (``document.documentElement.outerHTML``). Skipped only when chromium is absent.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _process import stop_process
from test_dashboard_app import SECRET, build_demo_store

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
CHROMIUM = next((p for p in (shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome")) if p), None)
# url path -> key texts that must be in the rendered DOM
PAGES = {
    "": ["Overview", "Targets × runs", "Refusal rate per category", "Provider refusal signals", "run-b"],
    "calibration": ["Observed vs calibrated rate per category", "Reliability diagram", "Solve thresholds"],
    "explorer": ["Explorer", "matching responses", "Prompt prediction"],
    "review": ["Review queue", "Keys:", "Compliance (N)"],
    "ngrams": ["N-grams", "Towards refusal", "Towards compliance"],
    "compare": ["Compare runs", "significant drift", "harmless"],
    "probes": ["Tense reformulation", "Over-refusal"],
}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


class DevTools:
    """A minimal Chrome DevTools Protocol client over one page target."""

    def __init__(self, ws_url: str):
        from websockets.sync.client import connect

        self._stack = contextlib.ExitStack()
        self.ws = self._stack.enter_context(connect(ws_url, max_size=64 * 1024 * 1024, open_timeout=30))
        self.next_id = 0

    def call(self, method: str, timeout: float = 60, **params):
        self.next_id += 1
        mid = self.next_id
        self.ws.send(json.dumps({"id": mid, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            msg = json.loads(self.ws.recv(timeout=max(0.1, deadline - time.monotonic())))
            if msg.get("id") == mid:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def eval(self, expr: str):
        return self.call("Runtime.evaluate", expression=expr, returnByValue=True)["result"].get("value")

    def close(self) -> None:
        self._stack.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{tmp / 'demo.db'}"
    build_demo_store(url)
    port = _free_port()
    env = {**os.environ, "REFUSAL_AUDIT_DB": url, "DASH_TEST_KEY": SECRET, "USER": "browser-test",
           "REFUSAL_AUDIT_DASHBOARD_SECRETS": str(tmp / "none.toml")}  # fmt: skip
    env.pop("REFUSAL_AUDIT_DASHBOARD_PASSWORD_HASH", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.address", "127.0.0.1",
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false",
         "--server.fileWatcherType", "none"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/_stcore/health", 60)
        yield f"http://127.0.0.1:{port}", url
    finally:
        stop_process(proc)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    import httpx

    profile = tmp_path_factory.mktemp("chromium-profile")
    port = _free_port()
    proc = subprocess.Popen(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--no-first-run", "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
         f"--remote-debugging-port={port}", "--remote-debugging-address=127.0.0.1", "--window-size=1400,1000",
         "about:blank"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_http(f"http://127.0.0.1:{port}/json/version", 30)
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=5).json()
        page = next(t for t in targets if t.get("type") == "page")
        dt = DevTools(page["webSocketDebuggerUrl"])
        dt.call("Page.enable")
        dt.call("Runtime.enable")
        dt.call("Emulation.setDeviceMetricsOverride", width=1400, height=1400, deviceScaleFactor=1, mobile=False)
        yield dt
        dt.close()
    finally:
        stop_process(proc)


def _load(dt: DevTools, url: str, keys: list[str], timeout: float = 60) -> str:
    """Navigate and wait until every key text is rendered; the first render can be blank, so a
    page that stays blank is loaded once more. Returns the DOM (as ``--dump-dom`` prints it)."""
    for attempt in range(2):
        dt.call("Page.navigate", url=url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = dt.eval("document.body ? document.body.innerText : ''") or ""
            running = dt.eval("!!document.querySelector('[data-testid=\"stStatusWidget\"]')")
            if all(k in text for k in keys) and not running:
                _wait_for_charts(dt)
                return dt.eval("document.documentElement.outerHTML")
            time.sleep(0.5)
    missing = [k for k in keys if k not in (dt.eval("document.body.innerText") or "")]
    raise AssertionError(f"{url}: {missing} never rendered")


_CHARTS_DRAWN = (
    "Array.from(document.querySelectorAll('[data-testid*=\"VegaLiteChart\"], .vega-embed'))"
    ".every(e => e.querySelector('canvas, svg'))"
)


def _wait_for_charts(dt: DevTools, timeout: float = 15) -> None:
    """Give the Vega charts time to draw (they render after the text), for the screenshots."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not dt.eval(_CHARTS_DRAWN):
        time.sleep(0.3)
    time.sleep(1.0)


def _screenshot(dt: DevTools, path: Path) -> None:
    data = dt.call("Page.captureScreenshot", format="png")["data"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(base64.b64decode(data))


@pytest.mark.parametrize("page", list(PAGES))
def test_page_renders_in_chromium_and_is_screenshotted(server, browser, page):
    base, _ = server
    dom = _load(browser, f"{base}/{page}", PAGES[page])
    assert "Traceback" not in dom and "StreamlitAPIException" not in dom
    assert SECRET not in dom and "DASHBOARDSECRET" not in dom
    shot = SHOTS / f"{page or 'overview'}.png"
    _screenshot(browser, shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000


def test_review_keyboard_shortcut_stores_a_human_label(server, browser):
    from sqlalchemy import func, select

    from audit.store import Label, open_store

    base, url = server
    store = open_store(url)
    try:
        with store.session() as s:
            before = s.scalar(select(func.count(Label.id)).where(Label.source == "human", Label.reviewer == "browser-test"))
        _load(browser, f"{base}/review", ["Review queue", "Compliance (N)"])
        browser.call("Runtime.evaluate", expression="document.activeElement && document.activeElement.blur()")
        for kind in ("keyDown", "keyUp"):
            browser.call("Input.dispatchKeyEvent", type=kind, key="n", code="KeyN", text="n" if kind == "keyDown" else "",
                         windowsVirtualKeyCode=78, nativeVirtualKeyCode=78)  # fmt: skip
        deadline = time.monotonic() + 30
        after = before
        while time.monotonic() < deadline and after == before:
            time.sleep(0.5)
            with store.session() as s:
                after = s.scalar(select(func.count(Label.id)).where(Label.source == "human", Label.reviewer == "browser-test"))
        assert after == before + 1
        with store.session() as s:
            lab = s.scalars(select(Label).where(Label.reviewer == "browser-test").order_by(Label.id.desc())).first()
            assert (lab.refusal, lab.kind) == (False, "full_compliance")
    finally:
        store.dispose()
