"""Proxied models: a supervised child server (`command = ...`) and remote
upstream replicas (`upstream = URL, URL`).

A real llama-server child serves the tiny model end to end; the stand-in
fake_upstream.py plays the misbehaving servers (exits at start-up, never
healthy, crashes mid-stream, bad requests, 500s, wrong keys) and records
what it was sent, so the request rewrite and the abort of an abandoned
upstream request can be checked from the other side. Two real corral
servers serve as upstream replicas of a third to check balancing and
failover.
"""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import requests

from conftest import (MODEL, ROOT, TEST_MODEL, _die_with_parent, assert_error, chat_body, completion_body,
                      open_stream_socket, read_until, server_args, stream_request)

HERE = os.path.dirname(os.path.abspath(__file__))
FAKE = os.path.join(HERE, "fake_upstream.py")
PY = sys.executable
CHAT = "/v1/chat/completions"
COMP = "/v1/completions"


def _llama_server():
    """The llama-server binary: $CORRAL_LLAMA_SERVER, else build/bin/llama-server.
    Missing is a failure unless CORRAL_SKIP_LLAMA_SERVER=1."""
    p = os.environ.get("CORRAL_LLAMA_SERVER") or os.path.join(ROOT, "build", "bin", "llama-server")
    p = os.path.abspath(p)
    if os.path.isfile(p) and os.access(p, os.X_OK):
        return p
    if os.environ.get("CORRAL_SKIP_LLAMA_SERVER") == "1":
        pytest.skip("llama-server not found at %s (CORRAL_SKIP_LLAMA_SERVER=1)" % p)
    pytest.fail("llama-server not found at %s: build it (target llama-server) or set CORRAL_LLAMA_SERVER; "
                "set CORRAL_SKIP_LLAMA_SERVER=1 to skip this test" % p)


# ---------------------------------------------------------------- processes


def _gone(pid):
    """True once pid has exited. A zombie counts as gone: PID 1 in a
    container may never reap an orphan."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def _wait_gone(pid, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if _gone(pid):
            return True
        time.sleep(0.01)
    return _gone(pid)


def _free_port():
    """A loopback port nothing listens on (bound, then closed)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Fake:
    """One stand-in upstream started by the test (not by corral)."""

    def __init__(self, tmp, mode="ok", delay=0.01, require_key=None, name="fake"):
        self.record = os.path.join(tmp, name + ".record.jsonl")
        self.log = os.path.join(tmp, name + ".log")
        cmd = [PY, FAKE, "--port", "0", "--mode", mode, "--delay", str(delay), "--record", self.record]
        if require_key:
            cmd += ["--require-key", require_key]
        self._log = open(self.log, "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
                                     preexec_fn=_die_with_parent)
        line = self.proc.stdout.readline().decode()
        m = re.match(r"fake-upstream: pid (\d+) port (\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError("stand-in did not start: %r" % line)
        self.pid, self.port = int(m.group(1)), int(m.group(2))
        self.url = "http://127.0.0.1:%d" % self.port

    def records(self, event=None):
        try:
            with open(self.record) as f:
                recs = [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []
        return [r for r in recs if event is None or r["event"] == event]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.proc.stdout.close()
        self._log.close()


@pytest.fixture
def fakes(tmp_path):
    """Start stand-in upstreams: fakes(mode=..., ...); all killed at the end."""
    started = []

    def start(**kw):
        kw.setdefault("name", "fake%d" % len(started))
        f = Fake(str(tmp_path), **kw)
        started.append(f)
        return f

    yield start
    for f in started:
        f.stop()


# ---------------------------------------------------------------- corral


def _config(tmp_path, models, server=()):
    """Write a config: [server] with state_dir under tmp_path, then one
    [model.ID] section per entry of models {id: {key: value}}."""
    lines = ["[server]", "state_dir = %s" % (tmp_path / "state"), "threads = 1"] + list(server) + [""]
    for mid, keys in models.items():
        lines.append("[model.%s]" % mid)
        lines += ["%s = %s" % kv for kv in keys.items()]
        lines.append("")
    f = tmp_path / "corral.ini"
    f.write_text("\n".join(lines))
    return str(f)


def _serve(make_server, tmp_path, models, extra=(), capacity=8, server=()):
    f = _config(tmp_path, models, server)
    return make_server(["--config", f, "--port", "0", "--host", "127.0.0.1", "--max-concurrent", str(capacity)]
                       + list(extra))


def _fake_cmd(mode="ok", delay=0.01, extra=""):
    return "%s %s --port {port} --mode %s --delay %s %s" % (PY, FAKE, mode, delay, extra)


def _log_path(tmp_path, mid):
    return str(tmp_path / "state" / "logs" / ("%s.log" % mid))


def _admin(srv, mid):
    r = srv.get("/admin/models", timeout=5)
    assert r.status_code == 200, r.text
    for m in r.json()["data"]:
        if m["id"] == mid:
            return m
    raise AssertionError("model %s not in /admin/models: %s" % (mid, r.text))


def _wait_admin(srv, mid, pred, timeout=5.0, what="state"):
    deadline = time.monotonic() + timeout
    m = None
    while time.monotonic() < deadline:
        m = _admin(srv, mid)
        if pred(m):
            return m
        time.sleep(0.02)
    raise AssertionError("%s of %s not reached within %.1f s: %s\nserver log:\n%s"
                         % (what, mid, timeout, m, "\n".join(srv.stderr().splitlines()[-15:])))


def _metric(srv, name):
    r = srv.get("/metrics", timeout=5)
    assert r.status_code == 200, r.text
    for line in r.text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return 0.0


def _pid_from_log(path, timeout=5.0):
    """The pid the stand-in printed as its first line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(path) as f:
                m = re.search(r"fake-upstream: pid (\d+)", f.read())
            if m:
                return int(m.group(1))
        except FileNotFoundError:
            pass
        time.sleep(0.02)
    raise AssertionError("no pid line in %s" % path)


def _error_event(stream):
    """The {"error": ...} event of a finished stream (must be the last
    before [DONE])."""
    assert stream.status == 200, stream.raw[:500]
    assert stream.done, "no [DONE]: %r" % stream.raw[-300:]
    last = stream.chunks[-1]
    assert set(last) == {"error"}, "the last event is not an error: %r" % last
    return last["error"]


def _post_in_thread(srv, path, body, out, key, timeout=30):
    def run():
        try:
            out[key] = srv.post(path, body, timeout=timeout)
        except Exception as e:  # surfaced by the assertion on out[key]
            out[key] = e
    t = threading.Thread(target=run)
    t.start()
    return t


# ---------------------------------------------------------------- a real child


def test_llama_server_child(make_server, tmp_path):
    """A real llama-server as a supervised child serves chat, completions and
    streams under the client's model id; /admin/models shows its live pid,
    port and non-empty log; its 501 for embeddings comes back as a 502."""
    llama = _llama_server()
    srv = _serve(make_server, tmp_path, {"ll": {
        "command": "%s -m {model} --port {port} --host 127.0.0.1 -c 1024 -np 2 -t 1 --no-webui" % llama,
        "path": TEST_MODEL, "parallel": 2, "startup_timeout": "60s", "memory_estimate": "50M"}})
    assert _admin(srv, "ll")["status"] == "unloaded"  # lazy: nothing runs before the first request
    r = srv.post(CHAT, chat_body(model="ll", max_tokens=8), timeout=60)
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["model"] == "ll" and j["object"] == "chat.completion", j
    assert j["choices"][0]["message"]["content"], j
    assert j["usage"]["completion_tokens"] == 8 and j["usage"]["prompt_tokens"] > 0, j

    r = srv.post(COMP, completion_body(model="ll", max_tokens=6))
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["model"] == "ll" and j["object"] == "text_completion", j
    assert j["choices"][0]["text"] and j["choices"][0]["finish_reason"] == "length", j
    assert j["usage"]["completion_tokens"] == 6, j

    s = stream_request(srv, CHAT, chat_body(model="ll", max_tokens=5))
    assert s.status == 200 and s.done, s.raw[-300:]
    assert s.headers["Content-Type"].startswith("text/event-stream")
    assert len(s.chunks) >= 2 and all(c["model"] == "ll" for c in s.chunks), s.chunks
    assert all(c["object"] == "chat.completion.chunk" for c in s.chunks)
    assert s.text(chat=True) and s.finish_reason() == "length"

    m = _admin(srv, "ll")
    assert m["backend"] == "child" and m["status"] == "loaded", m
    assert m["memory_estimated"] == 50 << 20, m  # memory_estimate, not a GGUF estimate
    pid, port, log = m["pid"], m["port"], m["log"]
    assert not _gone(pid), "child pid %d is not running" % pid
    with open("/proc/%d/cmdline" % pid, "rb") as f:
        argv = f.read().split(b"\0")
    assert argv[0] == llama.encode() and b"--port" in argv and str(port).encode() in argv, argv
    assert TEST_MODEL.encode() in argv, argv  # {model} = the section's path
    assert log == _log_path(tmp_path, "ll") and os.path.getsize(log) > 0, log
    assert next(x for x in srv.health()["models"] if x["id"] == "ll")["backend"] == "child"
    # the child answers on its port (it is a real server)
    assert requests.get("http://127.0.0.1:%d/health" % port, timeout=5).status_code == 200

    # without --embeddings llama-server answers 501: an upstream error, named
    e = assert_error(srv.post("/v1/embeddings", {"model": "ll", "input": "hello"}), 502, code="upstream_error")
    assert "501" in e["message"] and "127.0.0.1:%d" % port in e["message"], e


# ---------------------------------------------------------------- child start-up


def test_child_exits_at_startup(make_server, tmp_path):
    """A child that exits at once fails the request that started it with 503
    naming its exit status and log; the log holds what it printed."""
    srv = _serve(make_server, tmp_path, {"ex": {"command": _fake_cmd("exit"), "startup_timeout": "20s"}})
    t0 = time.monotonic()
    r = srv.post(CHAT, chat_body(model="ex", max_tokens=4))
    log = _log_path(tmp_path, "ex")
    assert_error(r, 503, code="model_unavailable", in_message=("exited during start-up", "exit status 3", log))
    assert time.monotonic() - t0 < 5, "a start-up exit must be noticed at once"
    with open(log) as f:
        text = f.read()
    assert "mode exit: exiting with status 3 at start-up" in text, text
    m = _admin(srv, "ex")
    assert m["status"] == "failed" and "exit status 3" in m.get("error", ""), m
    assert "pid" not in m, m


def test_child_never_healthy(make_server, tmp_path):
    """A child that never answers 200 on /health is stopped after
    startup_timeout, the request gets 503, and the process is gone."""
    srv = _serve(make_server, tmp_path, {"sick": {"command": _fake_cmd("unhealthy"), "startup_timeout": "2s"}})
    t0 = time.monotonic()
    r = srv.post(COMP, completion_body(model="sick", max_tokens=4))
    took = time.monotonic() - t0
    log = _log_path(tmp_path, "sick")
    assert_error(r, 503, code="model_unavailable",
                 in_message=("did not answer 200 on /health within 2 s", "stopped it", log))
    assert 1.8 <= took <= 6, "failed after %.2f s, expected about 2 s" % took
    pid = _pid_from_log(log)
    assert _gone(pid), "the never-healthy child %d still runs" % pid
    with open(log) as f:
        assert "GET /health" in f.read()  # it was probed


def test_shutdown_stops_a_child_start_up(make_server, tmp_path):
    """SIGTERM while a child server starts: the start-up is abandoned, the
    request waiting for it gets 503 at once, the child is stopped (and not
    reported as a crash) and the process exits 0 well before the start-up
    timeout."""
    srv = _serve(make_server, tmp_path, {"slow": {"command": _fake_cmd("unhealthy"), "startup_timeout": "60s"}})
    res = {}
    t = threading.Thread(target=lambda: res.update(r=srv.post(COMP, completion_body(model="slow", max_tokens=4),
                                                              timeout=30)))
    t.start()
    log = _log_path(tmp_path, "slow")
    pid = _pid_from_log(log)
    t0 = time.monotonic()
    srv.proc.send_signal(signal.SIGTERM)
    t.join(10)
    rc = srv.proc.wait(timeout=10)
    assert time.monotonic() - t0 < 8
    assert rc == 0
    assert_error(res["r"], 503)
    assert _wait_gone(pid, 5), "the child %d outlived corral" % pid
    err = srv.stderr()
    assert "its server process exited" not in err and "keeps crashing" not in err, err[-1500:]


# ---------------------------------------------------------------- child crashes


def test_child_crash_mid_stream(make_server, tmp_path):
    """A child that crashes mid-stream ends the started stream with an error
    event then [DONE], fails the other request in flight with 502, and the
    next request respawns it with a new pid."""
    srv = _serve(make_server, tmp_path, {"c": {"command": _fake_cmd(delay=0.02), "parallel": 2,
                                               "startup_timeout": "20s"}})
    assert srv.post(CHAT, chat_body(model="c", max_tokens=2)).status_code == 200
    pid1 = _admin(srv, "c")["pid"]
    log = _log_path(tmp_path, "c")
    out = {}
    t = _post_in_thread(srv, COMP, completion_body("a long one", model="c", max_tokens=300), out, "slow")
    deadline = time.monotonic() + 5
    while _admin(srv, "c")["slots_busy"] < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _admin(srv, "c")["slots_busy"] == 1
    s = stream_request(srv, CHAT, chat_body("please CRASH now", model="c", max_tokens=20))
    err = _error_event(s)
    assert s.text(chat=True).startswith("c#0 c#1 "), s.raw[:500]  # what came before the crash
    assert err["code"] == "upstream_error", err
    for needle in ("its server process exited", "exit status 3", log):
        assert needle in err["message"], (needle, err)
    t.join(timeout=30)
    e = assert_error(out["slow"], 502, code="upstream_error", in_message=("exit status 3",))
    assert "its server process exited" in e["message"], e
    assert _gone(pid1)

    r = srv.post(CHAT, chat_body(model="c", max_tokens=3))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == "c#0 c#1 c#2 "
    pid2 = _admin(srv, "c")["pid"]
    assert pid2 != pid1 and not _gone(pid2), (pid1, pid2)


def test_child_killed_mid_stream(make_server, tmp_path):
    """kill -9 of the child during a slow stream reaches the client as an
    error event within 2 s; the next request starts a new child."""
    srv = _serve(make_server, tmp_path, {"k": {"command": _fake_cmd(delay=0.05), "startup_timeout": "20s"}})
    body = completion_body(model="k", max_tokens=200, stream=True)
    with requests.post(srv.url(COMP), json=body, stream=True, timeout=30) as r:
        assert r.status_code == 200
        it = r.iter_content(chunk_size=None)
        buf = b""
        while b"k#0" not in buf:
            buf += next(it)
        pid = _admin(srv, "k")["pid"]
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        for part in it:
            buf += part
        took = time.monotonic() - t0
    assert took < 2, "the stream ended %.2f s after the kill" % took
    events = [e for e in buf.decode().split("\n\n") if e.startswith("data: ")]
    assert events[-1] == "data: [DONE]", events[-3:]
    err = json.loads(events[-2][6:])["error"]
    assert err["code"] == "upstream_error", err
    assert "killed by signal 9" in err["message"] and _log_path(tmp_path, "k") in err["message"], err
    assert _wait_gone(pid, 2)

    r = srv.post(COMP, completion_body(model="k", max_tokens=2))
    assert r.status_code == 200, r.text
    pid2 = _admin(srv, "k")["pid"]
    assert pid2 != pid and not _gone(pid2)
    assert "killed by signal 9" in srv.stderr()


def test_child_crash_loop_cools_down(make_server, tmp_path):
    """Three crashes in a row put the model into a cooldown: the next request
    gets 503 without starting the child again."""
    srv = _serve(make_server, tmp_path, {"loop": {"command": _fake_cmd(delay=0.001), "startup_timeout": "20s"}})
    for i in range(3):
        r = srv.post(COMP, completion_body("CRASH %d" % i, model="loop", max_tokens=10))
        assert_error(r, 502, code="upstream_error", in_message=("exit status 3",))
    r = srv.post(COMP, completion_body(model="loop", max_tokens=2))
    # "keeps crashing (its server exited 3 times in 5 minutes)" for a request
    # that waited on the third crash; a later one gets the cooldown's message
    assert_error(r, 503, code="model_unavailable", in_message=("its server exited 3 times in 5 minutes",))
    assert _admin(srv, "loop")["status"] == "failed"
    with open(_log_path(tmp_path, "loop")) as f:
        starts = re.findall(r"fake-upstream: pid (\d+)", f.read())
    assert len(starts) == 3 and len(set(starts)) == 3, starts  # three children, no fourth


# ---------------------------------------------------------------- child lifetime


def test_child_idle_eviction(make_server, tmp_path):
    """keep_alive = 1s stops an idle child: its process exits and the model
    shows "unloaded"; the next request starts it again."""
    srv = _serve(make_server, tmp_path, {"idle": {"command": _fake_cmd(), "keep_alive": "1s",
                                                  "startup_timeout": "20s"}})
    assert srv.post(COMP, completion_body(model="idle", max_tokens=2)).status_code == 200
    t0 = time.monotonic()
    pid = _admin(srv, "idle")["pid"]
    m = _wait_admin(srv, "idle", lambda m: m["status"] == "unloaded", timeout=5, what="unloaded")
    assert "pid" not in m, m
    assert _wait_gone(pid, 4 - (time.monotonic() - t0)), "the idle child %d still runs" % pid
    assert time.monotonic() - t0 >= 0.9, "stopped before keep_alive ran out"
    r = srv.post(COMP, completion_body(model="idle", max_tokens=2))
    assert r.status_code == 200, r.text
    assert _admin(srv, "idle")["pid"] != pid


def test_child_memory_estimate_evicts(make_server, tmp_path):
    """memory_estimate counts against memory_budget: with room for one of
    two children, starting the second stops the first."""
    child = {"command": _fake_cmd(), "memory_estimate": "200M", "startup_timeout": "20s"}
    srv = _serve(make_server, tmp_path, {"a": child, "b": child}, extra=["--memory-budget", "300M"])
    assert srv.post(COMP, completion_body(model="a", max_tokens=2)).status_code == 200
    pid_a = _admin(srv, "a")["pid"]
    assert srv.get("/admin/pool").json()["memory_used"] == 200 << 20
    r = srv.post(COMP, completion_body(model="b", max_tokens=2))
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["text"] == "b#0 b#1 "
    assert _admin(srv, "a")["status"] == "unloaded" and _admin(srv, "b")["status"] == "loaded"
    assert _wait_gone(pid_a, 2), "the evicted child %d still runs" % pid_a
    pool = srv.get("/admin/pool").json()
    assert pool["memory_used"] == 200 << 20 and pool["evictions"] == 1, pool


def test_child_dies_with_corral(make_server, tmp_path):
    """kill -9 of corral takes its child server down with it (within 2 s)."""
    srv = _serve(make_server, tmp_path, {"pre": {"command": _fake_cmd(), "preload": "true",
                                                 "startup_timeout": "20s"}})
    srv.wait_loaded("pre")
    pid = _admin(srv, "pre")["pid"]
    assert not _gone(pid)
    try:
        srv.proc.kill()
        srv.proc.wait(timeout=5)
        assert _wait_gone(pid, 2), "child %d outlived corral" % pid
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


# ---------------------------------------------------------------- upstream replicas


def test_upstream_replicas_balance_and_failover(make_server, tmp_path):
    """Two corral servers as replicas of a third: requests spread over both;
    an abandoned stream is aborted upstream; with one replica killed every
    request still succeeds and that replica is marked unhealthy."""
    reps = [make_server(server_args(parallel=2, ctx=4096, capacity=4)) for _ in range(2)]
    for rep in reps:
        rep.wait_loaded()
    urls = [rep.base for rep in reps]
    front = _serve(make_server, tmp_path, {"front": {
        "upstream": "%s/v1, %s" % tuple(urls), "upstream_model": MODEL, "parallel": 4}})

    codes, lock = [], threading.Lock()

    def worker(n):
        for i in range(n):
            body = chat_body("hello %d" % i, model="front", max_tokens=4) if i % 2 else \
                completion_body("story %d" % i, model="front", max_tokens=4)
            r = front.post(CHAT if i % 2 else COMP, body)
            with lock:
                codes.append((r.status_code, r.json().get("model")))

    threads = [threading.Thread(target=worker, args=(5,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert codes == [(200, "front")] * 20, codes
    served = [_metric(rep, 'corral_requests_total{model="tiny"}') for rep in reps]
    assert all(n > 0 for n in served) and sum(served) == 20, served
    ups = {u["url"]: u for u in _admin(front, "front")["upstreams"]}
    assert set(ups) == set(urls), ups  # a trailing /v1 is dropped
    assert [ups[u]["requests"] for u in urls] == served, (ups, served)
    assert all(u["healthy"] and u["outstanding"] == 0 for u in ups.values()), ups
    assert _metric(front, 'corral_requests_total{model="front"}') == 20

    # an abandoned stream: the replica's slot is freed at once
    gen0 = [_metric(rep, 'corral_generated_tokens_total{model="tiny"}') for rep in reps]
    sock = open_stream_socket(front, COMP, completion_body(model="front", max_tokens=3500, ignore_eos=True))
    buf = read_until(sock, lambda b: b.count(b"data: ") >= 3)
    assert buf.startswith(b"HTTP/1.1 200") and buf.count(b"data: ") >= 3, buf[:300]
    busy = [rep.model_health()["slots_busy"] for rep in reps]
    assert sum(busy) == 1, busy
    sock.close()
    t0 = time.monotonic()
    while sum(rep.model_health()["slots_busy"] for rep in reps) and time.monotonic() - t0 < 2:
        time.sleep(0.02)
    assert sum(rep.model_health()["slots_busy"] for rep in reps) == 0, "the replica still generates"
    gen = [_metric(rep, 'corral_generated_tokens_total{model="tiny"}') - g for rep, g in zip(reps, gen0)]
    assert sum(gen) < 3000, "the abandoned stream ran to the end: %s tokens" % gen
    front.wait_idle("front")

    # kill one replica: every request goes to the other
    dead, alive = reps[1], reps[0]
    dead.proc.kill()
    dead.proc.wait(timeout=5)
    before = _metric(alive, 'corral_requests_total{model="tiny"}')
    codes = []
    threads = [threading.Thread(target=worker, args=(10,)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert codes == [(200, "front")] * 20, codes
    assert _metric(alive, 'corral_requests_total{model="tiny"}') - before == 20
    ups = {u["url"]: u for u in _admin(front, "front")["upstreams"]}
    assert ups[dead.base]["healthy"] is False and ups[alive.base]["healthy"] is True, ups
    assert "ejected" in front.stderr() and dead.base in front.stderr()


def test_upstream_abandoned_stream_closes_upstream(make_server, tmp_path, fakes):
    """A client that hangs up mid-stream makes corral drop the upstream
    connection: the stand-in sees its stream cut long before the end."""
    fake = fakes(delay=0.01)
    srv = _serve(make_server, tmp_path, {"up": {"upstream": fake.url}})
    sock = open_stream_socket(srv, CHAT, chat_body(model="up", max_tokens=500))
    buf = read_until(sock, lambda b: b"up#2" in b)
    assert b"up#2" in buf, buf[:300]
    sock.close()
    deadline = time.monotonic() + 2
    while not fake.records("end") and time.monotonic() < deadline:
        time.sleep(0.02)
    ends = fake.records("end")
    assert len(ends) == 1 and ends[0]["cut"] is True, ends
    assert ends[0]["chunks"] < 300, ends
    srv.wait_idle("up")


def test_upstream_error_mapping(make_server, tmp_path, fakes):
    """Upstream answers map to OpenAI errors: 400 keeps the upstream's
    message, 500 and 401 become 502 upstream_error, a refused connection
    fails fast, an unhealthy upstream gives 503, a failure event mid-stream
    ends the stream with an error event."""
    ok = fakes()
    keyed = fakes(require_key="s3cret")
    sick = fakes(mode="unhealthy")
    closed = _free_port()
    srv = _serve(make_server, tmp_path, {
        "up": {"upstream": ok.url},
        "keyed": {"upstream": keyed.url, "upstream_api_key": "s3cret"},
        "wrongkey": {"upstream": keyed.url, "upstream_api_key": "nope"},
        "nokey": {"upstream": keyed.url},
        "closed": {"upstream": "http://127.0.0.1:%d" % closed},
        "sick": {"upstream": sick.url},
    })
    assert_error(srv.post(CHAT, chat_body("this is BAD", model="up")), 400, etype="invalid_request_error",
                 in_message=("bad prompt from upstream",))
    assert_error(srv.post(COMP, completion_body("BAD", model="up")), 400, in_message=("bad prompt from upstream",))
    e = assert_error(srv.post(COMP, completion_body("FAIL500", model="up")), 502, code="upstream_error")
    assert ok.url in e["message"] and "500" in e["message"], e
    # a stream fails before its 200: a plain HTTP error, not an event
    s = stream_request(srv, CHAT, chat_body("FAIL500", model="up"))
    assert s.status == 502 and s.events == [], s.raw[:300]
    assert json.loads(s.raw)["error"]["code"] == "upstream_error"
    # the error stayed with the request: the replica is still healthy
    assert srv.post(COMP, completion_body(model="up", max_tokens=2)).status_code == 200

    # a failure event in the middle of a stream
    s = stream_request(srv, CHAT, chat_body("MIDERR", model="up", max_tokens=10))
    err = _error_event(s)
    assert err["code"] == "upstream_error" and "upstream failed mid-stream" in err["message"], err
    assert s.text(chat=True) == "up#0 up#1 "
    assert_error(srv.post(COMP, completion_body("MIDERR", model="up", max_tokens=10)), 502,
                 code="upstream_error", in_message=("upstream failed mid-stream",))

    r = srv.post(COMP, completion_body(model="keyed", max_tokens=3))
    assert r.status_code == 200, r.text
    auths = {rec["auth"] for rec in keyed.records("request")}
    assert "Bearer s3cret" in auths, auths
    for mid in ("wrongkey", "nokey"):
        e = assert_error(srv.post(COMP, completion_body(model=mid, max_tokens=3)), 502, code="upstream_error")
        assert "401" in e["message"] and "invalid api key" in e["message"], e
    assert {rec["auth"] for rec in keyed.records("request")} == {"Bearer s3cret", "Bearer nope", None}

    for attempt in range(2):  # the first fails the connection, the next finds no healthy replica
        t0 = time.monotonic()
        r = srv.post(COMP, completion_body(model="closed", max_tokens=3), timeout=10)
        assert time.monotonic() - t0 < 3
        assert r.status_code in (502, 503), r.text
        e = assert_error(r, r.status_code)
        assert e["code"] in ("upstream_error", "model_unavailable", "server_overloaded"), e
    assert _admin(srv, "closed")["upstreams"][0]["healthy"] is False

    r = srv.post(COMP, completion_body(model="sick", max_tokens=3), timeout=10)
    assert_error(r, 503)
    assert r.headers.get("Retry-After"), r.headers


def test_upstream_request_rewrite(make_server, tmp_path, fakes):
    """What goes upstream: upstream_model, always a stream with usage, no
    keep_alive; what comes back carries corral's ids and the client's model
    name. Embeddings are forwarded and parsed."""
    fake = fakes()
    srv = _serve(make_server, tmp_path, {"mine": {"upstream": fake.url + "/v1", "upstream_model": "theirs"}})
    r = srv.post(CHAT, chat_body("hi there", model="mine", max_tokens=3, keep_alive="5m", temperature=0.5))
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["model"] == "mine" and j["id"].startswith("chatcmpl-") and j["id"] != "fake-1", j
    assert j["choices"][0]["message"] == {"role": "assistant", "content": "theirs#0 theirs#1 theirs#2 "}, j
    assert j["choices"][0]["finish_reason"] == "length"
    assert j["usage"]["completion_tokens"] == 3 and j["usage"]["prompt_tokens"] == 2, j
    sent = fake.records("request")[-1]
    assert sent["path"] == CHAT
    b = sent["body"]
    assert b["model"] == "theirs" and b["stream"] is True, b
    assert b["stream_options"] == {"include_usage": True}, b
    assert "keep_alive" not in b, b
    assert b["messages"] == [{"role": "user", "content": "hi there"}] and b["max_tokens"] == 3, b
    assert b["temperature"] == 0.5, b

    s = stream_request(srv, COMP, completion_body("once", model="mine", max_tokens=4))
    assert s.status == 200 and s.done
    assert s.text(chat=False) == "theirs#0 theirs#1 theirs#2 theirs#3 "
    assert all(c["model"] == "mine" and c["id"].startswith("cmpl-") for c in s.chunks), s.chunks
    assert s.finish_reason() == "length"
    b = fake.records("request")[-1]["body"]
    assert b["model"] == "theirs" and b["prompt"] == "once" and b["stream"] is True, b

    r = srv.post("/v1/embeddings", {"model": "mine", "input": ["abc", "hello"]})
    assert r.status_code == 200, r.text
    j = r.json()
    assert j["model"] == "mine", j
    assert [d["embedding"] for d in j["data"]] == [[3.0, 0.0, 0.5, -0.25], [5.0, 1.0, 0.5, -0.25]], j
    b = fake.records("request")[-1]
    assert b["path"] == "/v1/embeddings" and b["body"]["model"] == "theirs", b
    assert "stream" not in b["body"], b
    m = _admin(srv, "mine")
    assert m["backend"] == "upstream" and m["upstreams"][0]["url"] == fake.url, m
    assert m["upstreams"][0]["requests"] == 3 and m["upstreams"][0]["failures"] == 0, m
    assert "pid" not in m


def test_upstream_slots_capped_by_capacity(make_server, tmp_path, fakes):
    """An upstream model's parallel is capped by the host capacity like any
    model's: --max-concurrent 1 leaves 1 slot of 4."""
    fake = fakes()
    srv = _serve(make_server, tmp_path, {"capped": {"upstream": fake.url, "parallel": 4, "preload": "true"}},
                 capacity=1)
    srv.wait_loaded("capped")
    cap = srv.get("/capacity").json()
    m = next(x for x in cap["models"] if x["id"] == "capped")
    assert m["slots"] == 1 and cap["host"] == 1, cap
    assert srv.model_health("capped")["slots_total"] == 1
    assert next(x for x in srv.health()["models"] if x["id"] == "capped")["backend"] == "upstream"
    assert "1 slots, not 4" in srv.stderr()
    assert srv.post(COMP, completion_body(model="capped", max_tokens=2)).status_code == 200
