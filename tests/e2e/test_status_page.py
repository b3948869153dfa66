"""The status page at GET /, in a real browser: headless Chromium (Debian's
package) driven over the Chrome DevTools protocol loads the page from a
running corral with an API key set, is asked for the key (and never shows it
back), lists the models, updates live when a model loads, answers in its
chat box, and leaves a screenshot in build/test-artifacts/status-page.png.
"""
import asyncio
import base64
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest
import requests
import websockets

from conftest import MODEL, ROOT, server_args

KEY = "page-secret-key"


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    if os.environ.get("CORRAL_SKIP_BROWSER") == "1":
        pytest.skip("no Chromium (CORRAL_SKIP_BROWSER=1)")
    pytest.fail("Chromium not found: install Debian's chromium (scripts/install-deps.sh does), "
                "or set CORRAL_SKIP_BROWSER=1 to skip this test")


class Browser:
    """One headless Chromium and its first page, over the DevTools protocol."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="corral-chromium-")
        self.proc = subprocess.Popen(
            [_chromium(), "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-dev-shm-usage", "--window-size=1280,900", "--user-data-dir=" + self.dir,
             "--remote-debugging-port=0", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        port_file = os.path.join(self.dir, "DevToolsActivePort")
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file) and time.monotonic() < deadline:
            time.sleep(0.05)
        with open(port_file) as f:
            port = int(f.readline())
        pages = [t for t in requests.get("http://127.0.0.1:%d/json/list" % port, timeout=10).json()
                 if t["type"] == "page"]
        self.ws_url = pages[0]["webSocketDebuggerUrl"]
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.ws = self.loop.run_until_complete(websockets.connect(self.ws_url, max_size=64 << 20))
        self.n = 0

    def call(self, method, **params):
        async def go():
            self.n += 1
            my = self.n
            await self.ws.send(json.dumps({"id": my, "method": method, "params": params}))
            while True:
                msg = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
                if msg.get("id") == my:
                    if "error" in msg:
                        raise AssertionError("%s: %s" % (method, msg["error"]))
                    return msg["result"]
        return self.loop.run_until_complete(go())

    def js(self, expr):
        r = self.call("Runtime.evaluate", expression=expr, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in r:
            raise AssertionError("%s: %s" % (expr, r["exceptionDetails"]))
        return r["result"].get("value")

    def wait(self, expr, timeout=15.0, what=None):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                v = self.js(expr)
            except AssertionError:  # the page is not there yet (still about:blank, or loading)
                v = None
            if v:
                return v
            time.sleep(0.1)
        raise AssertionError("the page never showed %s (%s); it shows: %s" % (
            what or expr, expr, self.js("document.body.innerText")[:1500]))

    def close(self):
        try:
            self.loop.run_until_complete(self.ws.close())
        except Exception:
            pass
        self.proc.kill()
        self.proc.wait(timeout=10)
        shutil.rmtree(self.dir, ignore_errors=True)


def test_status_page_in_chromium(make_server, mkmodel):
    other = mkmodel("page-other.gguf", seed=9)
    srv = make_server(server_args(parallel=2, extra=["--model", "other=%s" % other, "--api-key", KEY]))
    b = Browser()
    try:
        b.call("Page.enable")
        b.call("Page.navigate", url=srv.base + "/")
        b.wait("location.href.startsWith(%s) && document.readyState === 'complete'" % json.dumps(srv.base),
               what="the page loaded")
        # an API key is set: the page asks for it
        b.wait("document.getElementById('key').classList.contains('show')", what="the API key form")
        b.js("document.getElementById('keyin').value = %s; document.getElementById('keyform')"
             ".dispatchEvent(new Event('submit', {cancelable: true})); true" % json.dumps(KEY))
        # the models, with their status
        b.wait("document.querySelector('tr[data-model=\"%s\"]') !== null" % MODEL, what="the model list")
        rows = b.js("[...document.querySelectorAll('#models tr')].map(r => r.dataset.model)")
        assert rows == [MODEL, "other"], rows
        status = "document.querySelector('tr[data-model=\"other\"] .st').textContent"
        assert b.js(status) == "unloaded"
        assert KEY not in b.js("document.documentElement.outerHTML")  # never shown back
        # a live update: "other" loads (a request through the API), and the page shows it without a reload
        n0 = b.js("Number(document.body.dataset.updates)")
        r = requests.post(srv.base + "/v1/chat/completions", headers={"Authorization": "Bearer " + KEY},
                          json={"model": "other", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
                          timeout=60)
        assert r.status_code == 200, r.text
        b.wait(status + " === 'loaded'", what="'other' loaded")
        assert b.js("Number(document.body.dataset.updates)") > n0
        b.wait("document.getElementById('events').innerText.includes('loaded')", what="the load in the events")
        assert b.js("document.getElementById('c-loaded').textContent") == "2 / 2"
        # the chat box answers
        b.js("document.getElementById('model').value = %s; document.getElementById('prompt').value = 'Hello';"
             "document.getElementById('chatform').dispatchEvent(new Event('submit', {cancelable: true})); true"
             % json.dumps(MODEL))
        b.wait("document.querySelectorAll('#log div').length >= 2 && "
               "document.querySelectorAll('#log div')[1].textContent.length > 0", what="an answer in the chat box")
        assert b.js("document.querySelectorAll('#log .e').length") == 0, b.js("document.getElementById('log').innerText")
        shot = b.call("Page.captureScreenshot", format="png")["data"]
        out = os.path.join(ROOT, "build", "test-artifacts")
        os.makedirs(out, exist_ok=True)
        png = base64.b64decode(shot)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10000
        with open(os.path.join(out, "status-page.png"), "wb") as f:
            f.write(png)
    finally:
        b.close()


def test_status_json_and_page_headers(make_server):
    srv = make_server(server_args(parallel=1))
    srv.wait_loaded()
    r = requests.get(srv.base + "/", timeout=10)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/html")
    assert "default-src 'none'" in r.headers["Content-Security-Policy"]
    assert "<script" in r.text and "src=" not in r.text.split("<script", 1)[1].split(">", 1)[0]  # nothing external
    s = srv.get("/v1/status").json()
    assert [m["id"] for m in s["models"]] == [MODEL] and s["models"][0]["status"] == "loaded", s
    assert s["capacity"]["host"] >= 1 and s["events"][0]["event"] == "loaded" and s["events"][0]["model"] == MODEL
    assert "path" not in s["models"][0]
    srv.post("/v1/chat/completions", {"model": MODEL, "messages": [{"role": "user", "content": "x"}],
                                      "max_tokens": 20, "ignore_eos": True})
    time.sleep(1.1)
    s = srv.get("/v1/status").json()
    assert s["tokens_per_s"] > 0, s

