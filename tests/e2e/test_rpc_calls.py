"""JSON-RPC calls that infer, over WebSocket: streams (chunks, then the
response), cancel by `cancel` and by closing the socket (the slot is free at
once), overload and queue bounds answered with -32000 and retry_after_ms,
the per-connection in-flight bound, the drain, and 200 streams over 20
connections against a capacity of 2.

Long generations run on a model with a 32k context so that one call cannot
end on its own while a test looks at it; every test cancels or closes what
it started, and those servers get a short --shutdown-timeout.
"""
import asyncio
import json
import signal
import time

import pytest

from conftest import chat_body, completion_body, server_args, stream_request
from rpc_client import (LONG, RpcConn, check_overloaded, check_stream, in_thread, long_args, ok, openai_data,
                        rpc_error, run_async, small_args, strip, transport_count)


@pytest.fixture(scope="module")
def long_model(mkmodel):
    return mkmodel("rpc-long.gguf", seed=5, ctx=32768)


def test_stream_chunks_then_result_matches_non_stream(make_server):
    srv = make_server(small_args(parallel=2))
    body = chat_body("Write a long poem", max_tokens=12, seed=3)
    cbody = completion_body("In the beginning", max_tokens=12, seed=3)

    async def go():
        conn = await RpcConn.open(srv)
        plain = ok(await conn.call("chat.completions", body))
        content = plain["choices"][0]["message"]["content"]
        assert content

        sid = "stream-1"
        r = await conn.call("chat.completions", dict(body, stream=True, stream_options={"include_usage": True}),
                            id=sid)
        chunks = conn.chunks_of(sid)
        text = check_stream(chunks, r, chat=True, include_usage=True)
        assert text == content
        assert r["result"]["finish_reason"] == plain["choices"][0]["finish_reason"]
        for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
            assert r["result"]["usage"][k] == plain["usage"][k], (r, plain)
        # the chunks are exactly what the SSE stream carries
        sse = await in_thread(stream_request, srv, "/v1/chat/completions",
                              dict(body, stream_options={"include_usage": True}))
        assert sse.status == 200 and sse.done

        def norm(cs):
            """Strip id/created and cached-token counts, and join runs of
            plain content chunks (how many tokens one chunk carries depends
            on how fast the transport drains the engine)."""
            out = []
            for c in cs:
                c = strip(c)
                if c.get("usage"):
                    c["usage"] = {k: c["usage"][k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
                ch = c["choices"]
                plain = (len(ch) == 1 and set(ch[0]["delta"]) == {"content"} and ch[0]["finish_reason"] is None)
                if plain and out and out[-1][0]:
                    out[-1][1]["choices"][0]["delta"]["content"] += ch[0]["delta"]["content"]
                    continue
                out.append((plain, json.loads(json.dumps(c))))
            return [c for _, c in out]

        assert norm(chunks) == norm(sse.chunks)

        # without include_usage: no usage chunk
        r = await conn.call("chat.completions", dict(body, stream=True), id="stream-2")
        assert check_stream(conn.chunks_of("stream-2"), r, chat=True) == content

        # legacy completions
        plain = ok(await conn.call("completions", cbody))
        r = await conn.call("completions", dict(cbody, stream=True, stream_options={"include_usage": True}),
                            id="stream-3")
        assert check_stream(conn.chunks_of("stream-3"), r, chat=False, include_usage=True) == \
            plain["choices"][0]["text"]

        # two streams at once on one connection, each with its own chunks
        fa = await conn.start("chat.completions", dict(body, stream=True), id="A")
        fb = await conn.start("completions", dict(cbody, stream=True), id="B")
        ra, rb = await asyncio.wait_for(asyncio.gather(fa, fb), 30)
        assert check_stream(conn.chunks_of("A"), ra, chat=True) == content
        assert check_stream(conn.chunks_of("B"), rb, chat=False) == plain["choices"][0]["text"]
        assert not conn.late_chunks and not conn.duplicates and conn.others.empty()
        await conn.close()

    run_async(go())


def test_cancel_method_frees_the_slot_at_once(make_server, long_model):
    srv = make_server(long_args(long_model))

    async def go():
        conn = await RpcConn.open(srv)
        r = await conn.call("cancel", {"id": "nothing"}, id="c0")
        assert ok(r, id="c0") == {"id": "nothing", "cancelled": False}
        rpc_error(await conn.call("cancel", {}), -32602)

        # a stream
        fut = await conn.start("completions", completion_body(stream=True, **LONG), id="long")
        await conn.wait_chunks("long", 3)
        assert not fut.done()
        r = await conn.call("cancel", {"id": "long"}, id="c1", timeout=5)
        assert r == {"jsonrpc": "2.0", "id": "c1", "result": {"id": "long", "cancelled": True}}
        resp = await asyncio.wait_for(fut, 5)
        e = rpc_error(resp, None, id="long")
        n = len(conn.chunks_of("long"))
        t0 = time.monotonic()
        r = await conn.call("completions", completion_body(max_tokens=8), timeout=10)
        took = time.monotonic() - t0
        assert ok(r)["usage"]["completion_tokens"] == 8
        assert took < 5, "the next call took %.1f s: the cancelled call kept its slot" % took
        await in_thread(srv.wait_idle, timeout=3)
        assert len(conn.chunks_of("long")) == n and not conn.late_chunks

        # a non-streaming call
        fut = await conn.start("chat.completions", chat_body(**LONG), id=42)
        await in_thread(srv.wait_for, lambda m: m["slots_busy"] == 1, 5, "call running")
        r = await conn.call("cancel", {"id": 42}, timeout=5)
        assert ok(r) == {"id": 42, "cancelled": True}
        rpc_error(await asyncio.wait_for(fut, 5), None, id=42)
        t0 = time.monotonic()
        ok(await conn.call("chat.completions", chat_body(max_tokens=4), timeout=10))
        assert time.monotonic() - t0 < 5
        await in_thread(srv.wait_idle, timeout=3)
        assert not conn.duplicates
        await conn.close()
        return e

    e = run_async(go())
    # the spec's code for a cancelled call
    assert e["code"] == -32008, e


@pytest.mark.parametrize("how", ["close", "abort"])
def test_closing_the_socket_cancels_its_calls(make_server, long_model, how):
    srv = make_server(long_args(long_model))

    async def go():
        conn = await RpcConn.open(srv)
        await conn.start("completions", completion_body(stream=True, **LONG), id="s1")
        await conn.start("chat.completions", chat_body(**LONG), id="q1")  # waits in the queue
        await conn.wait_chunks("s1", 3)
        await in_thread(srv.wait_for, lambda m: m["queued"] == 1, 5, "second call queued")
        if how == "close":
            await conn.ws.close()
        else:
            conn.ws.transport.abort()
        t0 = time.monotonic()
        r = await in_thread(srv.post, "/v1/completions", completion_body(max_tokens=8), timeout=10)
        took = time.monotonic() - t0
        assert r.status_code == 200, r.text
        assert took < 5, "the next request took %.1f s after the socket closed" % took
        m = await in_thread(srv.wait_idle, timeout=3)
        assert m["slots_busy"] == 0

        # and over another WebSocket
        conn2 = await RpcConn.open(srv)
        t0 = time.monotonic()
        ok(await conn2.call("chat.completions", chat_body(max_tokens=4), timeout=10))
        assert time.monotonic() - t0 < 5
        await conn2.close()

    run_async(go())
    assert srv.alive()


def test_overload_answers_at_once_with_retry_after(make_server, long_model):
    srv = make_server(long_args(long_model, queue=1))

    async def go():
        conn = await RpcConn.open(srv)
        a = await conn.start("completions", completion_body(stream=True, **LONG), id="a")
        await conn.wait_chunks("a", 2)
        b = await conn.start("completions", completion_body(stream=True, **LONG), id="b")
        await in_thread(srv.wait_for, lambda m: m["queued"] == 1, 5, "b queued")
        t0 = time.monotonic()
        c = await conn.start("completions", completion_body(stream=True, **LONG), id="c")
        d = await conn.start("chat.completions", chat_body(**LONG), id="d")
        rc, rd = await asyncio.wait_for(asyncio.gather(c, d), 5)
        assert time.monotonic() - t0 < 3
        check_overloaded(rc, id="c")
        check_overloaded(rd, id="d")
        assert conn.chunks_of("c") == [] and conn.chunks_of("d") == []
        assert not a.done() and not b.done()

        # a queued call can be cancelled too; then the queue has room
        assert ok(await conn.call("cancel", {"id": "b"})) == {"id": "b", "cancelled": True}
        rpc_error(await asyncio.wait_for(b, 5), None, id="b")
        assert conn.chunks_of("b") == []
        # max_wait_ms bounds the queue wait: -32000 once it has passed
        t0 = time.monotonic()
        r = await conn.call("completions", completion_body(max_tokens=4, max_wait_ms=300), id="e", timeout=10)
        took = time.monotonic() - t0
        check_overloaded(r, id="e")
        assert 0.25 <= took < 5, took
        assert not a.done()

        assert ok(await conn.call("cancel", {"id": "a"})) == {"id": "a", "cancelled": True}
        rpc_error(await asyncio.wait_for(a, 5), None, id="a")
        ok(await conn.call("completions", completion_body(max_tokens=4), timeout=10))
        assert not conn.duplicates and not conn.late_chunks
        await conn.close()

    run_async(go())
    srv.wait_idle()


def test_too_many_calls_in_flight_on_one_connection(make_server, long_model):
    srv = make_server(long_args(long_model, queue=4, extra=["--rpc-max-inflight", "2"]))

    async def go():
        conn = await RpcConn.open(srv)
        a = await conn.start("completions", completion_body(stream=True, **LONG), id="a")
        await conn.wait_chunks("a", 1)
        b = await conn.start("completions", completion_body(stream=True, **LONG), id="b")
        r = await conn.call("chat.completions", chat_body(max_tokens=2), id="c", timeout=5)
        e = check_overloaded(r, id="c", code="too_many_inflight")
        assert e["data"]["retry_after_ms"] == 1000
        # methods that are not generations still answer
        assert ok(await conn.call("health"))["status"] == "ok"
        assert ok(await conn.call("models.list"))["data"]
        # the bound is per connection: another one may still queue a call
        conn2 = await RpcConn.open(srv)
        x = await conn2.start("completions", completion_body(max_tokens=4), id="x")
        await in_thread(srv.wait_for, lambda m: m["queued"] == 2, 5, "b and x queued")
        assert not x.done()
        # once a call ends, the connection takes a new one: a ends, b runs, x and c2 wait
        assert ok(await conn.call("cancel", {"id": "a"})) == {"id": "a", "cancelled": True}
        rpc_error(await asyncio.wait_for(a, 5), None, id="a")
        await conn.wait_chunks("b", 1)
        c2 = await conn.start("completions", completion_body(max_tokens=4), id="c2")
        await in_thread(srv.wait_for, lambda m: m["queued"] == 2, 5, "x and c2 queued")
        assert not x.done() and not c2.done()
        await conn.call("cancel", {"id": "b"})
        rpc_error(await asyncio.wait_for(b, 5), None, id="b")
        assert ok(await asyncio.wait_for(x, 10), id="x")["usage"]["completion_tokens"] == 4
        assert ok(await asyncio.wait_for(c2, 10), id="c2")["usage"]["completion_tokens"] == 4
        assert not conn.duplicates
        await conn.close()
        await conn2.close()

    run_async(go())
    srv.wait_idle()


def test_shutting_down_answers_unavailable(make_server, long_model):
    srv = make_server(long_args(long_model, extra=["--shutdown-timeout", "10s"]))

    async def go():
        conn = await RpcConn.open(srv)
        a = await conn.start("completions", completion_body(stream=True, **LONG), id="a")
        await conn.wait_chunks("a", 2)
        srv.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        r = None
        while time.monotonic() < deadline:
            r = await conn.call("chat.completions", chat_body(max_tokens=2, max_wait_ms=0), timeout=5)
            if r.get("error", {}).get("code") == -32001:
                break
        e = rpc_error(r, -32001)
        d = openai_data(e, status=503)
        assert d["retry_after_ms"] == 1000, e
        # the call in flight may still finish (it is cut at the shutdown timeout)
        assert not a.done()
        await conn.call("cancel", {"id": "a"})
        rpc_error(await asyncio.wait_for(a, 5), None, id="a")
        await conn.close()

    run_async(go())
    assert srv.proc.wait(timeout=10) == 0


def test_200_streams_over_20_connections(make_server):
    srv = make_server(server_args(parallel=2, ctx=512, queue=64, capacity=2))
    n_conn, per_conn = 20, 10
    body = chat_body("load", max_tokens=6, ignore_eos=True, stream=True)

    async def one_conn(ci):
        conn = await RpcConn.open(srv)
        futs = [await conn.start("chat.completions", body, id="c%d-%d" % (ci, j)) for j in range(per_conn)]
        resps = await asyncio.gather(*futs)
        out = [(r, list(conn.chunks_of(r["id"]))) for r in resps]
        assert not conn.late_chunks and not conn.duplicates and conn.others.empty()
        await conn.close()
        return out

    async def go():
        return await asyncio.gather(*[one_conn(i) for i in range(n_conn)])

    t0 = time.monotonic()
    results = run_async(go(), timeout=60)
    took = time.monotonic() - t0
    done = over = 0
    texts = set()
    for per in results:
        for r, chunks in per:
            if "result" in r:
                texts.add(check_stream(chunks, r, chat=True))
                assert r["result"]["finish_reason"] == "length" and r["result"]["usage"]["completion_tokens"] == 6
                done += 1
            else:
                check_overloaded(r)
                assert chunks == [], r
                over += 1
    assert done + over == n_conn * per_conn
    assert done >= 2, "only %d of %d calls completed (%.1f s)" % (done, n_conn * per_conn, took)
    # the same greedy request: every completed stream says the same thing
    assert len(texts) == 1, texts
    m = srv.wait_idle(timeout=10)
    assert m["slots_busy"] == 0 and srv.alive()
    r = srv.post("/v1/chat/completions", chat_body(max_tokens=2))
    assert r.status_code == 200
    assert transport_count(srv.get("/metrics").text, "websocket") >= n_conn * per_conn
