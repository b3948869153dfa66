"""Prefix reuse across slots: a prompt that shares a long prefix with what
another slot holds (even one still generating) copies that slot's KV
instead of computing it, and the answer is the same as computed fresh."""
import threading
import time

from conftest import completion_body, server_args

COMP = "/v1/completions"
SYSTEM = "You are a helpful assistant. Answer briefly and well. " * 30


def test_busy_slot_prefix_is_copied_not_recomputed(make_server):
    srv = make_server(server_args(parallel=2, ctx=4096))
    fresh = make_server(server_args(parallel=2, ctx=4096))
    srv.wait_loaded()
    fresh.wait_loaded()
    hold = {}
    t = threading.Thread(target=lambda: hold.update(r=srv.post(
        COMP, completion_body(SYSTEM + "First question?", max_tokens=1500, ignore_eos=True), timeout=90)))
    t.start()
    # the first request runs (busy) in one slot
    srv.wait_for(lambda m: m["slots_busy"] == 1, timeout=10, what="first request running")
    time.sleep(0.2)
    body = completion_body(SYSTEM + "A different second question?", max_tokens=24)
    r = srv.post(COMP, body)
    assert r.status_code == 200, r.text
    assert t.is_alive(), "the first request should still be generating"
    u = r.json()["usage"]
    shared = u["prompt_tokens"] - 12  # the question differs: the shared part is most of the prompt
    assert u["prompt_tokens_details"]["cached_tokens"] >= shared, u
    ref = fresh.post(COMP, body)
    assert ref.status_code == 200
    assert ref.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    assert r.json()["choices"][0]["text"] == ref.json()["choices"][0]["text"]
    t.join(90)
    assert hold["r"].status_code == 200


def test_short_shared_prefix_is_not_copied(make_server):
    """Below the threshold (64 tokens) a copy of a whole KV stream is not
    worth it: the prompt is computed in its own slot."""
    srv = make_server(server_args(parallel=2, ctx=4096))
    srv.wait_loaded()
    hold = {}
    t = threading.Thread(target=lambda: hold.update(r=srv.post(
        COMP, completion_body("Short shared start. First?", max_tokens=800, ignore_eos=True), timeout=90)))
    t.start()
    srv.wait_for(lambda m: m["slots_busy"] == 1, timeout=10, what="first request running")
    r = srv.post(COMP, completion_body("Short shared start. Second?", max_tokens=4))
    assert r.status_code == 200
    assert r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] == 0
    t.join(90)


def test_simultaneous_requests_compute_a_shared_prefix_once(make_server):
    """Four requests with one long system prompt arrive together: one
    computes the prefix, the other three copy it once it is there, and
    every answer is the one a fresh server gives."""
    srv = make_server(server_args(parallel=4, ctx=4096))
    fresh = make_server(server_args(parallel=1, ctx=4096))
    srv.wait_loaded()
    fresh.wait_loaded()
    bodies = [completion_body(SYSTEM + "Question number %d, please?" % i, max_tokens=16) for i in range(4)]
    out = [None] * 4

    def one(i):
        out[i] = srv.post(COMP, bodies[i], timeout=60)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None and r.status_code == 200 for r in out), out
    cached = sorted(r.json()["usage"]["prompt_tokens_details"]["cached_tokens"] for r in out)
    prompt = out[0].json()["usage"]["prompt_tokens"]
    # the first computes it; each of the others reuses (nearly) all of it
    assert cached[0] == 0, cached
    assert all(c >= prompt - 12 for c in cached[1:]), (cached, prompt)
    for i in range(4):
        ref = fresh.post(COMP, bodies[i])
        assert out[i].json()["choices"][0]["text"] == ref.json()["choices"][0]["text"], i
