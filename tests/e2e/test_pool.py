"""The model pool: lazy loading, one load per model, memory budget with LRU
eviction, pins, keep_alive, models_dir."""
import os
import shutil
import threading
import time

import pytest

from conftest import assert_error, completion_body, stream_request

SMALL = ["--threads", "1", "--ctx", "256", "--parallel", "1", "--port", "0"]


def _rss(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@pytest.fixture(scope="module")
def three_models(mkmodel):
    return {name: mkmodel("pool-%s.gguf" % name, seed=seed) for name, seed in (("a", 21), ("b", 22), ("c", 23))}


@pytest.fixture(scope="module")
def one_estimate(three_models):
    """The GGUF-header estimate of one of the models, in bytes, as the
    server reports it with the SMALL layout."""
    from conftest import Server
    srv = Server(["--model", "a=" + three_models["a"], "--preload", "a"] + SMALL)
    try:
        return srv.wait_loaded("a")["memory_estimated"]
    finally:
        srv.stop()


def _models_arg(paths):
    out = []
    for name, path in paths.items():
        out += ["--model", "%s=%s" % (name, path)]
    return out


def test_lazy_load_on_first_request(make_server, three_models):
    srv = make_server(_models_arg(three_models) + SMALL)
    h = srv.health()
    assert all(m["status"] == "unloaded" for m in h["models"]), h
    assert h["pool"]["loaded"] == 0 and h["pool"]["memory_used"] == 0
    listed = {m["id"]: m["status"] for m in srv.get("/v1/models").json()["data"]}
    assert listed == {"a": "unloaded", "b": "unloaded", "c": "unloaded"}
    r = srv.post("/v1/completions", completion_body(model="b", max_tokens=3))
    assert r.status_code == 200, r.text
    assert srv.model_health("b")["status"] == "loaded"
    assert srv.model_health("a")["status"] == "unloaded"
    assert srv.health()["pool"]["loads"] == 1


def test_round_robin_three_models_budget_for_two(make_server, three_models, one_estimate):
    budget = int(one_estimate * 2.5)
    srv = make_server(_models_arg(three_models) + SMALL + ["--memory-budget", str(budget)])
    rss_base = _rss(srv.proc.pid)
    for i in range(9):
        name = "abc"[i % 3]
        r = srv.post("/v1/completions", completion_body(model=name, max_tokens=4))
        assert r.status_code == 200, (name, r.text)
        assert r.json()["model"] == name
        pool = srv.health()["pool"]
        assert pool["memory_used"] <= budget, pool
        assert pool["loaded"] <= 2, pool
        # the process stays within the budget plus the runtime's own overhead
        assert _rss(srv.proc.pid) <= rss_base + budget + (64 << 20)
    pool = srv.health()["pool"]
    # LRU would load on every request (9 loads, 7 evictions); a cycle keeps one model resident and
    # every other request finds its model
    assert pool["loads"] <= 7 and 3 <= pool["evictions"] <= 5, pool
    assert pool["load_failures"] == 0


def test_streaming_model_is_never_evicted(make_server, three_models, tmp_path):
    # a model big enough that a long answer takes seconds
    import subprocess
    from conftest import CORRAL_MKMODEL
    big = str(tmp_path / "slow.gguf")
    subprocess.run([CORRAL_MKMODEL, "--out", big, "--dim", "256", "--layers", "6", "--ffn", "768",
                    "--heads", "8", "--seed", "5"], check=True, timeout=120, capture_output=True)
    models = {"slow": big, "b": three_models["b"], "c": three_models["c"]}
    args = ["--threads", "1", "--parallel", "1", "--port", "0", "--ctx", "4096"]
    probe = make_server(_models_arg(models) + args + ["--preload", "slow", "--preload", "b"])
    est_slow = probe.wait_loaded("slow")["memory_estimated"]
    est_b = probe.wait_loaded("b")["memory_estimated"]
    probe.stop()
    budget = est_slow + int(est_b * 1.5)  # slow + one small model
    srv = make_server(_models_arg(models) + args + ["--memory-budget", str(budget), "--preload", "slow"])
    srv.wait_loaded("slow")
    result = {}

    def long_stream():
        result["r"] = stream_request(srv, "/v1/completions",
                                     completion_body(model="slow", max_tokens=3500, stream=True, ignore_eos=True),
                                     timeout=120)

    t = threading.Thread(target=long_stream)
    t.start()
    deadline = time.monotonic() + 10
    while srv.model_health("slow")["slots_busy"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.model_health("slow")["slots_busy"] == 1
    # b and c need room while slow streams: they evict each other, never slow
    for name in ("b", "c", "b", "c"):
        r = srv.post("/v1/completions", completion_body(model=name, max_tokens=2))
        assert r.status_code == 200, r.text
        h = {m["id"]: m for m in srv.health()["models"]}
        assert h["slow"]["status"] == "loaded"
    assert srv.model_health("slow")["slots_busy"] == 1, "the stream ended too soon to prove anything"
    t.join(timeout=120)
    r = result["r"]
    assert r.status == 200
    assert r.finish_reason() == "length"  # all 3500 tokens: never cut off by an eviction
    pool = srv.health()["pool"]
    assert pool["evictions"] >= 3 and pool["memory_used"] <= budget, pool


def test_concurrent_requests_cause_one_load(make_server, three_models):
    srv = make_server(_models_arg(three_models) + ["--threads", "1", "--ctx", "256", "--parallel", "2",
                                                   "--port", "0", "--queue-size", "16"])
    codes = []
    lock = threading.Lock()

    def one():
        r = srv.post("/v1/completions", completion_body(model="c", max_tokens=2), timeout=60)
        with lock:
            codes.append(r.status_code)

    threads = [threading.Thread(target=one) for _ in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=90)
    assert codes == [200] * 10, codes
    assert srv.health()["pool"]["loads"] == 1


def test_keep_alive_zero_unloads_after_the_request(make_server, three_models):
    srv = make_server(_models_arg(three_models) + SMALL)
    r = srv.post("/v1/completions", completion_body(model="a", max_tokens=2, keep_alive=0))
    assert r.status_code == 200, r.text
    deadline = time.monotonic() + 5
    while srv.model_health("a")["status"] != "unloaded" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.model_health("a")["status"] == "unloaded"
    # a model with the default keep_alive stays
    assert srv.post("/v1/completions", completion_body(model="b", max_tokens=2)).status_code == 200
    time.sleep(0.5)
    assert srv.model_health("b")["status"] == "loaded"


def test_server_keep_alive_unloads_idle_models(make_server, three_models):
    srv = make_server(_models_arg(three_models) + SMALL + ["--keep-alive", "1s"])
    assert srv.post("/v1/completions", completion_body(model="a", max_tokens=2)).status_code == 200
    assert srv.model_health("a")["status"] == "loaded"
    deadline = time.monotonic() + 6
    while srv.model_health("a")["status"] == "loaded" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert srv.model_health("a")["status"] == "unloaded"
    # and it comes back on the next request
    assert srv.post("/v1/completions", completion_body(model="a", max_tokens=2)).status_code == 200


def test_model_larger_than_budget(make_server, three_models):
    srv = make_server(_models_arg(three_models) + SMALL + ["--memory-budget", "1M"])
    r = srv.post("/v1/completions", completion_body(model="a", max_tokens=2))
    e = assert_error(r, 503)
    assert "budget" in e["message"] and "MiB" in e["message"], e
    assert srv.model_health("a")["status"] == "failed"


def test_models_dir_registers_and_rescans(make_server, three_models, tmp_path):
    d = tmp_path / "models"
    (d / "sub").mkdir(parents=True)
    shutil.copy(three_models["a"], d / "alpha.gguf")
    shutil.copy(three_models["b"], d / "sub" / "beta.gguf")
    (d / "notes.txt").write_text("not a model")
    srv = make_server(["--models-dir", str(d)] + SMALL)
    ids = sorted(m["id"] for m in srv.get("/v1/models").json()["data"])
    assert ids == ["alpha", "beta"]
    assert srv.post("/v1/completions", completion_body(model="beta", max_tokens=2)).status_code == 200
    # a file added later is found when it is asked for
    time.sleep(1.1)
    shutil.copy(three_models["c"], d / "gamma.gguf")
    r = srv.post("/v1/completions", completion_body(model="gamma", max_tokens=2))
    assert r.status_code == 200, r.text
    assert_error(srv.post("/v1/completions", completion_body(model="delta")), 404)


def test_replaced_file_is_picked_up(make_server, three_models, tmp_path):
    path = tmp_path / "live.gguf"
    shutil.copy(three_models["a"], path)
    srv = make_server(["--model", "live=" + str(path), "--model", "ref=" + three_models["b"]] + SMALL)
    body = completion_body(model="live", max_tokens=8, temperature=0)
    before = srv.post("/v1/completions", body).json()["choices"][0]["text"]
    ref = srv.post("/v1/completions", dict(body, model="ref")).json()["choices"][0]["text"]
    assert before != ref
    # a long stream on the old file keeps going while the file is replaced
    result = {}
    t = threading.Thread(target=lambda: result.update(r=stream_request(
        srv, "/v1/completions", completion_body(model="live", max_tokens=200, stream=True, ignore_eos=True),
        timeout=60)))
    t.start()
    tmp = tmp_path / "live.gguf.new"
    shutil.copy(three_models["b"], tmp)
    os.replace(tmp, path)  # a new inode, as a download or `cp` + `mv` makes
    after = srv.post("/v1/completions", body).json()["choices"][0]["text"]
    assert after == ref  # the new weights answer
    t.join(timeout=60)
    assert result["r"].status == 200 and result["r"].finish_reason() == "length"
    ids = [m["id"] for m in srv.get("/v1/models").json()["data"]]
    assert sorted(ids) == ["live", "ref"]  # no duplicate entry for the old file


def test_busy_model_does_not_starve_a_waiting_one(make_server, three_models):
    """One model fits. A is busy with a steady stream of requests and B
    waits for its room: A's requests keep going first for a while, then A
    drains, B loads and answers, and A's later requests are served after."""
    srv = make_server(_models_arg(three_models) + SMALL + ["--max-models", "1", "--queue-size", "16",
                                                             "--preload", "a"])
    srv.wait_loaded("a")
    stop = time.monotonic() + 6.0
    a_codes = []
    done = {}

    def a_traffic():
        while time.monotonic() < stop:
            r = srv.post("/v1/completions", completion_body(model="a", max_tokens=64, ignore_eos=True), timeout=60)
            a_codes.append(r.status_code)

    def b_request():
        t0 = time.monotonic()
        r = srv.post("/v1/completions", completion_body(model="b", max_tokens=2), timeout=60)
        done["b"] = (r.status_code, time.monotonic() - t0)

    ta = [threading.Thread(target=a_traffic) for _ in range(2)]  # always one A request in flight
    for t in ta:
        t.start()
    time.sleep(0.3)
    tb = threading.Thread(target=b_request)
    tb.start()
    tb.join(timeout=60)
    for t in ta:
        t.join(timeout=60)
    assert done["b"][0] == 200
    assert done["b"][1] < 5.0, "B waited %.1f s behind A's traffic" % done["b"][1]
    assert a_codes and all(c == 200 for c in a_codes), a_codes
    assert srv.health()["pool"]["evictions"] >= 2  # A left for B, and B for A again
