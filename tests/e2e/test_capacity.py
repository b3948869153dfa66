"""Host capacity and admission: one number (env > config > RAM), slots
capped by it, one gate across models, bounded waits, memory pressure, and
the /capacity and /metrics views."""
import json
import os
import re
import socket
import threading
import time

import pytest

from conftest import (MODEL, TEST_MODEL, assert_error, completion_body, open_stream_socket, raw_request,
                      read_until, server_args)

COMP = "/v1/completions"
GIB = 1 << 30


def _two_models(mkmodel):
    return ["--model", "a=" + TEST_MODEL, "--model", "b=" + mkmodel("cap-b.gguf", seed=31),
            "--preload", "a", "--preload", "b"]


def _args(models, capacity=1, queue=4, extra=()):
    cap = [] if capacity is None else ["--max-concurrent", str(capacity)]
    return models + ["--port", "0", "--threads", "1", "--ctx", "4096", "--parallel", "2",
                     "--queue-size", str(queue)] + cap + list(extra)


def _capacity(srv):
    r = srv.get("/capacity", timeout=5)
    assert r.status_code == 200, r.text
    return r.json()


def _model(cap, mid):
    return next(m for m in cap["models"] if m["id"] == mid)


def _wait_cap(srv, pred, timeout=5.0, what="capacity state"):
    deadline = time.monotonic() + timeout
    c = None
    while time.monotonic() < deadline:
        c = _capacity(srv)
        if pred(c):
            return c
        time.sleep(0.01)
    raise AssertionError("%s not reached within %.1f s: %s\nserver log:\n%s"
                         % (what, timeout, c, "\n".join(srv.stderr().splitlines()[-15:])))


def _metrics(srv):
    r = srv.get("/metrics", timeout=5)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"].startswith("text/plain"), r.headers
    out = {}
    for line in r.text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.fullmatch(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? (\S+)', line)
        assert m, "not Prometheus text: %r" % line
        out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def _stream(srv, model, tokens, prompt="Tell me a story"):
    return open_stream_socket(srv, COMP, completion_body(prompt, model=model, max_tokens=tokens, ignore_eos=True))


def _has_data(sock, wait=0.0):
    sock.setblocking(False)
    try:
        time.sleep(wait)
        try:
            d = sock.recv(65536, socket.MSG_PEEK)
        except BlockingIOError:
            return False
        return len(d) > 0
    finally:
        sock.setblocking(True)


def _expected_auto():
    with open("/proc/meminfo") as f:
        total = next(int(l.split()[1]) * 1024 for l in f if l.startswith("MemTotal:"))
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            lim = f.read().strip()
        if lim.isdigit() and int(lim) < total:
            total = int(lim)
    except OSError:
        pass
    return max(1, min(8, total // (8 * GIB)))


# ---------------------------------------------------------------- the number


def test_capacity_sources_and_slots(make_server):
    """config sets it; slots are min(parallel, capacity); auto follows RAM."""
    srv = make_server(server_args(parallel=4, capacity=3))
    srv.wait_loaded()
    c = _capacity(srv)
    assert c["host"] == 3 and c["host_source"] == "config"
    assert c["effective"] == 3 and c["effective_source"] == "host"
    assert c["in_use"] == 0 and c["queued"] == 0
    m = _model(c, MODEL)
    assert m["slots"] == 3 and m["slots_total"] == 3
    assert "3 slots, not 4" in srv.stderr()
    assert srv.model_health()["slots_total"] == 3

    auto = make_server(server_args(parallel=8, capacity=None))
    auto.wait_loaded()
    c = _capacity(auto)
    assert c["host_source"] == "auto"
    assert c["host"] == _expected_auto(), c
    assert _model(c, MODEL)["slots_total"] == min(8, c["host"])


def test_env_wins_and_bad_env_is_ignored(make_server):
    srv = make_server(server_args(capacity=2), env={"CORRAL_MAX_CONCURRENT": "5"})
    c = _capacity(srv)
    assert (c["host"], c["host_source"]) == (5, "env")

    bad = make_server(server_args(capacity=2), env={"CORRAL_MAX_CONCURRENT": "lots"})
    c = _capacity(bad)
    assert (c["host"], c["host_source"]) == (2, "config")
    log = bad.stderr()
    assert re.search(r'warn .*CORRAL_MAX_CONCURRENT="lots".*ignored', log), log

    zero = make_server(server_args(capacity=None), env={"CORRAL_MAX_CONCURRENT": "0"})
    c = _capacity(zero)
    assert (c["host"], c["host_source"]) == (_expected_auto(), "auto")
    assert 'CORRAL_MAX_CONCURRENT="0"' in zero.stderr()


def test_max_concurrent_flag_is_validated():
    from conftest import run_corral
    r = run_corral(["serve", "--model", "x=/nonexistent.gguf", "--max-concurrent", "-2"])
    assert r.returncode == 2 and "--max-concurrent" in r.stderr, r.stderr
    r = run_corral(["serve", "--model", "x=/nonexistent.gguf", "--queue-timeout", "soon"])
    assert r.returncode == 2 and "--queue-timeout" in r.stderr, r.stderr


# ---------------------------------------------------------------- one gate


def test_capacity_one_serialises_two_models(make_server, mkmodel):
    """Capacity 1, two models: b's request waits for a's stream to end and
    never decodes alongside it; it starts once a's [DONE] is out."""
    srv = make_server(_args(_two_models(mkmodel), capacity=1))
    srv.wait_loaded("a")
    srv.wait_loaded("b")
    a = _stream(srv, "a", 2000)
    b = None
    try:
        got = read_until(a, lambda x: x.count(b"data: ") >= 3)
        assert got.startswith(b"HTTP/1.1 200"), got[:200]
        b = _stream(srv, "b", 8, prompt="Waiting my turn")
        c = _wait_cap(srv, lambda c: _model(c, "b")["queued"] == 1, what="b queued")
        assert c["in_use"] == 1 and c["effective"] == 1
        assert _model(c, "a")["slots_busy"] == 1 and _model(c, "b")["slots_busy"] == 0
        # a stream that waits gets no headers yet
        assert not _has_data(b, 0.2)
        assert _metrics(srv)['corral_generated_tokens_total{model="b"}'] == 0
        rest = read_until(a, lambda x: b"data: [DONE]" in x)
        assert b"data: [DONE]" in got + rest
        t_done = time.monotonic()
        out = read_until(b, lambda x: b"data: [DONE]" in x)
        assert out.startswith(b"HTTP/1.1 200"), out[:300]
        assert time.monotonic() >= t_done
        assert b"data: [DONE]" in out
    finally:
        a.close()
        if b:
            b.close()
    c = _wait_cap(srv, lambda c: c["in_use"] == 0 and c["queued"] == 0, what="idle")
    assert c["admitted"] == 2
    m = _metrics(srv)
    assert m['corral_generated_tokens_total{model="a"}'] == 2000
    assert m['corral_generated_tokens_total{model="b"}'] == 8
    assert "waited" in srv.stderr()  # the wait (> 100 ms) was logged with the numbers


def test_freed_permit_goes_to_longest_waiting(make_server, mkmodel):
    """Capacity 1: requests queued on b, then c, then a (whose own slot
    frees) are served in arrival order across models."""
    models = ["--model", "a=" + TEST_MODEL, "--model", "b=" + mkmodel("cap-b.gguf", seed=31),
              "--model", "c=" + mkmodel("cap-c.gguf", seed=32), "--preload", "a", "--preload", "b",
              "--preload", "c"]
    srv = make_server(_args(models, capacity=1))
    for mid in "abc":
        srv.wait_loaded(mid)
    hold = _stream(srv, "a", 1500)
    done = {}
    threads = []

    def one(mid):
        r = srv.post(COMP, completion_body("order " + mid, model=mid, max_tokens=4), timeout=60)
        done[mid] = (time.monotonic(), r.status_code)

    try:
        read_until(hold, lambda x: x.count(b"data: ") >= 2)
        for i, mid in enumerate("bca"):
            t = threading.Thread(target=one, args=(mid,))
            t.start()
            threads.append(t)
            _wait_cap(srv, lambda c: c["queued"] == i + 1, what="%s queued" % mid)
        read_until(hold, lambda x: b"data: [DONE]" in x)
    finally:
        hold.close()
    for t in threads:
        t.join(60)
    assert all(code == 200 for _, code in done.values()), done
    # the order of admission, as the server logged each wait (all > 100 ms)
    order = re.findall(r"model (\w): a request waited", srv.stderr())
    assert order == ["b", "c", "a"], order


def test_full_queue_answers_503_at_once(make_server, mkmodel):
    srv = make_server(_args(_two_models(mkmodel), capacity=1, queue=1))
    srv.wait_loaded("a")
    srv.wait_loaded("b")
    a = _stream(srv, "a", 4000)
    b = None
    try:
        read_until(a, lambda x: x.count(b"data: ") >= 2)
        b = _stream(srv, "b", 4)
        _wait_cap(srv, lambda c: _model(c, "b")["queued"] == 1, what="b queued")
        for stream in (False, True):
            t0 = time.monotonic()
            r = srv.post(COMP, completion_body("no room", model="b", max_tokens=4, stream=stream), timeout=10)
            assert time.monotonic() - t0 < 1.0
            e = assert_error(r, 503, "server_error", code="server_overloaded")
            assert r.headers.get("Retry-After", "").isdigit()
            assert "'b'" in e["message"]
        assert _capacity(srv)["rejected_queue_full"] == 2
    finally:
        a.close()
        if b:
            b.close()
    _wait_cap(srv, lambda c: c["in_use"] == 0 and c["queued"] == 0, what="idle")


def test_max_wait_header(make_server, mkmodel):
    srv = make_server(_args(_two_models(mkmodel), capacity=1, queue=8))
    srv.wait_loaded("a")
    srv.wait_loaded("b")
    # with room, a 0 ms bound still runs
    r = srv.post(COMP, completion_body("now", model="b", max_tokens=2), headers={"X-Corral-Max-Wait": "0"})
    assert r.status_code == 200, r.text
    for bad in ("soon", "-5", "1.5", "99999999999"):
        r = srv.post(COMP, completion_body("x", model="b", max_tokens=2), headers={"X-Corral-Max-Wait": bad})
        assert_error(r, 400, "invalid_request_error", param="X-Corral-Max-Wait")
    a = _stream(srv, "a", 4000)
    try:
        read_until(a, lambda x: x.count(b"data: ") >= 2)
        for stream in (False, True):
            t0 = time.monotonic()
            r = srv.post(COMP, completion_body("bounded", model="b", max_tokens=4, stream=stream),
                         headers={"X-Corral-Max-Wait": "300"}, timeout=10)
            dt = time.monotonic() - t0
            assert 0.25 <= dt < 2.0, dt
            e = assert_error(r, 503, "server_error", code="queue_timeout")
            assert r.headers.get("Retry-After", "").isdigit()
            assert "300 ms" in e["message"]
        t0 = time.monotonic()
        r = srv.post(COMP, completion_body("no wait", model="a", max_tokens=4), headers={"X-Corral-Max-Wait": "0"})
        assert_error(r, 503, code="queue_timeout")
        assert time.monotonic() - t0 < 1.0
        assert _capacity(srv)["rejected_timeout"] == 3
        assert not a.recv(1, socket.MSG_PEEK) == b""  # the running stream is untouched
    finally:
        a.close()
    _wait_cap(srv, lambda c: c["in_use"] == 0 and c["queued"] == 0, what="idle")
    assert "gave up after" in srv.stderr()


def test_queue_timeout_default(make_server, mkmodel):
    # "a" streams for much longer than the test takes (until it is closed),
    # however fast this machine generates: a long context and ignore_eos
    models = ["--model", "a=" + mkmodel("cap-long.gguf", seed=7, ctx=65536), "--model",
              "b=" + mkmodel("cap-b.gguf", seed=31), "--preload", "a", "--preload", "b"]
    srv = make_server(_args(models, capacity=1, extra=["--queue-timeout", "1", "--ctx", "65536"]))
    srv.wait_loaded("a")
    srv.wait_loaded("b")
    assert _capacity(srv)["queue_timeout_ms"] == 1000
    a = _stream(srv, "a", 60000)
    try:
        read_until(a, lambda x: x.count(b"data: ") >= 2)
        t0 = time.monotonic()
        r = srv.post(COMP, completion_body("default bound", model="b", max_tokens=4), timeout=10)
        dt = time.monotonic() - t0
        assert_error(r, 503, code="queue_timeout")
        assert 0.9 <= dt < 3.0, dt
        # a request may ask for longer than the default
        res = {}
        t = threading.Thread(target=lambda: res.update(r=srv.post(
            COMP, completion_body("patient", model="b", max_tokens=4), headers={"X-Corral-Max-Wait": "20000"},
            timeout=30)))
        t.start()
        time.sleep(1.5)
        assert t.is_alive()
    finally:
        a.close()
    t.join(30)
    assert res["r"].status_code == 200, res["r"].text


def test_control_endpoints_answer_while_saturated(make_server, mkmodel):
    srv = make_server(_args(_two_models(mkmodel), capacity=1, queue=4))
    srv.wait_loaded("a")
    srv.wait_loaded("b")
    socks = [_stream(srv, "a", 4000)]
    try:
        read_until(socks[0], lambda x: x.count(b"data: ") >= 2)
        socks += [_stream(srv, m, 4000, prompt="queued %d" % i) for i, m in enumerate("abab")]
        _wait_cap(srv, lambda c: c["queued"] == 4, what="four queued")
        worst = 0.0
        for _ in range(10):
            for path in ("/health", "/capacity", "/metrics", "/admin/pool", "/v1/models"):
                t0 = time.monotonic()
                r = srv.get(path, timeout=5)
                worst = max(worst, time.monotonic() - t0)
                assert r.status_code == 200, (path, r.text)
        assert worst < 0.5, worst
        pool = srv.get("/admin/pool").json()
        assert pool["capacity"]["in_use"] == 1 and pool["capacity"]["queued"] == 4
        h = srv.health()
        assert h["capacity"] == {"host": 1, "effective": 1, "in_use": 1}
        m = _metrics(srv)
        assert m["corral_capacity_in_use"] == 1
        assert m['corral_queue_depth{model="a"}'] == 2 and m['corral_queue_depth{model="b"}'] == 2
    finally:
        for s in socks:
            s.close()
    _wait_cap(srv, lambda c: c["in_use"] == 0 and c["queued"] == 0, what="idle")


def test_stream_holds_its_permit_until_done(make_server, mkmodel):
    """A stream's permit is held until its last byte ([DONE]) has been sent,
    however slowly its client reads: whenever /capacity shows the permit
    free, all of the stream (through [DONE]) must already be on its way to
    the client, and the waiting request on the other model only starts
    then."""
    srv = make_server(_args(_two_models(mkmodel), capacity=1))
    srv.wait_loaded("a")
    srv.wait_loaded("b")
    a = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a slow reader with a small window
    a.settimeout(10)
    a.connect(("127.0.0.1", srv.port))
    body = json.dumps(completion_body("A long story", model="a", max_tokens=1000, ignore_eos=True, stream=True))
    a.sendall(raw_request(srv.port, "POST", COMP, body.encode()))
    res = {}
    t = None
    held = 0
    try:
        buf = read_until(a, lambda x: x.count(b"data: ") >= 2)
        t = threading.Thread(target=lambda: res.update(r=srv.post(
            COMP, completion_body("after you", model="b", max_tokens=3), timeout=60), t=time.monotonic()))
        t.start()
        _wait_cap(srv, lambda c: _model(c, "b")["queued"] == 1, what="b queued")
        while b"data: [DONE]" not in buf:
            c = _capacity(srv)
            if c["in_use"] == 1 and "r" not in res:
                held += 1
                time.sleep(0.02)
                d = a.recv(8192)
                assert d, "stream closed before [DONE]"
                buf += d
                continue
            # the permit moved on: a's stream must already be fully sent
            buf += read_until(a, lambda x: b"data: [DONE]" in x)
            assert b"data: [DONE]" in buf, "permit released before the stream was sent"
        t_done = time.monotonic()
    finally:
        a.close()
    t.join(30)
    assert held >= 3, held
    assert res["r"].status_code == 200, res["r"].text
    assert res["t"] <= t_done + 30
    _wait_cap(srv, lambda c: c["in_use"] == 0, what="permits back")


# ---------------------------------------------------------------- pressure


def _write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _psi(some, full=0.0):
    return ("some avg10=%.2f avg60=0.00 avg300=0.00 total=1\nfull avg10=%.2f avg60=0.00 avg300=0.00 total=1\n"
            % (some, full))


def _meminfo(total_kb, avail_kb):
    return "MemTotal:       %d kB\nMemFree:        %d kB\nMemAvailable:   %d kB\n" % (total_kb, avail_kb, avail_kb)


def test_memory_pressure_lowers_and_restores(make_server, tmp_path):
    psi, mem = str(tmp_path / "psi"), str(tmp_path / "meminfo")
    _write(psi, _psi(0.0))
    _write(mem, _meminfo(16 << 20, 12 << 20))
    srv = make_server(server_args(parallel=4, ctx=4096, capacity=4,
                                  extra=["--pressure-file", psi, "--meminfo-file", mem]))
    srv.wait_loaded()
    c = _capacity(srv)
    assert c["effective"] == 4 and c["pressure"]["level"] == "none"
    assert c["pressure"]["mem_available"] == 12 << 30

    _write(psi, _psi(45.0))
    c = _wait_cap(srv, lambda c: c["effective"] == 1, timeout=6, what="capacity down to 1")
    assert c["effective_source"] == "pressure" and c["pressure"]["level"] == "pressure"
    assert c["host"] == 4
    assert "memory pressure" in srv.stderr()

    # effective 1 admits one stream; the second waits although a slot is free
    s1 = _stream(srv, MODEL, 4000)
    s2 = None
    try:
        read_until(s1, lambda x: x.count(b"data: ") >= 2)
        s2 = _stream(srv, MODEL, 4, prompt="second")
        c = _wait_cap(srv, lambda c: c["queued"] == 1, what="second queued")
        assert _model(c, MODEL)["slots_busy"] == 1 and _model(c, MODEL)["slots_total"] == 4

        _write(psi, _psi(0.5))
        c = _wait_cap(srv, lambda c: c["effective"] >= 2, timeout=6, what="pressure easing")
        out = read_until(s2, lambda x: b"data: [DONE]" in x)
        assert b"data: [DONE]" in out
    finally:
        s1.close()
        if s2:
            s2.close()
    c = _wait_cap(srv, lambda c: c["effective"] == 4, timeout=10, what="capacity restored")
    assert c["effective_source"] == "host" and c["pressure"]["changes"] >= 4
    assert "pressure easing" in srv.stderr()

    # low MemAvailable alone is critical: straight to 1
    _write(mem, _meminfo(16 << 20, 400 << 10))
    c = _wait_cap(srv, lambda c: c["effective"] == 1, timeout=6, what="critical")
    assert c["pressure"]["level"] == "critical"
    m = _metrics(srv)
    assert m["corral_capacity_effective"] == 1 and m["corral_capacity_host"] == 4
    assert m["corral_host_memory_available_bytes"] == 400 << 20


# ---------------------------------------------------------------- metrics


def test_metrics_count_requests_and_tokens(make_server):
    srv = make_server(server_args(capacity=2))
    srv.wait_loaded()
    before = _metrics(srv)
    r = srv.post(COMP, completion_body("count me", max_tokens=7, ignore_eos=True))
    assert r.status_code == 200
    u = r.json()["usage"]
    assert srv.post(COMP, {"model": MODEL}).status_code == 400
    after = _metrics(srv)
    key = '{model="%s"}' % MODEL
    assert after["corral_requests_total" + key] - before["corral_requests_total" + key] == 1
    assert after["corral_generated_tokens_total" + key] - before["corral_generated_tokens_total" + key] == 7
    assert after["corral_prompt_tokens_total" + key] - before["corral_prompt_tokens_total" + key] == u["prompt_tokens"]
    assert after['corral_http_responses_total{code="400"}'] - before['corral_http_responses_total{code="400"}'] == 1
    assert after['corral_http_responses_total{code="200"}'] > before['corral_http_responses_total{code="200"}']
    assert after["corral_admitted_total"] - before["corral_admitted_total"] == 1
    assert after['corral_queue_wait_seconds_bucket{le="+Inf"}'] == after["corral_queue_wait_seconds_count"]
    assert after['corral_model_loaded' + key] == 1 and after["corral_model_loads_total"] == 1
    assert after["corral_capacity_host"] == 2
    assert after["corral_memory_budget_bytes"] > 0 and after["corral_process_resident_memory_bytes"] > 0
    assert after['corral_slots_total' + key] == 2
