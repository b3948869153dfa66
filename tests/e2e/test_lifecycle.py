"""Start-up and graceful shutdown."""
import json
import signal
import socket
import threading
import time

import pytest
import requests

from conftest import (MODEL, chat_body, completion_body, open_stream_socket, parse_sse, read_until,
                      server_args)


def _drain(sock, timeout):
    """Read until the peer closes or timeout; returns (bytes, closed)."""
    sock.settimeout(0.2)
    buf = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            d = sock.recv(65536)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return buf, True
        if not d:
            return buf, True
        buf += d
    return buf, False


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_idle_shutdown(make_server, sig):
    srv = make_server(server_args(parallel=1, ctx=256, queue=2))
    assert srv.post("/v1/completions", completion_body(max_tokens=3)).status_code == 200
    t0 = time.monotonic()
    rc = srv.stop(sig=sig, timeout=10)
    assert rc == 0, srv.stderr()
    assert time.monotonic() - t0 < 3
    with pytest.raises(requests.ConnectionError):
        requests.get(srv.url("/health"), timeout=2)


def test_sigterm_during_stream(make_server):
    """SIGTERM with a stream running: exit 0 within a few seconds and the
    stream ends (an error event and/or a closed connection), no hang."""
    srv = make_server(server_args(parallel=2, ctx=4096, queue=2))
    s = open_stream_socket(srv, "/v1/completions", completion_body("Forever", max_tokens=3000))
    q = open_stream_socket(srv, "/v1/chat/completions", chat_body("Me too", max_tokens=3000))
    try:
        head = read_until(s, lambda b: b.count(b"data: ") >= 3)
        assert head.startswith(b"HTTP/1.1 200")
        read_until(q, lambda b: b.count(b"data: ") >= 3)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        rest, closed = _drain(s, 8)
        rest_q, closed_q = _drain(q, 3)
        try:
            rc = srv.proc.wait(timeout=8)
        except Exception:
            rc = None
        elapsed = time.monotonic() - t0
    finally:
        s.close()
        q.close()
    assert rc == 0, "server did not exit 0 after SIGTERM (rc=%s):\n%s" % (rc, srv.stderr()[-1500:])
    assert elapsed < 8
    assert closed and closed_q, "a stream was left open after the server exited"
    # whatever arrived must be well-formed chunked SSE; if the server ended
    # the response properly (last chunk), the stream says why: an error
    # event, then [DONE]
    body, complete = _dechunk(head.split(b"\r\n\r\n", 1)[1] + rest)
    if complete:
        events = parse_sse(body)
        assert events[-1] == "[DONE]", events[-3:]
        err = json.loads(events[-2])
        assert "error" in err, events[-3:]
        assert err["error"]["type"] == "server_error"
        assert err["error"]["code"] == "model_unavailable", err


def _dechunk(data):
    """Decode an HTTP/1.1 chunked body; returns (payload, saw_last_chunk)."""
    out = b""
    while data:
        line, sep, rest = data.partition(b"\r\n")
        if not sep:
            return out, False
        n = int(line.split(b";")[0], 16)
        if n == 0:
            return out, True
        if len(rest) < n + 2:
            return out + rest[:n], False
        out += rest[:n]
        data = rest[n + 2:]
    return out, False


def test_sigterm_with_queued_request(make_server):
    """A non-streaming request waiting in the queue gets an answer (503) or
    a closed connection when the server stops, not a hang."""
    srv = make_server(server_args(parallel=1, ctx=4096, queue=2))
    running = open_stream_socket(srv, "/v1/completions", completion_body("Hold", max_tokens=3000))
    result = {}

    def waiting():
        try:
            r = requests.post(srv.url("/v1/completions"), json=completion_body("Queued", max_tokens=5),
                              timeout=15)
            result["status"] = r.status_code
            result["body"] = r.text
        except requests.RequestException as e:
            result["exc"] = e

    t = threading.Thread(target=waiting, daemon=True)
    try:
        read_until(running, lambda b: b.count(b"data: ") >= 2)
        t.start()
        srv.wait_for(lambda m: m["queued"] == 1, timeout=3, what="request queued")
        srv.proc.send_signal(signal.SIGTERM)
        t.join(10)
        assert not t.is_alive(), "the queued request hung after SIGTERM"
        rc = srv.proc.wait(timeout=8)
    finally:
        running.close()
    assert rc == 0
    if "status" in result:
        assert result["status"] == 503, result
        assert json.loads(result["body"])["error"]["type"] == "server_error"


def test_new_connections_refused_after_sigterm(make_server):
    srv = make_server(server_args(parallel=1, ctx=4096, queue=2))
    s = open_stream_socket(srv, "/v1/completions", completion_body("Slow", max_tokens=3000))
    try:
        read_until(s, lambda b: b.count(b"data: ") >= 2)
        srv.proc.send_signal(signal.SIGTERM)
        srv.proc.wait(timeout=8)
    finally:
        s.close()
    assert srv.proc.returncode == 0
    with pytest.raises(requests.ConnectionError):
        requests.get(srv.url("/health"), timeout=2)


def test_startup_is_fast(make_server):
    t0 = time.monotonic()
    srv = make_server(server_args(parallel=4, ctx=512, queue=8))
    assert time.monotonic() - t0 < 10
    assert srv.wait_loaded()["status"] == "loaded"


def test_sigterm_under_load(make_server):
    """SIGTERM with running and queued requests, streaming and not: the
    server exits 0 promptly and every client gets an answer or a close."""
    srv = make_server(server_args(parallel=2, ctx=4096, queue=6))
    socks = []
    for i in range(6):
        body = completion_body("load %d" % i, max_tokens=3000)
        if i % 2:
            from conftest import raw_request
            s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
            s.sendall(raw_request(srv.port, "POST", "/v1/completions", json.dumps(body).encode()))
        else:
            s = open_stream_socket(srv, "/v1/completions", body)
        socks.append(s)
    try:
        srv.wait_for(lambda m: m["slots_busy"] == 2 and m["queued"] == 4, timeout=5, what="2 running, 4 queued")
        srv.proc.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        for s in socks:
            data, closed = _drain(s, max(0.5, 8 - (time.monotonic() - t0)))
            assert closed, "a connection stayed open after SIGTERM"
        rc = srv.proc.wait(timeout=8)
    finally:
        for s in socks:
            s.close()
    assert rc == 0, "rc=%s\n%s" % (rc, srv.stderr()[-1500:])
