"""The pool's edge cases on the real engine: a forced unload followed by a
load, a keep_alive too large to add, /health while a forced unload stops a
busy engine, and requests waiting for a load bounded like a queue."""
import threading
import time

from conftest import TEST_MODEL, assert_error, completion_body, open_stream_socket, read_until

ARGS = ["--threads", "1", "--parallel", "1", "--port", "0"]


def _wait(pred, timeout, what):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.01)
    raise AssertionError("%s not reached within %s s" % (what, timeout))


def test_forced_unload_then_load_serves_again(make_server):
    srv = make_server(["--model", "a=" + TEST_MODEL, "--preload", "a", "--ctx", "4096"] + ARGS)
    srv.wait_loaded("a")
    s = open_stream_socket(srv, "/v1/completions", completion_body(model="a", max_tokens=4000, ignore_eos=True))
    try:
        read_until(s, lambda b: b.count(b"data: ") >= 2)
        r = srv.post("/admin/models/unload", {"model": "a", "force": True})
        assert r.status_code == 202, r.text
        # a load right after, before the cancelled stream has let go
        r = srv.post("/admin/models/load", {"model": "a"})
        assert r.status_code in (200, 202), r.text
        # requests are served again (they wait for the reload), not 503
        r = srv.post("/v1/completions", completion_body(model="a", max_tokens=3), timeout=30)
        assert r.status_code == 200, r.text
    finally:
        s.close()
    assert srv.model_health("a")["status"] == "loaded"


def test_keep_alive_too_large_to_add_keeps_the_model(make_server):
    srv = make_server(["--model", "a=" + TEST_MODEL, "--ctx", "256", "--keep-alive", "0"] + ARGS)
    # the largest keep_alive a request may carry: last use + it overflowed,
    # and the model was unloaded at once
    r = srv.post("/v1/completions", completion_body(model="a", max_tokens=2, keep_alive=9223372036854775))
    assert r.status_code == 200, r.text
    time.sleep(1.5)
    assert srv.model_health("a")["status"] == "loaded"
    r = srv.post("/v1/completions", completion_body(model="a", max_tokens=2, keep_alive=0))
    assert r.status_code == 200
    _wait(lambda: srv.model_health("a")["status"] == "unloaded", 5, "unloaded after keep_alive 0")


def test_health_answers_while_a_forced_unload_stops_a_busy_engine(make_server):
    srv = make_server(["--model", "a=" + TEST_MODEL, "--preload", "a", "--ctx", "512"] + ARGS)
    srv.wait_loaded("a")
    words = " ".join("word%d" % i for i in range(120))
    body = {"model": "a", "input": [words] * 2048}
    res = {}
    t = threading.Thread(target=lambda: res.update(r=srv.post("/v1/embeddings", body, timeout=120)))
    t.start()
    _wait(lambda: srv.model_health("a")["slots_busy"] > 0, 20, "the embedding batch running")
    time.sleep(0.3)
    t0 = time.monotonic()
    r = srv.post("/admin/models/unload", {"model": "a", "force": True}, timeout=30)
    unload_s = time.monotonic() - t0
    assert r.status_code in (200, 202), r.text
    worst = 0.0
    for _ in range(5):
        t1 = time.monotonic()
        assert srv.get("/health", timeout=30).status_code == 200
        worst = max(worst, time.monotonic() - t1)
    # the unload and /health never wait for the engine's work
    assert unload_s < 1.0 and worst < 1.0, (unload_s, worst)
    t.join(120)
    assert_error(res["r"], 503)
    _wait(lambda: srv.model_health("a")["status"] == "unloaded", 10, "unloaded")


def test_requests_waiting_for_a_load_are_bounded(make_server, mkmodel):
    # one slot, queue_size 1: two requests may wait for the load; the load
    # is slow because another model holds the only room and streams
    big = mkmodel("edge-big.gguf", seed=5, ctx=8192)
    other = mkmodel("edge-other.gguf", seed=6)
    srv = make_server(["--model", "busy=" + big, "--model", "b=" + other, "--preload", "busy", "--ctx", "8192",
                       "--queue-size", "1", "--max-models", "1", "--load-timeout", "60"] + ARGS)
    srv.wait_loaded("busy")
    s = open_stream_socket(srv, "/v1/completions", completion_body(model="busy", max_tokens=8000, ignore_eos=True))
    try:
        read_until(s, lambda b: b.count(b"data: ") >= 2)
        results = []
        threads = [threading.Thread(target=lambda: results.append(srv.post(
            "/v1/completions", completion_body(model="b", max_tokens=2), timeout=60))) for _ in range(2)]
        for th in threads:
            th.start()
        _wait(lambda: srv.model_health("b")["in_flight"] == 2, 10, "two requests waiting for b")
        r = srv.post("/v1/completions", completion_body(model="b", max_tokens=2), timeout=10)
        assert_error(r, 503, code="server_overloaded", in_message=("waiting for model 'b' to load",))
    finally:
        s.close()
    for th in threads:
        th.join(60)
    assert [r.status_code for r in results] == [200, 200], [r.text for r in results]
