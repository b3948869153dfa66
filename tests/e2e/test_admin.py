"""The admin API: /admin/models, /admin/pool, load, unload, register."""
import os
import shutil
import threading
import time

import requests

from conftest import TEST_MODEL, assert_error, completion_body, stream_request

ARGS = ["--threads", "1", "--ctx", "512", "--parallel", "1", "--port", "0"]


def _wait_status(srv, model, want, timeout=20):
    deadline = time.monotonic() + timeout
    st = None
    while time.monotonic() < deadline:
        st = {m["id"]: m for m in srv.get("/admin/models").json()["data"]}[model]["status"]
        if st == want:
            return
        time.sleep(0.02)
    raise AssertionError("%s is %s, not %s" % (model, st, want))


def test_admin_models_and_pool_shape(make_server):
    srv = make_server(["--model", "a=" + TEST_MODEL] + ARGS)
    r = srv.get("/admin/models")
    assert r.status_code == 200
    (m,) = r.json()["data"]
    assert m["id"] == "a" and m["path"] == TEST_MODEL and m["status"] == "unloaded"
    for k in ("memory_estimated", "memory_measured", "in_flight", "queued", "slots_busy", "slots_total",
              "keep_alive", "load_ms", "load_progress"):
        assert k in m, k
    assert m["last_used"] is None and m["keep_alive"] == 300
    assert srv.post("/v1/completions", completion_body(model="a", max_tokens=2)).status_code == 200
    p = srv.get("/admin/pool").json()
    assert p["loaded"] == 1 and p["loads"] == 1 and 0 < p["memory_used"] <= p["memory_budget"]
    (m,) = p["models"]
    assert m["status"] == "loaded" and m["load_progress"] == 1.0 and m["load_ms"] >= 0
    assert m["memory_estimated"] > 0 and abs(m["last_used"] - time.time()) < 5


def test_admin_load_and_unload(make_server):
    srv = make_server(["--model", "a=" + TEST_MODEL] + ARGS)
    r = srv.post("/admin/models/load", {"model": "a"})
    assert r.status_code in (200, 202) and r.json()["id"] == "a"
    _wait_status(srv, "a", "loaded")
    assert srv.post("/admin/models/load", {"model": "a"}).json()["status"] == "loaded"
    r = srv.post("/admin/models/unload", {"model": "a"})
    assert r.status_code == 200 and r.json()["status"] == "unloaded"
    assert srv.model_health("a")["status"] == "unloaded"
    assert_error(srv.post("/admin/models/load", {"model": "nope"}), 404)
    assert_error(srv.post("/admin/models/unload", {}), 400, param="model")
    assert_error(srv.post("/admin/models/unload", data=b"{x", headers={"Content-Type": "application/json"}), 400)
    # a state-changing admin request must say it is JSON (a web page cannot
    # send that cross-origin without a preflight)
    assert_error(srv.post("/admin/models/unload", data=b'{"model":"a"}', headers={"Content-Type": "text/plain"}),
                 415, code="unsupported_media_type")
    assert_error(srv.get("/admin/models/load"), 405)


def _long_stream(srv, result):
    result["r"] = stream_request(srv, "/v1/completions",
                                 completion_body(model="a", max_tokens=400, stream=True, ignore_eos=True),
                                 timeout=60)


def test_unload_waits_for_requests_in_flight(make_server, tmp_path):
    srv = make_server(["--model", "a=" + TEST_MODEL, "--preload", "a"] + ARGS)
    srv.wait_loaded("a")
    result = {}
    t = threading.Thread(target=_long_stream, args=(srv, result))
    t.start()
    deadline = time.monotonic() + 10
    while srv.model_health("a")["slots_busy"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    r = srv.post("/admin/models/unload", {"model": "a"})
    if r.json()["status"] == "unloading":  # the stream was still running
        assert r.status_code == 202
        # new requests are refused while it drains
        assert srv.post("/v1/completions", completion_body(model="a", max_tokens=2)).status_code in (200, 503)
    t.join(timeout=60)
    assert result["r"].status == 200 and result["r"].finish_reason() == "length"  # not cut short
    _wait_status(srv, "a", "unloaded")


def test_forced_unload_cancels_requests(make_server):
    srv = make_server(["--model", "a=" + TEST_MODEL, "--preload", "a", "--threads", "1", "--ctx", "4096",
                       "--parallel", "1", "--port", "0"])
    srv.wait_loaded("a")
    result = {}

    def slow():
        result["r"] = stream_request(srv, "/v1/completions",
                                     completion_body(model="a", max_tokens=4000, stream=True, ignore_eos=True),
                                     timeout=60)

    t = threading.Thread(target=slow)
    t.start()
    deadline = time.monotonic() + 10
    while srv.model_health("a")["slots_busy"] == 0 and time.monotonic() < deadline:
        time.sleep(0.005)
    r = srv.post("/admin/models/unload", {"model": "a", "force": True})
    assert r.status_code == 202 and r.json()["status"] == "unloading", r.text
    t.join(timeout=30)
    raw = result["r"].raw.decode("utf-8", "replace")
    assert '"error"' in raw and "unloaded" in raw, raw[-400:]  # the client is told why
    _wait_status(srv, "a", "unloaded")
    # and it loads again on demand
    assert srv.post("/v1/completions", completion_body(model="a", max_tokens=2)).status_code == 200


def test_register_only_inside_models_dir(make_server, tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    outside = tmp_path / "outside.gguf"
    shutil.copy(TEST_MODEL, outside)
    shutil.copy(TEST_MODEL, d / "inside.gguf")
    os.symlink(outside, d / "link.gguf")
    srv = make_server(["--models-dir", str(d)] + ARGS)
    r = srv.post("/admin/models/register", {"model": "mine", "path": str(d / "inside.gguf")})
    assert r.status_code == 201, r.text
    assert srv.post("/v1/completions", completion_body(model="mine", max_tokens=2)).status_code == 200
    assert_error(srv.post("/admin/models/register", {"model": "x1", "path": str(outside)}), 403)
    assert_error(srv.post("/admin/models/register", {"model": "x2", "path": str(d / ".." / "outside.gguf")}), 403)
    assert_error(srv.post("/admin/models/register", {"model": "x3", "path": str(d / "link.gguf")}), 403)
    assert_error(srv.post("/admin/models/register", {"model": "bad id!", "path": str(d / "inside.gguf")}), 400)
    assert_error(srv.post("/admin/models/register", {"model": "mine", "path": str(d / "inside.gguf")}), 400)
    assert_error(srv.post("/admin/models/register", {"model": "x4", "path": str(d / "none.gguf")}), 400)


def test_admin_key(make_server):
    srv = make_server(["--model", "a=" + TEST_MODEL, "--admin-api-key", "adm", "--api-key", "user"] + ARGS)
    assert_error(requests.get(srv.url("/admin/models"), timeout=5), 401)
    assert_error(requests.get(srv.url("/admin/models"), headers={"Authorization": "Bearer user"}, timeout=5), 401)
    r = requests.get(srv.url("/admin/models"), headers={"Authorization": "Bearer adm"}, timeout=5)
    assert r.status_code == 200
    # the admin key is not a user key
    r = requests.post(srv.url("/v1/completions"), json=completion_body(model="a", max_tokens=2),
                      headers={"Authorization": "Bearer adm"}, timeout=30)
    assert r.status_code == 401
