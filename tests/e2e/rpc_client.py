"""Small JSON-RPC 2.0 clients for the end-to-end tests of corral's RPC
transports: WebSocket (GET /v1/rpc, through python3-websockets' legacy
asyncio API), stdio (`corral rpc --stdio` as a child process) and a raw
WebSocket socket for frames a well-behaved client library will not send.

Every wait has a timeout, so a server that does not answer fails a test
instead of hanging it.
"""
import asyncio
import base64
import json
import os
import queue
import re
import socket
import struct
import subprocess
import tempfile
import threading
import time

import websockets

from conftest import CORRAL_BIN, MODEL, TEST_MODEL, _die_with_parent, assert_no_sanitizer_report, server_args

RPC_TIMEOUT = 30  # seconds, for any single call


def ws_url(srv, path="/v1/rpc"):
    return "ws://127.0.0.1:%d%s" % (srv.port, path)


def id_key(v):
    """A hashable key for a JSON-RPC id (1 and 1.0 and True stay apart)."""
    return "%s:%s" % (type(v).__name__, json.dumps(v, sort_keys=True))


async def ws_connect(srv, headers=None, **kw):
    """Open a WebSocket to srv's /v1/rpc (no Origin header unless origin=)."""
    kw.setdefault("max_size", 1 << 26)
    kw.setdefault("open_timeout", 10)
    kw.setdefault("close_timeout", 3)
    kw.setdefault("ping_interval", None)
    return await websockets.connect(ws_url(srv), extra_headers=dict(headers or {}), **kw)


class RpcConn:
    """A multiplexed JSON-RPC connection over a websockets client.

    A reader task routes responses to the call that sent their id and
    stream.chunk notifications to per-id lists; everything else (responses
    with an unknown id, batch arrays, id-null errors) goes to `others`.
    It records protocol violations it can see: a chunk for a call that has
    already had its response (`late_chunks`) and a second response for the
    same id (`duplicates`)."""

    def __init__(self, ws):
        self.ws = ws
        self.pending = {}      # id key -> future of the response
        self.answered = set()  # id keys that got their response
        self.chunks = {}       # id key -> [chunk, ...]
        self.chunk_events = {}
        self.late_chunks = []
        self.duplicates = []
        self.others = asyncio.Queue()
        self.log = []          # every message, in arrival order
        self.closed = asyncio.Event()
        self._next = 0
        self.reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, srv, headers=None, **kw):
        return cls(await ws_connect(srv, headers, **kw))

    async def _read(self):
        try:
            async for raw in self.ws:
                msg = json.loads(raw)
                self.log.append(msg)
                self._route(msg)
        except websockets.ConnectionClosed:
            pass
        finally:
            self.closed.set()
            for f in self.pending.values():
                if not f.done():
                    f.set_exception(ConnectionError("connection closed (code %s) before the response"
                                                    % self.ws.close_code))
                    f.exception()  # a test that closed the socket on purpose need not await it

    def _route(self, msg):
        if isinstance(msg, dict) and msg.get("method") == "stream.chunk" and "id" not in msg:
            k = id_key(msg["params"]["id"])
            if k in self.answered:
                self.late_chunks.append(msg)
            self.chunks.setdefault(k, []).append(msg["params"]["chunk"])
            ev = self.chunk_events.get(k)
            if ev:
                ev.set()
            return
        if isinstance(msg, dict) and "id" in msg:
            k = id_key(msg["id"])
            f = self.pending.get(k)
            if f is not None:
                if f.done():
                    self.duplicates.append(msg)
                else:
                    f.set_result(msg)
                    self.answered.add(k)
                return
        self.others.put_nowait(msg)

    def new_id(self):
        self._next += 1
        return "auto-%d" % self._next

    async def send(self, obj):
        await self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))

    async def start(self, method, params=None, id="__auto__"):
        """Send a request; returns the future of its response."""
        if id == "__auto__":
            id = self.new_id()
        k = id_key(id)
        assert k not in self.pending, "id %r reused" % (id,)
        f = asyncio.get_running_loop().create_future()
        self.pending[k] = f
        msg = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            msg["params"] = params
        await self.send(msg)
        return f

    async def call(self, method, params=None, id="__auto__", timeout=RPC_TIMEOUT):
        f = await self.start(method, params, id)
        return await asyncio.wait_for(f, timeout)

    async def notify(self, method, params=None):
        msg = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            msg["params"] = params
        await self.send(msg)

    def chunks_of(self, id):
        return self.chunks.get(id_key(id), [])

    async def wait_chunks(self, id, n, timeout=10):
        """Wait until call `id` has had at least n chunks."""
        k = id_key(id)
        deadline = time.monotonic() + timeout
        while len(self.chunks.get(k, [])) < n:
            ev = self.chunk_events.setdefault(k, asyncio.Event())
            ev.clear()
            left = deadline - time.monotonic()
            if left <= 0 or self.closed.is_set():
                raise AssertionError("call %r: %d chunks, wanted %d" % (id, len(self.chunks.get(k, [])), n))
            try:
                await asyncio.wait_for(ev.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def next_other(self, timeout=10):
        return await asyncio.wait_for(self.others.get(), timeout)

    async def close(self):
        await self.ws.close()
        try:
            await asyncio.wait_for(self.reader, 5)
        except Exception:
            pass


def run_async(coro, timeout=60):
    """Run a coroutine to completion under a hard bound."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


# ---------------------------------------------------------------- stdio


class StdioRpc:
    """`corral rpc --stdio ARGS` as a child: one JSON message per line."""

    def __init__(self, args, env=None):
        self.tmp = tempfile.mkdtemp(prefix="corral-rpc-stdio-")
        self.err_path = os.path.join(self.tmp, "stderr")
        self._err = open(self.err_path, "wb")
        full_env = {k: v for k, v in os.environ.items()
                    if not k.startswith("CORRAL_") or k in ("CORRAL_BIN", "CORRAL_MKMODEL", "CORRAL_TEST_MODEL")}
        if env:
            full_env.update(env)
        self.proc = subprocess.Popen([CORRAL_BIN, "rpc", "--stdio"] + list(args), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self._err, env=full_env,
                                     preexec_fn=_die_with_parent)
        self.lines = []  # every raw stdout line (bytes, without the newline)
        self.q = queue.Queue()
        self.eof = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        try:
            for line in self.proc.stdout:
                self.lines.append(line)
                self.q.put(line)
        finally:
            self.eof.set()
            self.q.put(None)

    def send_line(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()

    def send(self, obj):
        self.send_line(json.dumps(obj))

    def recv(self, timeout=RPC_TIMEOUT):
        """The next message (parsed); AssertionError on timeout or EOF."""
        try:
            line = self.q.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError("no message from corral rpc --stdio within %s s; stderr:\n%s"
                                 % (timeout, self.stderr()[-2000:]))
        if line is None:
            self.q.put(None)
            raise AssertionError("corral rpc --stdio closed stdout; stderr:\n%s" % self.stderr()[-2000:])
        assert line.endswith(b"\n"), line
        return json.loads(line)

    def call(self, method, params=None, id=1, timeout=RPC_TIMEOUT):
        """Send a request, read up to its response: (chunks, response).
        Any other message in between fails the call."""
        msg = {"jsonrpc": "2.0", "id": id, "method": method}
        if params is not None:
            msg["params"] = params
        self.send(msg)
        chunks = []
        deadline = time.monotonic() + timeout
        while True:
            m = self.recv(max(0.1, deadline - time.monotonic()))
            if isinstance(m, dict) and m.get("method") == "stream.chunk":
                assert m["params"]["id"] == id, m
                chunks.append(m["params"]["chunk"])
                continue
            assert isinstance(m, dict) and m.get("id") == id, "expected the response to %r, got %r" % (id, m)
            return chunks, m

    def close_stdin(self):
        self.proc.stdin.close()

    def wait(self, timeout=30):
        return self.proc.wait(timeout=timeout)

    def stderr(self):
        try:
            self._err.flush()
        except Exception:
            pass
        with open(self.err_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except Exception:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        try:
            self._err.close()
        except Exception:
            pass
        assert_no_sanitizer_report(self.stderr(), "the stdio server's log")  # as for a served process
        return self.proc.returncode


# ---------------------------------------------------------------- raw WebSocket


def raw_ws_open(port, headers=None, timeout=10):
    """Do a WebSocket handshake on a plain socket; returns (sock, status, head)."""
    key = base64.b64encode(os.urandom(16)).decode()
    h = {"Host": "127.0.0.1:%d" % port, "Upgrade": "websocket", "Connection": "Upgrade",
         "Sec-WebSocket-Key": key, "Sec-WebSocket-Version": "13"}
    if headers:
        h.update(headers)
    req = "GET /v1/rpc HTTP/1.1\r\n" + "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n"
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(req.encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        d = s.recv(4096)
        if not d:
            break
        buf += d
    head, _, rest = buf.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1]) if head else 0
    s_wrapped = _RawWs(s, rest)
    return s_wrapped, status, head.decode("latin-1")


class _RawWs:
    def __init__(self, sock, pending=b""):
        self.sock = sock
        self.buf = pending

    def send_frame(self, opcode, payload, fin=True, mask=True):
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        mbit = 0x80 if mask else 0
        if n < 126:
            hdr = struct.pack("!BB", b0, mbit | n)
        elif n < 65536:
            hdr = struct.pack("!BBH", b0, mbit | 126, n)
        else:
            hdr = struct.pack("!BBQ", b0, mbit | 127, n)
        if mask:
            key = os.urandom(4)
            payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
            hdr += key
        self.sock.sendall(hdr + payload)

    def _need(self, n):
        while len(self.buf) < n:
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("peer closed the socket without a close frame")
            self.buf += d
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def recv_frame(self):
        """(opcode, payload) of the next frame from the server (unmasked)."""
        b0, b1 = self._need(2)
        n = b1 & 0x7F
        if n == 126:
            (n,) = struct.unpack("!H", self._need(2))
        elif n == 127:
            (n,) = struct.unpack("!Q", self._need(8))
        assert not (b1 & 0x80), "the server masked a frame"
        return b0 & 0x0F, self._need(n)

    def recv_close_code(self):
        """Read frames up to the server's close frame; returns its code."""
        while True:
            op, payload = self.recv_frame()
            if op == 0x8:
                return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None

    def close(self):
        try:
            self.sock.close()
        except Exception:
            pass


# ---------------------------------------------------------------- checks the rpc tests share

KEY = "rpc-user-key"
ADMIN_KEY = "rpc-admin-key"
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
           "Sec-WebSocket-Version": "13"}
# a call that would run for most of a minute on the long model
LONG = dict(max_tokens=100000, ignore_eos=True)



def long_args(path, queue=2, extra=()):
    """One slot, host capacity 1, 32k context."""
    return server_args(model_path=path, parallel=1, ctx=32768, queue=queue, capacity=1,
                       extra=["--shutdown-timeout", "2s"] + list(extra))


def small_args(parallel=1, queue=4, capacity=None, extra=()):
    return server_args(parallel=parallel, ctx=512, queue=queue, capacity=capacity or parallel, extra=extra)


def listening_sockets(pid):
    """The TCP/TCP6 sockets in LISTEN state that process pid holds."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            link = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and cols[9] in inodes:
                    out.append((table, cols[1]))
    return out


def stdio_args(parallel=1, ctx=512, queue=4, extra=()):
    return ["--model", "%s=%s" % (MODEL, TEST_MODEL), "--parallel", str(parallel), "--ctx", str(ctx),
            "--threads", "1", "--queue-size", str(queue), "--max-concurrent", str(parallel),
            "--preload", MODEL] + list(extra)


def strip(obj, keys=("id", "created")):
    return {k: v for k, v in obj.items() if k not in keys}


def rpc_error(resp, code, id="__any__"):
    """Check a JSON-RPC error response; returns its error object. code None: any code."""
    assert isinstance(resp, dict), resp
    assert resp.get("jsonrpc") == "2.0", resp
    assert "error" in resp and "result" not in resp, resp
    if id != "__any__":
        assert "id" in resp and resp["id"] == id and type(resp["id"]) is type(id), (id, resp)
    e = resp["error"]
    assert isinstance(e.get("code"), int) and isinstance(e.get("message"), str) and e["message"], e
    if code is not None:
        assert e["code"] == code, "expected error %d, got %r" % (code, resp)
    return e


def openai_data(e, status=None, code="__any__", param="__any__", etype=None):
    """error.data: the OpenAI error object's fields plus the HTTP status."""
    d = e.get("data")
    assert isinstance(d, dict), "error without data: %r" % e
    assert set(d) >= {"message", "type", "code", "param", "status"}, d
    assert isinstance(d["message"], str) and d["message"] and isinstance(d["type"], str), d
    assert isinstance(d["status"], int), d
    if status is not None:
        assert d["status"] == status, d
    if code != "__any__":
        assert d["code"] == code, d
    if param != "__any__":
        assert d["param"] == param, d
    if etype is not None:
        assert d["type"] == etype, d
    return d


def check_overloaded(resp, id="__any__", code="__any__"):
    e = rpc_error(resp, -32000, id)
    d = openai_data(e, code=code)
    assert d["retry_after_ms"] == 1000, e
    assert d["status"] in (429, 503), e
    return e


def ok(resp, id="__any__"):
    assert isinstance(resp, dict) and resp.get("jsonrpc") == "2.0", resp
    assert "result" in resp and "error" not in resp, resp
    if id != "__any__":
        assert resp["id"] == id and type(resp["id"]) is type(id), (id, resp)
    return resp["result"]


def check_stream(chunks, resp, chat=True, include_usage=False):
    """A finished RPC stream: its chunks (SSE objects) and the final result.
    Returns the streamed text."""
    res = ok(resp)
    assert set(res) >= {"id", "finish_reason", "usage"}, res
    assert res["finish_reason"] in ("stop", "length"), res
    u = res["usage"]
    assert set(u) >= {"prompt_tokens", "completion_tokens", "total_tokens"}, u
    assert u["total_tokens"] == u["prompt_tokens"] + u["completion_tokens"], u
    assert chunks, "a stream without chunks: %r" % resp
    obj = "chat.completion.chunk" if chat else "text_completion"
    for c in chunks:
        assert c["object"] == obj and c["id"] == res["id"], (c, res)
    if chat:
        assert res["id"].startswith("chatcmpl-"), res
        assert chunks[0]["choices"][0]["delta"].get("role") == "assistant", chunks[0]
    frs = [ch["finish_reason"] for c in chunks for ch in c.get("choices", []) if ch.get("finish_reason") is not None]
    assert frs == [res["finish_reason"]], (frs, res)
    usage = [c for c in chunks if c.get("usage")]
    if include_usage:
        assert len(usage) == 1 and usage[0] is chunks[-1], chunks[-3:]
        assert usage[0]["choices"] == [], usage[0]
        for k in ("prompt_tokens", "completion_tokens", "total_tokens"):
            assert usage[0]["usage"][k] == u[k], (usage[0], u)
    else:
        assert not usage, usage
    if chat:
        return "".join(ch["delta"].get("content") or "" for c in chunks for ch in c["choices"])
    return "".join(ch.get("text") or "" for c in chunks for ch in c["choices"])


def shape(v):
    """The structure of a JSON value: keys and types, not the numbers."""
    if isinstance(v, dict):
        return {k: shape(x) for k, x in v.items()}
    if isinstance(v, list):
        return [shape(x) for x in v]
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    return type(v).__name__


def transport_count(metrics_text, transport):
    m = re.search(r'^corral_transport_requests_total\{transport="%s"\} (\d+)$' % transport, metrics_text, re.M)
    assert m, "no transport counter for %s in:\n%s" % (transport, metrics_text[:3000])
    return int(m.group(1))


async def in_thread(fn, *a, **kw):
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*a, **kw))


