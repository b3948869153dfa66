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


def _keepalive_socket(srv):
    """A kept-alive connection that has served one request."""
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=10)
    s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    head = read_until(s, lambda b: b"\r\n\r\n" in b)
    assert head.startswith(b"HTTP/1.1 200"), head[:100]
    n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length:")][0].split(b":")[1])
    read_until(s, lambda b: len(b) >= n)
    return s


def test_sigterm_drains_streams_in_flight(make_server):
    """SIGTERM with a stream of a few seconds running: it arrives complete
    (with [DONE]), a request sent during the drain gets 503 on an open
    connection and a refused connection otherwise, and the process exits 0
    within the deadline."""
    srv = make_server(server_args(parallel=2, ctx=4096, queue=2, extra=["--shutdown-timeout", "20"]))
    srv.wait_loaded()
    kept = _keepalive_socket(srv)
    s = open_stream_socket(srv, "/v1/completions", completion_body("Drain me", max_tokens=3500, ignore_eos=True))
    try:
        head = read_until(s, lambda b: b.count(b"data: ") >= 3)
        assert head.startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # during the drain: no new connections ...
        with pytest.raises(requests.ConnectionError):
            requests.get(srv.url("/v1/models"), timeout=2)
        # ... and 503 with Retry-After on a kept-alive one
        kept.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Content-Length: 2\r\n\r\n{}")
        ans, _ = _drain(kept, 5)
        assert ans.startswith(b"HTTP/1.1 503"), ans[:300]
        assert b"Retry-After" in ans and b"shutting_down" in ans
        rest, closed = _drain(s, 25)
        rc = srv.proc.wait(timeout=25)
        elapsed = time.monotonic() - t0
    finally:
        s.close()
        kept.close()
    assert rc == 0, srv.stderr()[-1500:]
    assert closed and elapsed < 20
    body, complete = _dechunk(head.split(b"\r\n\r\n", 1)[1] + rest)
    assert complete
    events = parse_sse(body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert not any("error" in c for c in chunks), events[-3:]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert "drained in" in srv.stderr()


def test_drain_deadline_cancels_with_an_error_event(make_server, mkmodel):
    long_model = mkmodel("drain-long.gguf", seed=9, ctx=65536)
    srv = make_server(server_args(model_path=long_model, parallel=1, ctx=65536, queue=2,
                                  extra=["--shutdown-timeout", "1"]))
    srv.wait_loaded()
    s = open_stream_socket(srv, "/v1/completions", completion_body("Forever", max_tokens=60000, ignore_eos=True))
    try:
        head = read_until(s, lambda b: b.count(b"data: ") >= 3)
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGTERM)
        rest, closed = _drain(s, 10)
        rc = srv.proc.wait(timeout=10)
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    assert rc == 0 and closed
    assert 0.9 < elapsed < 5, elapsed
    body, complete = _dechunk(head.split(b"\r\n\r\n", 1)[1] + rest)
    assert complete, "the stream was cut instead of ended"
    events = parse_sse(body)
    assert events[-1] == "[DONE]", events[-3:]
    err = json.loads(events[-2])
    assert err["error"]["type"] == "server_error" and "shutting down" in err["error"]["message"], err
    assert "shutdown_timeout reached" in srv.stderr()


def test_second_signal_exits_at_once(make_server, mkmodel):
    long_model = mkmodel("drain-long.gguf", seed=9, ctx=65536)
    srv = make_server(server_args(model_path=long_model, parallel=1, ctx=65536, queue=2,
                                  extra=["--shutdown-timeout", "30"]))
    srv.wait_loaded()
    s = open_stream_socket(srv, "/v1/completions", completion_body("Forever", max_tokens=60000, ignore_eos=True))
    try:
        read_until(s, lambda b: b.count(b"data: ") >= 3)
        srv.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert srv.proc.poll() is None  # draining
        t0 = time.monotonic()
        srv.proc.send_signal(signal.SIGINT)
        rc = srv.proc.wait(timeout=5)
        assert time.monotonic() - t0 < 2
    finally:
        s.close()
    assert rc == 128 + signal.SIGINT
    assert "exiting now" in srv.stderr()


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
    """A non-streaming request waiting in the queue is in flight too: the
    drain lets it run once the stream ahead of it ends."""
    srv = make_server(server_args(parallel=1, ctx=4096, queue=2, extra=["--shutdown-timeout", "20"]))
    running = open_stream_socket(srv, "/v1/completions", completion_body("Hold", max_tokens=1500, ignore_eos=True))
    result = {}

    def waiting():
        try:
            r = requests.post(srv.url("/v1/completions"), json=completion_body("Queued", max_tokens=5),
                              timeout=25)
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
        _drain(running, 20)
        t.join(20)
        assert not t.is_alive(), "the queued request hung after SIGTERM"
        rc = srv.proc.wait(timeout=20)
    finally:
        running.close()
    assert rc == 0
    assert result.get("status") == 200, result


def test_startup_is_fast(make_server):
    t0 = time.monotonic()
    srv = make_server(server_args(parallel=4, ctx=512, queue=8))
    assert time.monotonic() - t0 < 10
    assert srv.wait_loaded()["status"] == "loaded"


def test_sigterm_under_load(make_server):
    """SIGTERM with running and queued requests, streaming and not, and a
    short deadline: the server exits 0 promptly and every client gets an
    answer (complete, or an error) and a close."""
    srv = make_server(server_args(parallel=2, ctx=4096, queue=6, extra=["--shutdown-timeout", "2"]))
    socks = []
    for i in range(6):
        body = completion_body("load %d" % i, max_tokens=3000, ignore_eos=True)
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
            data, closed = _drain(s, max(0.5, 10 - (time.monotonic() - t0)))
            assert closed, "a connection stayed open after SIGTERM"
            assert data.startswith(b"HTTP/1.1 "), data[:100]
        rc = srv.proc.wait(timeout=10)
        assert time.monotonic() - t0 < 8
    finally:
        for s in socks:
            s.close()
    assert rc == 0, "rc=%s\n%s" % (rc, srv.stderr()[-1500:])
