"""JSON-RPC 2.0 over corral's transports, the protocol itself: the same
answers as HTTP on every transport (WebSocket and stdio), parse errors and
invalid requests, method and params errors with their OpenAI data, batches,
ids of every allowed type, and the info, metrics and admin methods.

The RPC methods take the HTTP API's JSON bodies as params and answer the
HTTP API's objects, so most checks compare an RPC answer with the HTTP one.
"""
import asyncio
import json
import re
import shutil
import time

from conftest import MODEL, TEST_MODEL, assert_error, chat_body, completion_body
from rpc_client import (RpcConn, StdioRpc, check_stream, in_thread, ok, openai_data, rpc_error, run_async,
                        shape, small_args, stdio_args, strip, transport_count, ws_connect)


def _same_requests():
    return [("chat.completions", "/v1/chat/completions", chat_body("Tell me about rivers", max_tokens=8, seed=1234)),
            ("completions", "/v1/completions", completion_body("The river", max_tokens=8, seed=1234)),
            ("embeddings", "/v1/embeddings", {"model": MODEL, "input": ["a river", "the sea"]})]


def test_same_result_over_http_websocket_and_stdio(make_server):
    # fresh servers that see the same requests in the same order, so that
    # even the prompt-cache counts in usage agree
    http_srv = make_server(small_args())
    ws_srv = make_server(small_args())
    http = []
    for _, path, body in _same_requests():
        r = http_srv.post(path, body)
        assert r.status_code == 200, r.text
        http.append(r.json())

    async def over_ws():
        conn = await RpcConn.open(ws_srv)
        out = [ok(await conn.call(method, body)) for method, _, body in _same_requests()]
        await conn.close()
        return out

    ws = run_async(over_ws())
    st = StdioRpc(stdio_args())
    try:
        stdio = []
        for i, (method, _, body) in enumerate(_same_requests()):
            chunks, r = st.call(method, body, id=i)
            assert chunks == []
            stdio.append(ok(r, id=i))
    finally:
        assert st.stop() == 0, st.stderr()[-2000:]
    for h, w, s in zip(http, ws, stdio):
        assert strip(w) == strip(h)
        assert strip(s) == strip(h)
    assert http[0]["object"] == "chat.completion" and http[0]["choices"][0]["message"]["content"]
    assert http[0]["usage"]["completion_tokens"] <= 8
    assert http[1]["object"] == "text_completion" and http[1]["choices"][0]["text"]
    assert http[2]["object"] == "list" and len(http[2]["data"]) == 2


# Invalid requests answered with id null: not an object, or an id that is
# not a string, number or null.
INVALID_NULL_ID = [
    '1', '"hello"', 'null', 'true',
    '{"jsonrpc": "2.0", "id": {"a": 1}, "method": "health"}',
    '{"jsonrpc": "2.0", "id": [1], "method": "health"}',
    '{"jsonrpc": "2.0", "id": true, "method": "health"}',
    '{"foo": "bar"}',
    '{"jsonrpc": "2.0", "method": 1, "params": "bar"}',
]
# Invalid requests with a readable id: answered with that id (or null).
INVALID_WITH_ID = [
    ('{"id": 7, "method": "health"}', 7),
    ('{"jsonrpc": "1.0", "id": 7, "method": "health"}', 7),
    ('{"jsonrpc": 2.0, "id": "a", "method": "health"}', "a"),
    ('{"jsonrpc": "2.0", "id": 8}', 8),
    ('{"jsonrpc": "2.0", "id": 9, "method": null}', 9),
    ('{"jsonrpc": "2.0", "id": 10, "method": ["health"]}', 10),
    ('{"jsonrpc": "2.0", "id": 11, "method": "health", "params": "x"}', 11),
    ('{"jsonrpc": "2.0", "id": 12, "method": "health", "params": 5}', 12),
]


def test_parse_errors_and_invalid_requests(make_server):
    srv = make_server(small_args())

    async def go():
        ws = await ws_connect(srv)

        async def one(text):
            await ws.send(text)
            return json.loads(await asyncio.wait_for(ws.recv(), 10))

        for text in ("{x", '{"jsonrpc": "2.0", "id": 1, "method": "health"', "[1, 2", "\x01", "tru"):
            e = rpc_error(await one(text), -32700, id=None)
            assert e["message"], e
        for text in INVALID_NULL_ID:
            rpc_error(await one(text), -32600, id=None)
        for text, want in INVALID_WITH_ID:
            r = await one(text)
            rpc_error(r, -32600)
            assert r["id"] in (None, want), (text, r)
        # the connection is still fine
        r = await one('{"jsonrpc": "2.0", "id": "after", "method": "health"}')
        assert ok(r, id="after")["status"] == "ok"
        await ws.close()

    run_async(go())


def test_method_not_found_and_invalid_params(make_server):
    srv = make_server(small_args())

    async def go():
        conn = await RpcConn.open(srv)
        for m in ("nope", "chat/completions/x", "", "admin.nothing", "Health"):
            rpc_error(await conn.call(m), -32601)
        rpc_error(await conn.call("nope", id="s"), -32601, id="s")
        # params must be an object (the HTTP body)
        rpc_error(await conn.call("chat.completions", [chat_body()], id=2), -32602, id=2)
        rpc_error(await conn.call("chat.completions", [], id=3), -32602, id=3)
        rpc_error(await conn.call("models.list", [1]), -32602)
        # inference without params
        rpc_error(await conn.call("chat.completions", None, id=4), -32602, id=4)
        # models.get without an id
        rpc_error(await conn.call("models.get", {}), -32602)

        # an OpenAI 400 is -32602 with the same error object in data
        bad_bodies = [("/v1/chat/completions", "chat.completions", {"model": MODEL}),
                      ("/v1/chat/completions", "chat.completions", chat_body(temperature="hot")),
                      ("/v1/chat/completions", "chat.completions", chat_body(messages="hi")),
                      ("/v1/completions", "completions", {"model": MODEL}),
                      ("/v1/completions", "completions", completion_body(max_tokens=-5)),
                      ("/v1/embeddings", "embeddings", {"model": MODEL})]
        for i, (path, method, body) in enumerate(bad_bodies):
            r = await conn.call(method, body, id="bad-%d" % i)
            e = rpc_error(r, -32602, id="bad-%d" % i)
            d = openai_data(e, status=400, etype="invalid_request_error")
            h = await in_thread(srv.post, path, body)
            he = assert_error(h, 400)
            assert {k: d[k] for k in he} == he, (d, he)
            assert e["message"] == d["message"]
        e = rpc_error(await conn.call("chat.completions", {"model": MODEL}), -32602)
        assert e["data"]["param"] == "messages", e

        # max_wait_ms must be 0..3600000 whole milliseconds
        for bad in (-1, 1.5, 3600001, "10", None, True):
            r = await conn.call("chat.completions", chat_body(max_tokens=2, max_wait_ms=bad))
            openai_data(rpc_error(r, -32602), status=400)
        for good in (0, 60000, 3600000):
            ok(await conn.call("chat.completions", chat_body(max_tokens=2, max_wait_ms=good)))

        # unknown model: -32004, the HTTP 404's error object in data
        for i, (path, method, body) in enumerate([
                ("/v1/chat/completions", "chat.completions", chat_body(model="nope")),
                ("/v1/completions", "completions", completion_body(model="nope")),
                ("/v1/embeddings", "embeddings", {"model": "nope", "input": "x"})]):
            e = rpc_error(await conn.call(method, body, id=100 + i), -32004, id=100 + i)
            d = openai_data(e, status=404, code="model_not_found")
            he = assert_error(await in_thread(srv.post, path, body), 404, code="model_not_found")
            assert {k: d[k] for k in he} == he, (d, he)
        e = rpc_error(await conn.call("models.get", {"id": "nope"}), -32004)
        d = openai_data(e, status=404, code="model_not_found")
        he = assert_error(await in_thread(srv.get, "/v1/models/nope"), 404)
        assert {k: d[k] for k in he} == he, (d, he)
        assert not conn.duplicates and conn.others.empty()
        await conn.close()

    run_async(go())


def test_every_error_carries_openai_data(make_server):
    """The spec: error.data always carries message, type, code, param and
    status - the protocol-level errors too."""
    srv = make_server(small_args())

    async def go():
        ws = await ws_connect(srv)
        seen = {}
        for text in ("{x", '"hello"', '{"jsonrpc": "2.0", "id": 1, "method": "nope"}',
                     '{"jsonrpc": "2.0", "id": 2, "method": "chat.completions", "params": []}', "[]"):
            await ws.send(text)
            r = json.loads(await asyncio.wait_for(ws.recv(), 10))
            e = rpc_error(r, None)
            seen[text] = e
        await ws.close()
        missing = {t: e for t, e in seen.items() if not isinstance(e.get("data"), dict)
                   or not set(e["data"]) >= {"message", "type", "code", "param", "status"}}
        assert not missing, "errors without the OpenAI fields in data: %r" % missing

    run_async(go())


def test_batch_mixes_calls_notifications_and_errors(make_server):
    srv = make_server(small_args(parallel=2))

    async def go():
        ws = await ws_connect(srv)

        async def recv():
            return json.loads(await asyncio.wait_for(ws.recv(), 20))

        batch = [
            {"jsonrpc": "2.0", "id": 1, "method": "models.list"},
            {"jsonrpc": "2.0", "id": "two", "method": "chat.completions", "params": chat_body(max_tokens=4)},
            {"jsonrpc": "2.0", "method": "health"},  # a notification: no entry
            {"jsonrpc": "2.0", "method": "chat.completions", "params": chat_body(max_tokens=2)},  # same
            {"jsonrpc": "2.0", "id": 3, "method": "no.such.method"},
            5,  # invalid: an entry with id null
            {"jsonrpc": "2.0", "id": 4, "method": "capacity"},
            {"jsonrpc": "2.0", "id": "s", "method": "completions",
             "params": completion_body(max_tokens=3, stream=True)},
            {"jsonrpc": "2.0", "id": 6, "method": "chat.completions", "params": {"model": MODEL}},
        ]
        await ws.send(json.dumps(batch))
        chunks = []
        while True:
            m = await recv()
            if isinstance(m, dict) and m.get("method") == "stream.chunk":
                assert m["params"]["id"] == "s", m
                chunks.append(m["params"]["chunk"])
                continue
            break
        assert isinstance(m, list), "a batch must be answered with one array: %r" % m
        by_id = {}
        for r in m:
            assert isinstance(r, dict) and r["jsonrpc"] == "2.0", r
            by_id.setdefault(json.dumps(r["id"]), []).append(r)
        assert sorted(by_id) == sorted(json.dumps(i) for i in (1, "two", 3, None, 4, "s", 6)), m
        assert all(len(v) == 1 for v in by_id.values()), m
        assert len(m) == 7, m
        assert ok(by_id["1"][0])["object"] == "list"
        assert ok(by_id['"two"'][0])["object"] == "chat.completion"
        rpc_error(by_id["3"][0], -32601)
        rpc_error(by_id["null"][0], -32600)
        assert "models" in ok(by_id["4"][0])
        text = check_stream(chunks, by_id['"s"'][0], chat=False)
        assert text
        rpc_error(by_id["6"][0], -32602)

        # a batch of only notifications: no answer at all
        await ws.send(json.dumps([{"jsonrpc": "2.0", "method": "health"},
                                  {"jsonrpc": "2.0", "method": "models.list"},
                                  {"jsonrpc": "2.0", "method": "no.such.method"}]))
        # a lone notification, even to an unknown method: no answer either
        await ws.send(json.dumps({"jsonrpc": "2.0", "method": "no.such.method"}))
        await ws.send(json.dumps({"jsonrpc": "2.0", "method": "chat.completions", "params": chat_body(max_tokens=2)}))
        await ws.send(json.dumps({"jsonrpc": "2.0", "id": "next", "method": "health"}))
        r = await recv()
        assert ok(r, id="next")["status"] == "ok"

        # an empty batch: one error object, not an array
        await ws.send("[]")
        r = await recv()
        assert isinstance(r, dict), r
        rpc_error(r, -32600, id=None)
        # a batch of invalid entries: an array of errors
        await ws.send("[1, 2]")
        r = await recv()
        assert isinstance(r, list) and len(r) == 2, r
        for e in r:
            rpc_error(e, -32600, id=None)
        # a batch of one call is still an array
        await ws.send(json.dumps([{"jsonrpc": "2.0", "id": 9, "method": "health"}]))
        r = await recv()
        assert isinstance(r, list) and len(r) == 1 and ok(r[0], id=9)["status"] == "ok", r
        await ws.close()

    run_async(go())
    srv.wait_idle()


def test_ids_of_every_allowed_type_are_echoed(make_server):
    srv = make_server(small_args(parallel=2))
    ids = ["abc", "", 0, 7, -3, 1.5, 0.1, -2.5e-7, None, 2 ** 53 + 1, 2 ** 63 - 1, -(2 ** 63),
           "héllo ✓ 😀 日本", 'quote " and \\ backslash', "1"]

    async def go():
        ws = await ws_connect(srv)
        for i in ids:
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": "health"}))
            r = json.loads(await asyncio.wait_for(ws.recv(), 10))
            assert ok(r)["status"] == "ok"
            assert r["id"] == i and type(r["id"]) is type(i), (i, r)
        # the same, unescaped on the wire
        await ws.send('{"jsonrpc": "2.0", "id": "grüße ✓", "method": "health"}')
        r = json.loads(await asyncio.wait_for(ws.recv(), 10))
        assert r["id"] == "grüße ✓", r
        # errors echo the id too
        for i in ("e1", 3, 2.25, None):
            await ws.send(json.dumps({"jsonrpc": "2.0", "id": i, "method": "nope"}))
            r = json.loads(await asyncio.wait_for(ws.recv(), 10))
            rpc_error(r, -32601, id=i)
        await ws.close()

        # stream chunks carry the request's id, whatever its type
        conn = await RpcConn.open(srv)
        for i in ("strm ✓", 2 ** 53 + 1, 4.5, None):
            r = await conn.call("completions", completion_body(max_tokens=3, stream=True), id=i)
            assert r["id"] == i and type(r["id"]) is type(i), (i, r)
            check_stream(conn.chunks_of(i), r, chat=False)
        await conn.close()

    run_async(go())


def test_metrics_count_requests_by_transport(make_server):
    srv = make_server(small_args())
    before = srv.get("/metrics").text
    ws0, http0 = transport_count(before, "websocket"), transport_count(before, "http")
    assert transport_count(before, "stdio") == 0

    async def go():
        conn = await RpcConn.open(srv)
        ok(await conn.call("health"))
        ok(await conn.call("models.list"))
        ok(await conn.call("chat.completions", chat_body(max_tokens=2)))
        text = ok(await conn.call("metrics"))
        await conn.close()
        return text

    text = run_async(go())
    assert isinstance(text, str) and "# TYPE corral_transport_requests_total counter" in text
    assert 3 <= transport_count(text, "websocket") - ws0 <= 4
    after = srv.get("/metrics").text
    assert transport_count(after, "websocket") == transport_count(text, "websocket")
    assert transport_count(after, "http") > http0
    # the RPC metrics text is the /metrics body (up to the numbers)
    names = lambda t: sorted(set(re.findall(r"^([a-z_]+)", t, re.M)))  # noqa: E731
    assert names(text) == names(after)


def test_info_methods_equal_the_http_bodies(make_server):
    srv = make_server(small_args())
    srv.wait_loaded()

    async def go():
        conn = await RpcConn.open(srv)
        out = {}
        for method, params in (("models.list", None), ("models.get", {"id": MODEL}), ("capacity", None),
                               ("inference/capacity", None), ("health", None), ("admin.models", None),
                               ("admin.pool", None)):
            out[method] = ok(await conn.call(method, params))
        await conn.close()
        return out

    rpc = run_async(go())
    assert rpc["models.list"] == srv.get("/v1/models").json()
    assert rpc["models.get"] == srv.get("/v1/models/" + MODEL).json()
    cap = srv.get("/capacity").json()
    assert shape(rpc["capacity"]) == shape(cap)
    assert shape(rpc["inference/capacity"]) == shape(cap)
    assert rpc["capacity"]["host"] == cap["host"] and rpc["capacity"]["models"][0]["id"] == MODEL
    assert shape(rpc["health"]) == shape(srv.get("/health").json())
    assert shape(rpc["admin.models"]) == shape(srv.get("/admin/models").json())
    assert shape(rpc["admin.pool"]) == shape(srv.get("/admin/pool").json())


def test_admin_load_unload_register_over_loopback(make_server, tmp_path):
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(TEST_MODEL, d / "a.gguf")
    outside = tmp_path / "outside.gguf"
    shutil.copy(TEST_MODEL, outside)
    srv = make_server(["--models-dir", str(d), "--threads", "1", "--ctx", "512", "--parallel", "1",
                       "--port", "0", "--host", "127.0.0.1", "--max-concurrent", "2"])

    async def status(conn, model):
        return {m["id"]: m for m in ok(await conn.call("admin.models"))["data"]}[model]["status"]

    async def wait_status(conn, model, want, timeout=20):
        deadline = time.monotonic() + timeout
        st = None
        while time.monotonic() < deadline:
            st = await status(conn, model)
            if st == want:
                return
        raise AssertionError("%s is %s, not %s" % (model, st, want))

    async def go():
        conn = await RpcConn.open(srv)
        assert await status(conn, "a") == "unloaded"
        r = ok(await conn.call("admin.load", {"model": "a"}))
        assert r["id"] == "a"
        await wait_status(conn, "a", "loaded")
        assert ok(await conn.call("admin.load", {"model": "a"}))["status"] == "loaded"
        assert ok(await conn.call("admin.pool"))["loaded"] == 1
        r = ok(await conn.call("admin.unload", {"model": "a"}))
        assert r["status"] == "unloaded"
        assert srv.model_health("a")["status"] == "unloaded"
        e = rpc_error(await conn.call("admin.load", {"model": "nope"}), -32004)
        openai_data(e, status=404)
        e = rpc_error(await conn.call("admin.unload", {}), -32602)
        openai_data(e, status=400, param="model")
        # register inside the models dir
        r = ok(await conn.call("admin.register", {"model": "mine", "path": str(d / "a.gguf")}))
        assert r["id"] == "mine"
        assert "mine" in [m["id"] for m in ok(await conn.call("models.list"))["data"]]
        ok(await conn.call("completions", completion_body(model="mine", max_tokens=2), timeout=30))
        # outside it: forbidden
        e = rpc_error(await conn.call("admin.register", {"model": "x1", "path": str(outside)}), -32003)
        openai_data(e, status=403)
        await conn.close()

    run_async(go())
