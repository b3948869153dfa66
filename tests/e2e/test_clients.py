"""Slow, half-closed and vanishing clients: every connection that cannot
become a whole request is closed (or answered 400) at once or at its
deadline, and the server keeps serving."""
import json
import os
import random
import socket
import threading
import time

import pytest

from conftest import MODEL, assert_error, chat_body, server_args

BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "x" * 120}],
                   "max_tokens": 4}).encode()


def _head(port, length=None, chunked=False, path="/v1/chat/completions"):
    h = "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: application/json\r\n" % (path, port)
    if chunked:
        h += "Transfer-Encoding: chunked\r\n"
    if length is not None:
        h += "Content-Length: %d\r\n" % length
    return (h + "\r\n").encode()


def _wait_closed(sock, timeout):
    """Seconds until the server closes (or answers and closes), or None."""
    t0 = time.monotonic()
    sock.settimeout(0.05)
    while time.monotonic() - t0 < timeout:
        try:
            d = sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, BrokenPipeError):
            return time.monotonic() - t0
        if not d:
            return time.monotonic() - t0
        if d.startswith(b"HTTP/1.1 ") and not d.startswith(b"HTTP/1.1 400"):
            raise AssertionError("unexpected answer to an incomplete request: %r" % d[:200])
    return None


def _half_closed_batch(port, make_payload, n, limit=1.0):
    """Open n connections, send each an incomplete request, shut the write
    side; return how long each waited for the server to close."""
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(make_payload(i))
        socks.append(s)
    waits = []
    for s in socks:
        s.shutdown(socket.SHUT_WR)
    for s in socks:
        w = _wait_closed(s, 5)
        waits.append(w)
        s.close()
    return waits


def _incomplete_body(port):
    body = BODY[:109]
    return lambda i: _head(port, length=209) + body


def _unfinished_chunked(port):
    return lambda i: _head(port, chunked=True) + b"%x\r\n" % 50 + BODY[:20]


def _not_http(port):
    rnd = random.Random(7)
    return lambda i: bytes(rnd.randrange(256) for _ in range(rnd.randrange(1, 400)))


@pytest.mark.parametrize("kind", ["incomplete_body", "unfinished_chunked", "not_http"])
def test_half_closed_incomplete_requests_close_at_once(server, kind):
    make = {"incomplete_body": _incomplete_body, "unfinished_chunked": _unfinished_chunked,
            "not_http": _not_http}[kind](server.port)
    waits = []
    for _ in range(4):  # 200 in all, 50 at a time
        waits += _half_closed_batch(server.port, make, 50)
    slow = [w for w in waits if w is None or w > 1.0]
    assert not slow, "%d of %d waited more than 1 s (%s)" % (len(slow), len(waits), sorted(slow, key=str)[:5])
    # and the server still serves
    assert server.post("/v1/chat/completions", chat_body(max_tokens=2)).status_code == 200


def test_header_timeout(make_server):
    srv = make_server(server_args(parallel=1, ctx=256, queue=2, extra=["--header-timeout", "1"]))
    silent = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    trickle = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    req = _head(srv.port, length=len(BODY))
    t0 = time.monotonic()
    closed_at = None
    trickle.settimeout(0.05)
    i = 0
    # a byte every 100 ms keeps the connection "active" for the library's
    # idle timeout; the header deadline still ends it
    while time.monotonic() - t0 < 5:
        try:
            trickle.sendall(req[i:i + 1])
            i = (i + 1) % (len(req) - 4)
        except (BrokenPipeError, ConnectionResetError):
            closed_at = time.monotonic() - t0
            break
        try:
            if trickle.recv(1024) == b"":
                closed_at = time.monotonic() - t0
                break
        except socket.timeout:
            pass
        time.sleep(0.05)
    assert closed_at is not None and 0.8 < closed_at < 2.5, closed_at
    w = _wait_closed(silent, 3)
    assert w is not None and w < 2.5
    silent.close()
    trickle.close()
    assert srv.post("/v1/chat/completions", chat_body(max_tokens=2)).status_code == 200


def test_body_timeout_between_reads(make_server):
    srv = make_server(server_args(parallel=1, ctx=256, queue=2,
                                  extra=["--body-timeout", "1", "--header-timeout", "30"]))
    srv.wait_loaded()
    # a body that stops arriving is cut off after the pause
    stalled = socket.create_connection(("127.0.0.1", srv.port), timeout=5)
    stalled.sendall(_head(srv.port, length=len(BODY)) + BODY[:10])
    w = _wait_closed(stalled, 4)
    stalled.close()
    assert w is not None and 0.8 < w < 2.5, w
    # one that keeps arriving, however slowly in all, is read to the end
    slow = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    slow.sendall(_head(srv.port, length=len(BODY)))
    step = len(BODY) // 5 + 1
    for i in range(0, len(BODY), step):
        time.sleep(0.5)
        slow.sendall(BODY[i:i + step])
    slow.settimeout(10)
    got = b""
    while b"\r\n\r\n" not in got:
        d = slow.recv(65536)
        if not d:
            break
        got += d
    slow.close()
    assert got.startswith(b"HTTP/1.1 200"), got[:200]


def test_loopback_clients_are_not_capped_per_address(make_server):
    """Every local process shares 127.0.0.1, so the per-address cap is for
    remote clients (tests/unit/test_conns.c): a local client with more
    connections than it is served on all of them."""
    srv = make_server(server_args(parallel=1, ctx=256, queue=2, extra=["--max-connections-per-ip", "3"]))
    srv.wait_loaded()
    socks = [socket.create_connection(("127.0.0.1", srv.port), timeout=5) for _ in range(8)]
    try:
        for s in socks:
            s.sendall(b"GET /v1/models HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        for s in socks:
            got = b""
            s.settimeout(5)
            while True:
                d = s.recv(65536)
                if not d:
                    break
                got += d
            assert got.startswith(b"HTTP/1.1 200"), got[:300]
    finally:
        for s in socks:
            s.close()


def test_request_memory_bound(make_server):
    srv = make_server(server_args(parallel=1, ctx=256, queue=2,
                                  extra=["--body-limit", "1M", "--request-memory", "1M"]))
    srv.wait_loaded()
    big = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    big.sendall(_head(srv.port, length=900000) + b"x" * 800000)
    time.sleep(0.5)
    try:
        payload = b"y" * 500000
        r = srv.post("/v1/completions", data=payload, headers={"Content-Type": "application/json"}, timeout=10)
        assert_error(r, 503, code="server_overloaded")
        assert r.headers.get("Retry-After")
    finally:
        big.sendall(b"x" * 100000)
        big.settimeout(10)
        got = big.recv(65536)
        big.close()
    assert got.startswith(b"HTTP/1.1 400"), got[:200]  # not JSON, but read and answered
    # the bytes are given back once the response is done
    deadline = time.monotonic() + 5
    while srv.health()["http"]["request_memory"] != 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.health()["http"]["request_memory"] == 0
    r = srv.post("/v1/completions", data=b"y" * 500000, headers={"Content-Type": "application/json"}, timeout=10)
    assert_error(r, 400)
