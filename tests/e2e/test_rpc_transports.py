"""The transports under JSON-RPC: the WebSocket upgrade on GET /v1/rpc
(handshake, API key, admin key, Origin), WebSocket framing (pings,
fragments, the message bound, protocol errors, no Nagle delay), and
`corral rpc --stdio` (lines in and out, an over-long line, stdin closing
while a call is in flight).
"""
import asyncio
import json
import time

import pytest
import requests
import websockets
from conftest import MODEL, assert_error, chat_body, completion_body
from rpc_client import (ADMIN_KEY, KEY, RpcConn, StdioRpc, UPGRADE, check_stream, listening_sockets, ok,
                        openai_data, raw_ws_open, rpc_error, run_async, small_args, stdio_args,
                        transport_count, ws_connect)


def test_plain_get_and_bad_version(make_server):
    srv = make_server(small_args())
    assert_error(srv.get("/v1/rpc"), 400, code="websocket_required")
    r = requests.get(srv.url("/v1/rpc"), headers=dict(UPGRADE, **{"Sec-WebSocket-Version": "12"}), timeout=5)
    assert r.status_code == 426, (r.status_code, r.text)
    assert r.headers.get("Sec-WebSocket-Version") == "13", r.headers
    # a real upgrade on the same route works
    s, status, head = raw_ws_open(srv.port)
    try:
        assert status == 101, head
        assert "sec-websocket-accept: " in head.lower(), head
    finally:
        s.close()


def test_upgrade_needs_the_api_key(make_server):
    srv = make_server(small_args(extra=["--api-key", KEY]), api_key=KEY)
    r = requests.get(srv.url("/v1/rpc"), headers=UPGRADE, timeout=5)
    assert_error(r, 401)

    async def go():
        for h in ({}, {"Authorization": "Bearer nope"}, {"x-api-key": "nope"}, {"Authorization": KEY}):
            with pytest.raises(websockets.InvalidStatusCode) as ei:
                await ws_connect(srv, h)
            assert ei.value.status_code == 401, h
        for h in ({"Authorization": "Bearer " + KEY}, {"x-api-key": KEY}):
            conn = await RpcConn.open(srv, h)
            assert ok(await conn.call("models.list"))["data"][0]["id"] == MODEL
            ok(await conn.call("chat.completions", chat_body(max_tokens=2)))
            await conn.close()

    run_async(go())


def test_foreign_origin_is_refused(make_server):
    srv = make_server(small_args())
    r = requests.get(srv.url("/v1/rpc"), headers=dict(UPGRADE, Origin="http://evil.example"), timeout=5)
    assert_error(r, 403, code="origin_not_allowed")

    async def go():
        with pytest.raises(websockets.InvalidStatusCode) as ei:
            await ws_connect(srv, origin="http://evil.example")
        assert ei.value.status_code == 403
        # a page corral served itself may connect
        conn = await RpcConn.open(srv, origin="http://127.0.0.1:%d" % srv.port)
        assert ok(await conn.call("health"))["status"] == "ok"
        await conn.close()

    run_async(go())


def test_admin_methods_need_the_admin_key(make_server):
    srv = make_server(small_args(extra=["--api-key", KEY, "--admin-api-key", ADMIN_KEY]), api_key=KEY)

    async def go():
        user = await RpcConn.open(srv, {"Authorization": "Bearer " + KEY})
        ok(await user.call("models.list"))
        for method, params in (("admin.models", None), ("admin.pool", None), ("admin.load", {"model": MODEL}),
                               ("admin.unload", {"model": MODEL})):
            e = rpc_error(await user.call(method, params), -32002)
            openai_data(e, status=401)
        assert srv.model_health()["status"] in ("loaded", "loading")  # the unload was refused
        await user.close()
        # the admin key alone is not the API key: the upgrade itself is refused
        with pytest.raises(websockets.InvalidStatusCode) as ei:
            await ws_connect(srv, {"Authorization": "Bearer " + ADMIN_KEY})
        assert ei.value.status_code == 401
        # both keys (admin in Authorization, API key in x-api-key): both kinds of method
        adm = await RpcConn.open(srv, {"Authorization": "Bearer " + ADMIN_KEY, "x-api-key": KEY})
        assert ok(await adm.call("admin.models"))["data"][0]["id"] == MODEL
        ok(await adm.call("models.list"))
        await adm.close()

    run_async(go())

    # an admin key and no API key: anyone may infer, admin needs the key even on loopback
    srv2 = make_server(small_args(extra=["--admin-api-key", ADMIN_KEY]))

    async def go2():
        anon = await RpcConn.open(srv2)
        ok(await anon.call("chat.completions", chat_body(max_tokens=2)))
        rpc_error(await anon.call("admin.pool"), -32002)
        await anon.close()
        admin = await RpcConn.open(srv2, {"Authorization": "Bearer " + ADMIN_KEY})
        assert ok(await admin.call("admin.pool"))["loaded"] == 1
        await admin.close()

    run_async(go2())


def test_one_upgrade_with_both_keys_may_infer_and_admin(make_server):
    """--api-key K --admin-api-key A: an upgrade with x-api-key: K (the API
    key) and Authorization: Bearer A (the admin key) passes both rules."""
    srv = make_server(small_args(extra=["--api-key", KEY, "--admin-api-key", ADMIN_KEY]), api_key=KEY)

    async def go():
        both = await RpcConn.open(srv, {"Authorization": "Bearer " + ADMIN_KEY, "x-api-key": KEY})
        assert ok(await both.call("admin.models"))["data"][0]["id"] == MODEL
        assert ok(await both.call("models.list"))["data"][0]["id"] == MODEL
        await both.close()

    run_async(go())


def test_websocket_ping_fragments_and_message_limit(make_server):
    srv = make_server(small_args(extra=["--max-rpc-message", "1024"]))

    async def go():
        ws = await ws_connect(srv)
        pong = await ws.ping()
        await asyncio.wait_for(pong, 5)
        msg = json.dumps({"jsonrpc": "2.0", "id": "frag", "method": "health"})
        await ws.send([msg[:5], msg[5:17], msg[17:]])
        r = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert ok(r, id="frag")["status"] == "ok"
        # just under the limit
        base = {"jsonrpc": "2.0", "id": "pad", "method": "health", "params": {"pad": ""}}
        base["params"]["pad"] = "x" * (1000 - len(json.dumps(base)))
        assert len(json.dumps(base)) == 1000
        await ws.send(json.dumps(base))
        assert ok(json.loads(await asyncio.wait_for(ws.recv(), 10)), id="pad")["status"] == "ok"
        # over it: close 1009
        base["params"]["pad"] = "x" * 2000
        await ws.send(json.dumps(base))
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
        assert ws.close_code == 1009, (ws.close_code, ws.close_reason)

        # a fragmented message over the limit: the same (on a raw socket: the
        # server closes the TCP connection right after its close frame, and
        # websockets, still sending fragments, may then report 1006)
        text = json.dumps(base).encode()
        s, status, head = raw_ws_open(srv.port)
        try:
            assert status == 101, head
            s.send_frame(0x1, text[:700], fin=False)
            s.send_frame(0x0, text[700:1400], fin=False)
            s.send_frame(0x0, text[1400:], fin=True)
            assert s.recv_close_code() == 1009
        finally:
            s.close()

        conn = await RpcConn.open(srv)
        assert ok(await conn.call("health"))["status"] == "ok"
        await conn.close()

    run_async(go())
    assert srv.alive()


def test_websocket_round_trip_is_not_delayed(make_server):
    """A small call on an idle connection is answered in a few ms, not held
    back by Nagle's algorithm waiting for the client's delayed ACK (~40 ms)."""
    srv = make_server(small_args())

    async def go():
        ws = await ws_connect(srv)
        took = []
        for i in range(21):
            t0 = time.monotonic()
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": "models.list"}))
            ok(json.loads(await asyncio.wait_for(ws.recv(), 10)), id=i)
            took.append(time.monotonic() - t0)
        await ws.close()
        return sorted(took)

    took = run_async(go())
    assert took[len(took) // 2] < 0.02, "median round trip %.1f ms: %s" % (
        took[len(took) // 2] * 1000, ["%.1f" % (t * 1000) for t in took])


def test_websocket_protocol_errors_close_the_connection(make_server):
    srv = make_server(small_args())
    s, status, head = raw_ws_open(srv.port)
    try:
        assert status == 101, head
        s.send_frame(0x1, b'{"jsonrpc":"2.0","id":1,"method":"health"}')
        op, payload = s.recv_frame()
        assert op == 0x1 and ok(json.loads(payload), id=1)["status"] == "ok"
        s.send_frame(0x1, b'{"jsonrpc":"2.0","id":"\xff\xfe","method":"health"}')
        assert s.recv_close_code() == 1007
    finally:
        s.close()
    s, status, head = raw_ws_open(srv.port)
    try:
        assert status == 101, head
        s.send_frame(0x1, b'{"jsonrpc":"2.0","id":2,"method":"health"}', mask=False)
        assert s.recv_close_code() == 1002
    finally:
        s.close()
    assert srv.health()["status"] == "ok"


def test_stdio_serves_json_rpc_lines(tmp_path):
    st = StdioRpc(stdio_args(parallel=2, extra=["--max-rpc-message", "4096"]))
    try:
        _, r = st.call("health", id=1)
        assert ok(r, id=1)["status"] == "ok"
        _, r = st.call("models.list", id="m")
        assert [m["id"] for m in ok(r)["data"]] == [MODEL]
        # a notification gets nothing: the next line out answers the next request
        st.send({"jsonrpc": "2.0", "method": "health"})
        st.send({"jsonrpc": "2.0", "method": "nope"})
        _, r = st.call("capacity", id=2)
        assert "models" in ok(r, id=2)
        body = chat_body("Hello from a pipe", max_tokens=10)
        chunks, r = st.call("chat.completions", body, id=3)
        assert chunks == []
        content = ok(r)["choices"][0]["message"]["content"]
        chunks, r = st.call("chat.completions", dict(body, stream=True, stream_options={"include_usage": True}),
                            id="s")
        assert check_stream(chunks, r, chat=True, include_usage=True) == content
        # a line over --max-rpc-message: -32005 with id null, then the next line is served
        big = json.dumps({"jsonrpc": "2.0", "id": 4, "method": "health", "params": {"pad": "y" * 5000}})
        st.send_line(big)
        e = rpc_error(st.recv(), -32005, id=None)
        openai_data(e, status=413)
        _, r = st.call("health", id=5)
        assert ok(r, id=5)["status"] == "ok"
        # protocol errors and batches work the same as on a WebSocket
        st.send_line("{x")
        rpc_error(st.recv(), -32700, id=None)
        st.send_line("[]")
        rpc_error(st.recv(), -32600, id=None)
        st.send_line("")  # an empty line is nothing
        st.send(([{"jsonrpc": "2.0", "id": 6, "method": "health"}, {"jsonrpc": "2.0", "method": "health"},
                  {"jsonrpc": "2.0", "id": 7, "method": "nope"}]))
        r = st.recv()
        assert isinstance(r, list) and sorted(x["id"] for x in r) == [6, 7], r
        _, r = st.call("metrics", id=8)
        text = ok(r)
        assert isinstance(text, str)
        assert transport_count(text, "stdio") >= 8
        assert transport_count(text, "websocket") == 0 and transport_count(text, "http") == 0
        # admin methods work on stdio (the pipe is the owner's)
        _, r = st.call("admin.models", id=9)
        assert ok(r)["data"][0]["id"] == MODEL
        # no HTTP port in this mode
        assert listening_sockets(st.proc.pid) == []
        st.close_stdin()
        assert st.wait(timeout=20) == 0
    finally:
        st.stop()
    st.reader.join(5)
    # stdout has only JSON-RPC messages, one per line
    assert st.lines, "nothing on stdout"
    for line in st.lines:
        assert line.endswith(b"\n") and b"\n" not in line[:-1], line
        m = json.loads(line)
        for x in (m if isinstance(m, list) else [m]):
            assert x["jsonrpc"] == "2.0", line
    assert st.stderr().strip(), "no log on stderr"
    assert "listening on" not in st.stderr()


def test_stdio_finishes_calls_in_flight_when_stdin_closes():
    st = StdioRpc(stdio_args(parallel=2, ctx=4096, queue=4, extra=["--shutdown-timeout", "30s"]))
    try:
        _, r = st.call("health", id=0)
        ok(r)
        st.send({"jsonrpc": "2.0", "id": "a", "method": "completions",
                 "params": completion_body(max_tokens=1500, ignore_eos=True)})
        st.send({"jsonrpc": "2.0", "id": "b", "method": "completions",
                 "params": completion_body("Far away", max_tokens=800, ignore_eos=True, stream=True)})
        st.close_stdin()
        t0 = time.monotonic()
        rc = st.wait(timeout=30)
        assert rc == 0, st.stderr()[-2000:]
        assert time.monotonic() - t0 < 25
        assert st.eof.wait(5)
        msgs = []
        while True:
            line = st.q.get(timeout=5)
            if line is None:
                break
            msgs.append(json.loads(line))
        res = {m["id"]: m for m in msgs if isinstance(m, dict) and "id" in m}
        chunks = [m["params"]["chunk"] for m in msgs if isinstance(m, dict) and m.get("method") == "stream.chunk"]
        assert set(res) == {"a", "b"}, msgs[-3:]
        assert ok(res["a"])["usage"]["completion_tokens"] == 1500
        check_stream(chunks, res["b"], chat=False)
        assert res["b"]["result"]["usage"]["completion_tokens"] == 800
        # the last line out is a response, not a chunk
        assert "id" in msgs[-1] and msgs[-1]["id"] in ("a", "b")
    finally:
        st.stop()
