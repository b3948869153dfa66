"""n > 1: several choices of one request. Each choice is a generation of
its own (its own admission permit and seed; its prompt shared through the
engine's prefix reuse); more choices than free slots run in turn. Usage
counts the prompt once and every choice's completion.
"""

from conftest import assert_error, chat_body, completion_body, open_stream_socket, server_args, stream_request


def test_three_choices_and_their_usage(make_server):
    srv = make_server(server_args(parallel=4, capacity=4))
    r = srv.post("/v1/chat/completions", chat_body(max_tokens=5, n=3, seed=7, temperature=1.0))
    assert r.status_code == 200, r.text
    d = r.json()
    assert [c["index"] for c in d["choices"]] == [0, 1, 2]
    assert all(c["finish_reason"] == "length" and c["message"]["role"] == "assistant" for c in d["choices"])
    assert d["usage"]["completion_tokens"] == 15
    one = srv.post("/v1/chat/completions", chat_body(max_tokens=5, seed=7, temperature=1.0)).json()
    assert d["usage"]["prompt_tokens"] == one["usage"]["prompt_tokens"]  # the prompt counts once
    assert d["usage"]["total_tokens"] == d["usage"]["prompt_tokens"] + 15
    # choice 0 is the request's own seed; the others differ from it and repeat with it
    assert d["choices"][0]["message"]["content"] == one["choices"][0]["message"]["content"]
    texts = [c["message"]["content"] for c in d["choices"]]
    assert len(set(texts)) > 1, texts
    again = srv.post("/v1/chat/completions", chat_body(max_tokens=5, n=3, seed=7, temperature=1.0)).json()
    assert [c["message"]["content"] for c in again["choices"]] == texts


def test_more_choices_than_slots_run_in_turn(make_server):
    srv = make_server(server_args(parallel=1, capacity=1, queue=8))
    r = srv.post("/v1/completions", completion_body(max_tokens=4, n=4))
    assert r.status_code == 200, r.text
    assert len(r.json()["choices"]) == 4 and r.json()["usage"]["completion_tokens"] == 16
    s = stream_request(srv, "/v1/chat/completions", chat_body(max_tokens=3, n=3, stream=True,
                                                              stream_options={"include_usage": True}))
    assert s.status == 200 and s.done
    by = {}
    for ch in s.chunks[:-1]:
        for c in ch["choices"]:
            by.setdefault(c["index"], []).append(c)
    assert sorted(by) == [0, 1, 2]
    for i, cs in by.items():
        assert cs[0]["delta"].get("role") == "assistant", cs[0]
        assert [c["finish_reason"] for c in cs if c["finish_reason"]] == ["length"], cs
    assert s.chunks[-1]["choices"] == [] and s.chunks[-1]["usage"]["completion_tokens"] == 9
    cap = srv.get("/capacity").json()
    assert cap["in_use"] == 0, cap


def test_choices_with_logprobs(make_server):
    srv = make_server(server_args(parallel=2, capacity=2))
    d = srv.post("/v1/chat/completions", chat_body(max_tokens=4, n=2, logprobs=True, top_logprobs=1)).json()
    for c in d["choices"]:
        assert len(c["logprobs"]["content"]) == 4
        assert "".join(e["token"] for e in c["logprobs"]["content"]) == c["message"]["content"]


def test_a_client_leaving_frees_every_choice(make_server):
    srv = make_server(server_args(parallel=2, capacity=2))
    sock = open_stream_socket(srv, "/v1/chat/completions",
                              chat_body(max_tokens=100000, ignore_eos=True, n=2, stream=True))
    sock.recv(4096)
    sock.close()
    srv.wait_idle(timeout=10)
    assert srv.post("/v1/chat/completions", chat_body(max_tokens=2, n=2)).status_code == 200


def test_n_bounds(make_server):
    srv = make_server(server_args(parallel=1))
    assert_error(srv.post("/v1/chat/completions", chat_body(n=17)), 400, "invalid_request_error", param="n")
    assert_error(srv.post("/v1/chat/completions", chat_body(n=0)), 400, "invalid_request_error", param="n")
