"""Fixtures and helpers for corral's end-to-end tests.

Every server is a real `corral serve` child process on a free port
(--port 0; the port is read from the "corral: listening on port N" line).
Servers are always stopped in teardown (SIGTERM, then SIGKILL) and die with
the test process (PR_SET_PDEATHSIG), so a crashed or killed pytest leaves
nothing behind. Every network call has a timeout, and every test runs under
an alarm (E2E_TEST_TIMEOUT seconds, default 90) so nothing can hang the
suite.

Inference runs with --threads 1: on a loaded 2-core machine a 2-thread
ggml threadpool can slow down by orders of magnitude, and the tiny model is
fast enough on one thread.
"""
import ctypes
import json
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def _path(env, default):
    p = os.environ.get(env) or os.path.join(ROOT, default)
    return os.path.abspath(p)


CORRAL_BIN = _path("CORRAL_BIN", "build/corral")
CORRAL_MKMODEL = _path("CORRAL_MKMODEL", "build/corral-mkmodel")
TEST_MODEL = _path("CORRAL_TEST_MODEL", "build/models/tiny.gguf")

MODEL = "tiny"
TEST_TIMEOUT = int(os.environ.get("E2E_TEST_TIMEOUT", "90"))
HTTP_TIMEOUT = 30  # seconds, for any single HTTP call


# ---------------------------------------------------------------- guards


class E2ETimeout(Exception):
    pass


@pytest.fixture(autouse=True)
def _per_test_alarm():
    """Fail (not hang) a test that runs longer than TEST_TIMEOUT seconds."""

    def on_alarm(signum, frame):
        raise E2ETimeout("test exceeded %d s" % TEST_TIMEOUT)

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _die_with_parent():
    # PR_SET_PDEATHSIG = 1: the server gets SIGKILL if pytest dies.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


# ---------------------------------------------------------------- server


class Server:
    """One `corral serve` process."""

    def __init__(self, args, env=None, api_key=None, start_timeout=30):
        self.args = list(args)
        self.api_key = api_key
        self.tmp = tempfile.mkdtemp(prefix="corral-e2e-")
        self.out_path = os.path.join(self.tmp, "stdout")
        self.err_path = os.path.join(self.tmp, "stderr")
        full_env = dict(os.environ)
        for k in list(full_env):
            if k.startswith("CORRAL_") and k not in ("CORRAL_BIN", "CORRAL_MKMODEL", "CORRAL_TEST_MODEL"):
                del full_env[k]
        if env:
            full_env.update(env)
        self._out = open(self.out_path, "wb")
        self._err = open(self.err_path, "wb")
        self.proc = subprocess.Popen(
            [CORRAL_BIN, "serve"] + self.args,
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            env=full_env,
            preexec_fn=_die_with_parent,
        )
        self.port = None
        deadline = time.monotonic() + start_timeout
        while time.monotonic() < deadline:
            with open(self.out_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
            for line in text.splitlines():
                if line.startswith("corral: listening on port "):
                    self.port = int(line.rsplit(" ", 1)[1])
            if self.port:
                break
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        if not self.port:
            rc = self.stop()
            raise RuntimeError("server did not start (rc=%s): %s" % (rc, self.stderr()))
        self.base = "http://127.0.0.1:%d" % self.port

    # -- helpers
    def url(self, path):
        return self.base + path

    def headers(self, extra=None):
        h = {}
        if self.api_key:
            h["Authorization"] = "Bearer " + self.api_key
        if extra:
            h.update(extra)
        return h

    def get(self, path, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        kw["headers"] = self.headers(kw.get("headers"))
        return requests.get(self.url(path), **kw)

    def post(self, path, body=None, **kw):
        kw.setdefault("timeout", HTTP_TIMEOUT)
        kw["headers"] = self.headers(kw.get("headers"))
        if body is not None and "data" not in kw:
            kw["json"] = body
        return requests.post(self.url(path), **kw)

    def health(self):
        r = requests.get(self.url("/health"), timeout=5)
        assert r.status_code == 200, r.text
        return r.json()

    def model_health(self, model_id=MODEL):
        for m in self.health()["models"]:
            if m["id"] == model_id:
                return m
        raise AssertionError("model %s not in /health" % model_id)

    def wait_idle(self, model_id=MODEL, timeout=5.0):
        """Wait until the model has no busy slot, nothing queued and no
        request in flight."""
        deadline = time.monotonic() + timeout
        m = None
        while time.monotonic() < deadline:
            m = self.model_health(model_id)
            if m["slots_busy"] == 0 and m["queued"] == 0 and m["in_flight"] == 0:
                return m
            time.sleep(0.02)
        raise AssertionError("model did not go idle within %.1f s: %s" % (timeout, m))

    def wait_loaded(self, model_id=MODEL, timeout=30.0):
        """Wait until a model's background load has ended (loaded or failed)."""
        deadline = time.monotonic() + timeout
        m = None
        while time.monotonic() < deadline:
            m = self.model_health(model_id)
            if m["status"] in ("loaded", "failed"):
                return m
            time.sleep(0.02)
        raise AssertionError("model %s still %s after %.1f s" % (model_id, m and m["status"], timeout))

    def wait_for(self, pred, timeout=5.0, what="condition"):
        deadline = time.monotonic() + timeout
        m = None
        while time.monotonic() < deadline:
            m = self.model_health()
            if pred(m):
                return m
            time.sleep(0.01)
        tail = "\n".join(self.stderr().splitlines()[-15:])
        raise AssertionError("%s not reached within %.1f s: %s\nserver log:\n%s" % (what, timeout, m, tail))

    def stderr(self):
        try:
            self._err.flush()
        except Exception:
            pass
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def alive(self):
        return self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=10):
        """Stop the server; returns its exit code (SIGKILL after timeout)."""
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        for f in (self._out, self._err):
            try:
                f.close()
            except Exception:
                pass
        # Under -fsanitize builds a sanitizer report in the server's log is a
        # failure even if every request looked fine.
        assert_no_sanitizer_report(self.stderr(), "the server log")
        return self.proc.returncode


SANITIZER_MARKERS = ("runtime error:", "ERROR: AddressSanitizer", "ERROR: LeakSanitizer",
                     "WARNING: ThreadSanitizer")


def assert_no_sanitizer_report(log, where):
    """Fail with the report's text when log holds a sanitizer report."""
    for marker in SANITIZER_MARKERS:
        if marker in log:
            at = log.index(marker)
            raise AssertionError("sanitizer report in %s:\n%s" % (where, log[max(0, at - 200):at + 3000]))


def server_args(model_path=TEST_MODEL, model_id=MODEL, parallel=4, ctx=512, queue=8, capacity=8, extra=()):
    """Arguments for one model. Host capacity is pinned (default 8) so that
    the slot count follows `parallel` whatever this machine's RAM; capacity
    None leaves it to the server (auto-sized from RAM)."""
    cap = [] if capacity is None else ["--max-concurrent", str(capacity)]
    return [
        "--model", "%s=%s" % (model_id, model_path),
        "--port", "0", "--host", "127.0.0.1",
        "--parallel", str(parallel), "--ctx", str(ctx),
        "--threads", "1", "--queue-size", str(queue),
        "--preload", model_id,
    ] + cap + list(extra)


@pytest.fixture
def make_server():
    """Factory for servers with a special configuration; all are stopped at
    the end of the test."""
    started = []

    def make(args=None, **kw):
        s = Server(args if args is not None else server_args(), **kw)
        started.append(s)
        return s

    yield make
    for s in started:
        s.stop()


@pytest.fixture(scope="session")
def server():
    """The shared server: --parallel 4 --ctx 512 --queue-size 8."""
    s = Server(server_args(parallel=4, ctx=512, queue=8))
    yield s
    rc = s.stop()
    assert rc == 0, "shared server exited with %s; stderr:\n%s" % (rc, s.stderr()[-3000:])


@pytest.fixture(scope="session")
def mkmodel(tmp_path_factory):
    """Build an extra tiny model: mkmodel(name, seed=..., chat_template=...)."""
    d = tmp_path_factory.mktemp("models")

    def make(name, seed=11, chat_template=None, ctx=None, typ=None, vocab=None):
        """vocab: a vocabulary in llama.cpp's models/ (e.g. "qwen2": ggml-vocab-qwen2.gguf)."""
        out = str(d / name)
        cmd = [CORRAL_MKMODEL, "--out", out, "--dim", "64", "--layers", "2", "--ffn", "128",
               "--heads", "4", "--kv-heads", "2", "--seed", str(seed)]
        if chat_template is not None:
            cmd += ["--chat-template", chat_template]
        if ctx is not None:
            cmd += ["--ctx", str(ctx)]
        if typ is not None:
            cmd += ["--type", typ]
        if vocab is not None:
            cmd += ["--vocab", os.path.join(os.environ["CORRAL_VOCAB_DIR"], "ggml-vocab-%s.gguf" % vocab)]
        subprocess.run(cmd, check=True, timeout=60, capture_output=True)
        return out

    return make


def run_corral(args, env=None, timeout=20):
    """Run `corral ARGS` to completion; returns CompletedProcess (text)."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("CORRAL_")}
    if env:
        full_env.update(env)
    return subprocess.run([CORRAL_BIN] + list(args), env=full_env, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL,
                          preexec_fn=_die_with_parent)


# ---------------------------------------------------------------- SSE


def parse_sse(raw):
    """Split an SSE byte string into the list of its `data:` payloads
    (strings). Asserts the framing: every event is `data: ...` and ends with
    a blank line."""
    text = raw.decode("utf-8")
    assert text.endswith("\n\n"), "stream does not end with a blank line: %r" % text[-80:]
    events = []
    for block in text.split("\n\n")[:-1]:
        datas = []
        for line in block.split("\n"):
            if line.startswith(":") or line == "":
                continue
            assert line.startswith("data:"), "unexpected SSE line %r" % line
            datas.append(line[5:].lstrip(" ") if line.startswith("data: ") else line[5:])
        if datas:
            events.append("\n".join(datas))
    return events


class Stream:
    """A finished streaming response: raw events, parsed chunks, text."""

    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers
        self.raw = raw
        self.events = parse_sse(raw) if status == 200 else []
        self.done = bool(self.events) and self.events[-1] == "[DONE]"
        assert self.events.count("[DONE]") <= 1, "[DONE] sent more than once"
        self.chunks = [json.loads(e) for e in self.events if e != "[DONE]"]

    def text(self, chat):
        out = []
        for c in self.chunks:
            for ch in c.get("choices", []):
                if chat:
                    out.append(ch["delta"].get("content") or "")
                else:
                    out.append(ch.get("text") or "")
        return "".join(out)

    def finish_reason(self):
        frs = [ch["finish_reason"] for c in self.chunks for ch in c.get("choices", [])
               if ch.get("finish_reason") is not None]
        assert len(frs) == 1, "expected exactly one finish_reason, got %r" % frs
        return frs[0]

    def usage_chunks(self):
        return [c for c in self.chunks if c.get("usage")]


def stream_request(srv, path, body, timeout=HTTP_TIMEOUT, headers=None):
    """POST a streaming request and read it to the end."""
    body = dict(body)
    body["stream"] = True
    with requests.post(srv.url(path), json=body, headers=srv.headers(headers), stream=True,
                       timeout=timeout) as r:
        raw = b"".join(r.iter_content(chunk_size=None))
        return Stream(r.status_code, r.headers, raw)


# ---------------------------------------------------------------- raw HTTP


def raw_request(port, method, path, body=b"", headers=None, chunked=False):
    """Build the bytes of an HTTP/1.1 request."""
    h = {"Host": "127.0.0.1:%d" % port, "Connection": "close"}
    if body and not chunked:
        h["Content-Length"] = str(len(body))
    if chunked:
        h["Transfer-Encoding"] = "chunked"
    if body:
        h["Content-Type"] = "application/json"
    if headers:
        h.update(headers)
    head = "%s %s HTTP/1.1\r\n" % (method, path)
    head += "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n"
    data = head.encode()
    if chunked:
        if body:
            data += b"%x\r\n" % len(body) + body + b"\r\n"
        data += b"0\r\n\r\n"
    else:
        data += body
    return data


def open_stream_socket(srv, path, body, timeout=10):
    """Send a streaming request on a raw socket; returns the socket."""
    body = dict(body)
    body["stream"] = True
    data = json.dumps(body).encode()
    extra = {}
    if srv.api_key:
        extra["Authorization"] = "Bearer " + srv.api_key
    s = socket.create_connection(("127.0.0.1", srv.port), timeout=timeout)
    s.sendall(raw_request(srv.port, "POST", path, data, extra))
    return s


def read_until(sock, pred, limit=1 << 20):
    """Read from sock until pred(buffer) is true or the peer closes."""
    buf = b""
    while not pred(buf) and len(buf) < limit:
        try:
            d = sock.recv(65536)
        except socket.timeout:
            break
        if not d:
            break
        buf += d
    return buf


def assert_error(r, status, etype=None, param="__any__", code="__any__", in_message=()):
    """Check an OpenAI error response and return its error object."""
    assert r.status_code == status, "expected %d, got %d: %s" % (status, r.status_code, r.text[:500])
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert set(body) == {"error"}, body
    e = body["error"]
    assert set(e) >= {"message", "type", "param", "code"}, e
    assert isinstance(e["message"], str) and e["message"], e
    if etype is not None:
        assert e["type"] == etype, e
    if param != "__any__":
        assert e["param"] == param, e
    if code != "__any__":
        assert e["code"] == code, e
    for s in in_message:
        assert s in e["message"], (s, e)
    return e


def chat_body(content="Hello there", **kw):
    b = {"model": MODEL, "messages": [{"role": "user", "content": content}],
         "temperature": 0, "max_tokens": 24}
    b.update(kw)
    return b


def completion_body(prompt="Once upon a time", **kw):
    b = {"model": MODEL, "prompt": prompt, "temperature": 0, "max_tokens": 24}
    b.update(kw)
    return b
