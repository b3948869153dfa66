"""What a web page in the user's browser may do: the Host, Origin, CORS and
Content-Type rules (a page on another site must not drive the local server,
directly or through DNS rebinding)."""
import socket

import pytest
import requests

from conftest import MODEL, assert_error, chat_body, server_args


def _raw(srv, method, path, headers, body=b""):
    """Send one request with exactly these headers (Host included); returns
    (status, headers dict lower-cased, body bytes)."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    try:
        head = "%s %s HTTP/1.1\r\n" % (method, path)
        h = dict(headers)
        h.setdefault("Connection", "close")
        if body:
            h["Content-Length"] = str(len(body))
        head += "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n"
        s.sendall(head.encode() + body)
        data = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            data += d
    finally:
        s.close()
    top, _, rest = data.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, rest


def _unload_body():
    return b'{"model":"%s","force":true}' % MODEL.encode()


def test_no_cors_headers_by_default(server):
    for path in ("/health", "/v1/models", "/admin/models"):
        r = server.get(path)
        assert r.status_code == 200
        assert "Access-Control-Allow-Origin" not in r.headers, (path, r.headers)
    r = server.post("/v1/chat/completions", chat_body(max_tokens=2))
    assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers


def test_cross_origin_simple_post_cannot_unload(make_server):
    """The attack seen by hand: a page's text/plain POST to /admin."""
    srv = make_server(server_args(parallel=1, ctx=256, queue=2))
    srv.wait_loaded()
    host = "127.0.0.1:%d" % srv.port
    st, h, body = _raw(srv, "POST", "/admin/models/unload",
                       {"Host": host, "Origin": "http://evil.example", "Content-Type": "text/plain"}, _unload_body())
    assert st == 403, body
    assert b"origin_not_allowed" in body
    assert "access-control-allow-origin" not in h
    # even without an Origin (a non-browser client), text/plain is refused
    st, _, body = _raw(srv, "POST", "/admin/models/unload", {"Host": host, "Content-Type": "text/plain"},
                       _unload_body())
    assert st == 415, body
    assert srv.model_health()["status"] == "loaded"
    # the API itself refuses a foreign origin too
    r = srv.post("/v1/chat/completions", chat_body(max_tokens=2), headers={"Origin": "http://evil.example"})
    assert_error(r, 403, etype="permission_error", code="origin_not_allowed")
    assert_error(srv.get("/v1/models", headers={"Origin": "http://evil.example"}), 403)
    # ... but /health answers anyone
    assert srv.get("/health", headers={"Origin": "http://evil.example"}).status_code == 200


def test_dns_rebinding_host_is_refused(make_server):
    srv = make_server(server_args(parallel=1, ctx=256, queue=2))
    srv.wait_loaded()
    evil = "evil.example:%d" % srv.port
    for path, method, body in (("/v1/models", "GET", b""), ("/health", "GET", b""),
                               ("/admin/models/unload", "POST", _unload_body())):
        st, _, out = _raw(srv, method, path, {"Host": evil, "Origin": "http://" + evil,
                                               "Content-Type": "application/json"}, body)
        assert st == 403, (path, out)
        assert b"host_not_allowed" in out
    assert srv.model_health()["status"] == "loaded"
    # the local names and loopback literals, any port
    for host in ("localhost:%d" % srv.port, "127.0.0.1", "[::1]:%d" % srv.port, "LOCALHOST"):
        st, _, out = _raw(srv, "GET", "/v1/models", {"Host": host})
        assert st == 200, (host, out)
    # a page corral served itself (same origin, local Host) may call it
    local = "127.0.0.1:%d" % srv.port
    st, h, out = _raw(srv, "POST", "/v1/chat/completions",
                      {"Host": local, "Origin": "http://" + local, "Content-Type": "application/json"},
                      b'{"model":"%s","messages":[{"role":"user","content":"hi"}],"max_tokens":2}' % MODEL.encode())
    assert st == 200, out
    assert "access-control-allow-origin" not in h


def test_allowed_hosts(make_server):
    srv = make_server(server_args(parallel=1, ctx=256, queue=2, extra=["--allowed-hosts", "gpu-box, .lan"]))
    for host, want in (("gpu-box:%d" % srv.port, 200), ("a.lan", 200), ("lan", 200), ("evil.example", 403),
                       ("localhost", 200)):
        st, _, out = _raw(srv, "GET", "/v1/models", {"Host": host})
        assert st == want, (host, out)


def test_listed_origin_gets_cors_but_never_on_admin(make_server):
    app = "http://app.test:3000"
    srv = make_server(server_args(parallel=1, ctx=256, queue=2, extra=["--cors-origins", app]))
    srv.wait_loaded()
    r = srv.get("/v1/models", headers={"Origin": app})
    assert r.status_code == 200
    assert r.headers["Access-Control-Allow-Origin"] == app
    assert "Origin" in r.headers.get("Vary", "")
    r = srv.post("/v1/chat/completions", chat_body(max_tokens=2), headers={"Origin": app})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == app
    # errors carry it too, so the page can read them
    r = srv.post("/v1/chat/completions", chat_body(model="nope"), headers={"Origin": app})
    assert r.status_code == 404 and r.headers["Access-Control-Allow-Origin"] == app
    # a preflight: the requested headers are granted
    r = requests.options(srv.url("/v1/chat/completions"), timeout=5, headers={
        "Origin": app, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type, x-stainless-os"})
    assert r.status_code == 204
    assert r.headers["Access-Control-Allow-Origin"] == app
    assert "POST" in r.headers["Access-Control-Allow-Methods"]
    assert "x-stainless-os" in r.headers["Access-Control-Allow-Headers"]
    # another origin gets nothing
    assert_error(srv.get("/v1/models", headers={"Origin": "http://other.test"}), 403)
    r = requests.options(srv.url("/v1/chat/completions"), timeout=5, headers={
        "Origin": "http://other.test", "Access-Control-Request-Method": "POST"})
    assert r.status_code == 403 and "Access-Control-Allow-Origin" not in r.headers
    # /admin: no CORS, not even for the listed origin
    r = srv.get("/admin/models", headers={"Origin": app})
    assert r.status_code == 403 and "Access-Control-Allow-Origin" not in r.headers
    r = requests.options(srv.url("/admin/models/unload"), timeout=5, headers={
        "Origin": app, "Access-Control-Request-Method": "POST"})
    assert r.status_code == 403 and "Access-Control-Allow-Origin" not in r.headers
    assert srv.model_health()["status"] == "loaded"


def test_any_origin_only_when_asked(make_server):
    srv = make_server(server_args(parallel=1, ctx=256, queue=2, extra=["--cors-origins", "*"]))
    r = srv.get("/v1/models", headers={"Origin": "http://anything.test"})
    assert r.status_code == 200 and r.headers["Access-Control-Allow-Origin"] == "*"
    r = srv.get("/admin/models", headers={"Origin": "http://anything.test"})
    assert r.status_code == 403 and "Access-Control-Allow-Origin" not in r.headers


@pytest.mark.parametrize("bad", ["http://app.test/", "app.test"])
def test_bad_origin_list_stops_start_up(make_server, bad):
    with pytest.raises(RuntimeError) as e:
        make_server(server_args(parallel=1, ctx=256, queue=2, extra=["--cors-origins", bad]))
    assert "--cors-origins" in str(e.value)
