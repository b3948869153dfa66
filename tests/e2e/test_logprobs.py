"""logprobs: chat (`logprobs`, `top_logprobs`) and completions (`logprobs`: N),
whole and streamed. The records are of the distribution sampled from (after
the grammar and penalties, before temperature and truncation); each token's
record comes with its text, and the records' tokens put together are the
output text.
"""
import math

from conftest import assert_error, chat_body, completion_body, server_args, stream_request


def check_entry(e, top):
    assert set(e) >= {"token", "logprob", "bytes", "top_logprobs"}, e
    assert e["logprob"] <= 0 and math.isfinite(e["logprob"]), e
    assert bytes(e["bytes"]).decode("utf-8", "replace") == e["token"] or "\ufffd" in e["token"], e
    assert len(e["top_logprobs"]) == top, e
    lps = [t["logprob"] for t in e["top_logprobs"]]
    assert lps == sorted(lps, reverse=True), lps
    assert sum(math.exp(x) for x in lps) <= 1.0 + 1e-4, lps


def test_chat_greedy_logprobs(make_server):
    srv = make_server(server_args(parallel=1))
    r = srv.post("/v1/chat/completions", chat_body(max_tokens=12, temperature=0, logprobs=True, top_logprobs=3))
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    content = c["logprobs"]["content"]
    assert len(content) == r.json()["usage"]["completion_tokens"] == 12
    raw = b"".join(bytes(e["bytes"]) for e in content)
    assert raw.decode("utf-8") == c["message"]["content"]
    for e in content:
        check_entry(e, 3)
        # greedy picks the most likely token
        assert e["top_logprobs"][0]["token"] == e["token"] and abs(e["top_logprobs"][0]["logprob"] - e["logprob"]) < 1e-5
    # the same request without logprobs gives the same text
    r2 = srv.post("/v1/chat/completions", chat_body(max_tokens=12, temperature=0))
    assert r2.json()["choices"][0]["message"]["content"] == c["message"]["content"]
    assert r2.json()["choices"][0]["logprobs"] is None


def test_chat_streamed_logprobs(make_server):
    srv = make_server(server_args(parallel=1))
    s = stream_request(srv, "/v1/chat/completions",
                       chat_body(max_tokens=10, temperature=0.8, seed=5, logprobs=True, top_logprobs=2, stream=True))
    assert s.status == 200
    entries, text = [], ""
    for ch in s.chunks:
        for choice in ch["choices"]:
            text += choice["delta"].get("content") or ""
            lp = choice.get("logprobs")
            if choice["delta"].get("content"):
                assert lp is not None, ch
            if lp:
                entries += lp["content"]
    assert len(entries) == 10
    assert b"".join(bytes(e["bytes"]) for e in entries).decode("utf-8") == text
    for e in entries:
        check_entry(e, 2)


def test_stop_string_drops_the_records_of_cut_text(make_server):
    srv = make_server(server_args(parallel=1))
    base = srv.post("/v1/chat/completions", chat_body(max_tokens=12, temperature=0)).json()
    text = base["choices"][0]["message"]["content"]
    stop = text[len(text) // 2:len(text) // 2 + 2]
    r = srv.post("/v1/chat/completions", chat_body(max_tokens=12, temperature=0, stop=[stop], logprobs=True))
    c = r.json()["choices"][0]
    raw = b"".join(bytes(e["bytes"]) for e in c["logprobs"]["content"])
    assert c["message"]["content"].encode().startswith(raw), (c["message"]["content"], raw)
    assert len(raw) >= len(c["message"]["content"].encode()) - 64


def test_completions_logprobs(make_server):
    srv = make_server(server_args(parallel=1))
    r = srv.post("/v1/completions", completion_body(max_tokens=8, temperature=0, logprobs=4))
    assert r.status_code == 200, r.text
    c = r.json()["choices"][0]
    lp = c["logprobs"]
    assert len(lp["tokens"]) == len(lp["token_logprobs"]) == len(lp["top_logprobs"]) == len(lp["text_offset"]) == 8
    assert "".join(lp["tokens"]) == c["text"] or "\ufffd" in "".join(lp["tokens"])
    assert lp["text_offset"] == sorted(lp["text_offset"]) and lp["text_offset"][0] == 0
    for tok, l, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        assert l <= 0 and 1 <= len(top) <= 4, (tok, l, top)
        assert abs(max(top.values()) - l) < 1e-5  # greedy: the most likely one
    s = stream_request(srv, "/v1/completions", completion_body(max_tokens=8, temperature=0, logprobs=1, stream=True))
    toks = [t for ch in s.chunks for choice in ch["choices"] if choice.get("logprobs")
            for t in choice["logprobs"]["tokens"]]
    assert toks == lp["tokens"]


def test_logprobs_errors(make_server):
    srv = make_server(server_args(parallel=1))
    assert_error(srv.post("/v1/chat/completions", chat_body(logprobs=True, top_logprobs=21)), 400,
                 "invalid_request_error", param="top_logprobs")
    assert_error(srv.post("/v1/chat/completions", chat_body(top_logprobs=2)), 400, "invalid_request_error",
                 param="top_logprobs")
    assert_error(srv.post("/v1/chat/completions", chat_body(logprobs="yes")), 400, "invalid_request_error",
                 param="logprobs")
    assert_error(srv.post("/v1/completions", completion_body(logprobs=-1)), 400, "invalid_request_error",
                 param="logprobs")
