"""Every endpoint and the shape of its responses."""
import base64
import os
import math
import re
import socket
import struct
import time

import requests

from conftest import MODEL, TEST_MODEL, chat_body, completion_body, raw_request, read_until


def check_usage(u, completion=True):
    assert set(u) >= {"prompt_tokens", "total_tokens"}
    assert isinstance(u["prompt_tokens"], int) and u["prompt_tokens"] > 0
    if completion:
        assert isinstance(u["completion_tokens"], int) and u["completion_tokens"] >= 0
        assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"]
        cached = u["prompt_tokens_details"]["cached_tokens"]
        assert isinstance(cached, int) and 0 <= cached <= u["prompt_tokens"]


def test_health(server):
    server.wait_loaded()  # preloaded in the background at start
    r = requests.get(server.url("/health"), timeout=5)
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("application/json")
    h = r.json()
    assert h["status"] == "ok"
    assert len(h["models"]) == 1
    m = h["models"][0]
    assert m["id"] == MODEL
    assert m["status"] == "loaded"
    assert m["slots_total"] == 4
    for k in ("slots_busy", "queued", "in_flight"):
        assert isinstance(m[k], int) and m[k] >= 0, (k, m)
    # the GGUF-header estimate covers at least the weights (the file) and
    # the KV cache for 4 slots x 512 tokens; it is a bound, not a guess
    size = os.path.getsize(TEST_MODEL)
    assert m["memory_estimated"] >= size, m
    assert m["memory_estimated"] < size + (256 << 20), m
    assert m["memory_measured"] > 0, m


def test_models_list(server):
    r = server.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    assert len(body["data"]) == 1
    m = body["data"][0]
    assert m["id"] == MODEL
    assert m["object"] == "model"
    assert m["owned_by"] == "corral"
    assert m["status"] == "loaded"
    assert isinstance(m["created"], int) and abs(m["created"] - time.time()) < 24 * 3600


def test_model_by_id(server):
    r = server.get("/v1/models/" + MODEL)
    assert r.status_code == 200
    m = r.json()
    assert m["id"] == MODEL and m["object"] == "model" and m["owned_by"] == "corral"
    # the list's entry, and corral's meta from the GGUF header
    meta = m.pop("meta")
    assert m == server.get("/v1/models").json()["data"][0]
    assert meta["architecture"] == "llama" and meta["quantization"] == "F16" and meta["memory_estimate"] > 0, meta


def test_model_by_id_unknown(server):
    from conftest import assert_error
    r = server.get("/v1/models/nope")
    assert_error(r, 404, "invalid_request_error", code="model_not_found", in_message=("nope",))


def test_head_and_options(server):
    r = requests.head(server.url("/health"), timeout=5)
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["Content-Type"].startswith("application/json")
    r = requests.head(server.url("/v1/models"), timeout=5)
    assert r.status_code == 200
    # HEAD of a POST-only endpoint is not allowed
    r = requests.head(server.url("/v1/chat/completions"), timeout=5)
    assert r.status_code == 405
    assert r.headers.get("Allow") == "POST"
    # OPTIONS without an Origin names the method; a preflight from a web
    # origin nobody listed is refused (test_browser.py has the rest)
    r = requests.options(server.url("/v1/chat/completions"), timeout=5)
    assert r.status_code == 204 and r.headers.get("Allow") == "POST"
    assert "Access-Control-Allow-Origin" not in r.headers
    r = requests.options(server.url("/v1/chat/completions"), timeout=5,
                         headers={"Origin": "http://x", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 403
    assert "Access-Control-Allow-Origin" not in r.headers


def test_head_has_no_body_on_raw_socket(server):
    # Keep-alive framing: after a HEAD the next response on the same
    # connection must start right away (no stray body bytes).
    s = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    try:
        req = raw_request(server.port, "HEAD", "/health", headers={"Connection": "keep-alive"})
        req += raw_request(server.port, "GET", "/health")
        s.sendall(req)
        data = read_until(s, lambda b: b.count(b"HTTP/1.1 ") >= 2 and b.endswith(b"}"))
    finally:
        s.close()
    first, rest = data.split(b"\r\n\r\n", 1)
    assert first.startswith(b"HTTP/1.1 200")
    assert rest.startswith(b"HTTP/1.1 200"), rest[:100]


def test_chat_completion_shape(server):
    t0 = int(time.time())
    r = server.post("/v1/chat/completions", chat_body(max_tokens=16))
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    b = r.json()
    assert re.fullmatch(r"chatcmpl-[A-Za-z0-9]{8,}", b["id"]), b["id"]
    assert b["object"] == "chat.completion"
    assert abs(b["created"] - t0) <= 5
    assert b["model"] == MODEL
    assert len(b["choices"]) == 1
    c = b["choices"][0]
    assert c["index"] == 0
    assert c["message"]["role"] == "assistant"
    assert isinstance(c["message"]["content"], str) and c["message"]["content"]
    assert c["finish_reason"] in ("stop", "length")
    check_usage(b["usage"])
    assert b["usage"]["completion_tokens"] <= 16
    if c["finish_reason"] == "length":
        assert b["usage"]["completion_tokens"] == 16
    # ids are unique
    r2 = server.post("/v1/chat/completions", chat_body(max_tokens=2))
    assert r2.json()["id"] != b["id"]


def test_chat_prompt_tokens_grow_with_prompt(server):
    a = server.post("/v1/chat/completions", chat_body("hi", max_tokens=1)).json()
    b = server.post("/v1/chat/completions", chat_body("hi " * 40, max_tokens=1)).json()
    assert b["usage"]["prompt_tokens"] >= a["usage"]["prompt_tokens"] + 30


def test_completion_shape(server):
    t0 = int(time.time())
    r = server.post("/v1/completions", completion_body(max_tokens=16))
    assert r.status_code == 200, r.text
    b = r.json()
    assert re.fullmatch(r"cmpl-[A-Za-z0-9]{8,}", b["id"]), b["id"]
    assert b["object"] == "text_completion"
    assert abs(b["created"] - t0) <= 5
    assert b["model"] == MODEL
    assert len(b["choices"]) == 1
    c = b["choices"][0]
    assert c["index"] == 0
    assert isinstance(c["text"], str) and c["text"]
    assert "logprobs" in c
    assert c["finish_reason"] in ("stop", "length")
    check_usage(b["usage"])


def test_completion_prompt_forms_agree(server):
    """prompt as a string, as [string] and as token ids."""
    s = server.post("/v1/completions", completion_body("The cat sat", max_tokens=10)).json()
    l = server.post("/v1/completions", completion_body(["The cat sat"], max_tokens=10)).json()
    assert s["choices"][0]["text"] == l["choices"][0]["text"]
    assert s["usage"]["prompt_tokens"] == l["usage"]["prompt_tokens"]
    toks = [1, 450, 6635, 3290, 29871, 100, 200]
    t = server.post("/v1/completions", completion_body(toks, max_tokens=5))
    assert t.status_code == 200, t.text
    assert t.json()["usage"]["prompt_tokens"] == len(toks)
    tt = server.post("/v1/completions", completion_body([toks], max_tokens=5)).json()
    assert tt["choices"][0]["text"] == t.json()["choices"][0]["text"]


def test_short_routes_alias(server):
    r = server.post("/chat/completions", chat_body(max_tokens=2))
    assert r.status_code == 200 and r.json()["object"] == "chat.completion"
    r = server.get("/models")
    assert r.status_code == 200 and r.json()["object"] == "list"


def test_cached_tokens_on_repeat(server):
    body = completion_body("A long shared prefix that should be cached " * 4, max_tokens=4)
    a = server.post("/v1/completions", body).json()
    b = server.post("/v1/completions", body).json()
    assert a["choices"][0]["text"] == b["choices"][0]["text"]
    p = b["usage"]["prompt_tokens"]
    assert p == a["usage"]["prompt_tokens"]
    assert b["usage"]["prompt_tokens_details"]["cached_tokens"] >= p - 1, b["usage"]


def test_cached_tokens_chat_multi_turn(server):
    msgs = [{"role": "system", "content": "You are a terse assistant. " * 5},
            {"role": "user", "content": "first question"}]
    a = server.post("/v1/chat/completions", {"model": MODEL, "messages": msgs, "temperature": 0,
                                             "max_tokens": 4}).json()
    msgs2 = msgs + [{"role": "assistant", "content": a["choices"][0]["message"]["content"]},
                    {"role": "user", "content": "second"}]
    b = server.post("/v1/chat/completions", {"model": MODEL, "messages": msgs2, "temperature": 0,
                                             "max_tokens": 4}).json()
    # the system prompt and first turn are a shared prefix
    assert b["usage"]["prompt_tokens_details"]["cached_tokens"] >= 30, b["usage"]
    assert b["usage"]["prompt_tokens"] > a["usage"]["prompt_tokens"]


def _decode_b64(s):
    raw = base64.b64decode(s)
    assert len(raw) % 4 == 0
    return list(struct.unpack("<%df" % (len(raw) // 4), raw))


def test_embeddings(server):
    r = server.post("/v1/embeddings", {"model": MODEL, "input": "hello world"})
    assert r.status_code == 200, r.text
    b = r.json()
    assert b["object"] == "list"
    assert b["model"] == MODEL
    assert len(b["data"]) == 1
    d = b["data"][0]
    assert d["object"] == "embedding" and d["index"] == 0
    v = d["embedding"]
    assert len(v) == 64  # the model's dim
    assert all(isinstance(x, float) or isinstance(x, int) for x in v)
    assert abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-4
    assert b["usage"]["prompt_tokens"] > 0
    assert b["usage"]["total_tokens"] == b["usage"]["prompt_tokens"]


def test_embeddings_batch_and_base64(server):
    inputs = ["hello world", "a completely different sentence", "hello world"]
    f = server.post("/v1/embeddings", {"model": MODEL, "input": inputs}).json()
    assert [d["index"] for d in f["data"]] == [0, 1, 2]
    v0, v1, v2 = (d["embedding"] for d in f["data"])
    assert max(abs(a - b) for a, b in zip(v0, v2)) < 1e-5  # same text, same vector
    assert max(abs(a - b) for a, b in zip(v0, v1)) > 1e-3  # different text
    for v in (v0, v1):
        assert abs(math.sqrt(sum(x * x for x in v)) - 1.0) < 1e-4
    single = server.post("/v1/embeddings", {"model": MODEL, "input": "hello world"}).json()
    assert single["usage"]["prompt_tokens"] * 2 < f["usage"]["prompt_tokens"]

    b = server.post("/v1/embeddings", {"model": MODEL, "input": inputs,
                                       "encoding_format": "base64"}).json()
    for i, d in enumerate(b["data"]):
        assert isinstance(d["embedding"], str)
        dec = _decode_b64(d["embedding"])
        assert len(dec) == 64
        ref = f["data"][i]["embedding"]
        assert max(abs(a - c) for a, c in zip(dec, ref)) < 1e-6
