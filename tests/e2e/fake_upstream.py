#!/usr/bin/python3
"""A small OpenAI-compatible stand-in server for corral's proxy tests.

Run as a supervised child (`command = python3 fake_upstream.py --port {port}
--mode ok`) or as a remote upstream started by a test (`--port 0`: the port
it bound is printed). Standard library only.

At start it prints one line to stdout (and flushes it):

    fake-upstream: pid PID port PORT mode MODE

Modes:
  ok         GET /health answers 200. POST /v1/chat/completions and
             /v1/completions stream max_tokens chunks (--delay seconds apart),
             each "MODEL#i " where MODEL is the "model" received, then a
             finish_reason chunk, a usage chunk and [DONE] (a whole JSON
             answer when "stream" is not true). POST /v1/embeddings answers
             deterministic vectors. A prompt or message containing
               BAD     -> 400 {"error": {"message": "bad prompt from upstream"}}
               FAIL500 -> 500
               CRASH   -> os._exit(3) after 3 chunks (and --settle seconds)
               MIDERR  -> an {"error": ...} SSE event after 2 chunks (and
                          --settle seconds)
  exit       print a line and exit with status 3 at once.
  unhealthy  answer 503 to everything, forever.

--record FILE appends one JSON line per request received
({"event": "request", "path", "body", "auth"}) and one when its answer
ended ({"event": "end", "path", "chunks", "cut"}; cut = the client closed
the connection before the stream was over).
--require-key KEY answers 401 to requests without "Authorization: Bearer KEY".
"""
import argparse
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ARGS = None
RECORD_LOCK = threading.Lock()


def record(obj):
    if not ARGS.record:
        return
    line = json.dumps(obj, sort_keys=True) + "\n"
    with RECORD_LOCK:
        with open(ARGS.record, "a") as f:
            f.write(line)
            f.flush()


def prompt_text(path, body):
    """All the text the client sent, as one string."""
    if path.endswith("/chat/completions"):
        parts = []
        for m in body.get("messages") or []:
            c = m.get("content") if isinstance(m, dict) else None
            if isinstance(c, str):
                parts.append(c)
            elif isinstance(c, list):
                parts += [p.get("text", "") for p in c if isinstance(p, dict)]
        return "\n".join(parts)
    p = body.get("prompt", "")
    if isinstance(p, list):
        return "\n".join(x for x in p if isinstance(x, str))
    return p if isinstance(p, str) else ""


class Cut(Exception):
    """The client went away."""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-upstream/1"

    def log_message(self, fmt, *args):
        sys.stderr.write("fake-upstream: %s\n" % (fmt % args))
        sys.stderr.flush()

    # ---------------------------------------------------------- replies

    def _json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self.wfile.flush()

    def _error(self, status, message, etype="invalid_request_error"):
        self._json(status, {"error": {"message": message, "type": etype, "param": None, "code": None}})

    def _chunk(self, data):
        """One HTTP chunk (Transfer-Encoding: chunked)."""
        try:
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError) as e:
            raise Cut() from e

    def _event(self, obj):
        payload = obj if isinstance(obj, str) else json.dumps(obj)
        self._chunk(("data: %s\n\n" % payload).encode())

    # ---------------------------------------------------------- GET

    def do_GET(self):
        if ARGS.mode == "unhealthy":
            return self._error(503, "not ready yet", "server_error")
        if self.path == "/health":
            return self._json(200, {"status": "ok"})
        if self.path == "/v1/models":
            return self._json(200, {"object": "list", "data": [{"id": "fake", "object": "model"}]})
        return self._error(404, "no such endpoint: " + self.path, "not_found_error")

    # ---------------------------------------------------------- POST

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            body = json.loads(raw or b"{}")
        except ValueError:
            body = None
        auth = self.headers.get("Authorization")
        record({"event": "request", "path": self.path, "body": body, "auth": auth})
        if ARGS.mode == "unhealthy":
            return self._error(503, "not ready yet", "server_error")
        if ARGS.require_key and auth != "Bearer " + ARGS.require_key:
            return self._error(401, "invalid api key", "authentication_error")
        if not isinstance(body, dict):
            return self._error(400, "the body is not a JSON object")
        if self.path == "/v1/embeddings":
            return self._embeddings(body)
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            return self._error(404, "no such endpoint: " + self.path, "not_found_error")
        text = prompt_text(self.path, body)
        if "BAD" in text:
            return self._error(400, "bad prompt from upstream")
        if "FAIL500" in text:
            return self._error(500, "internal failure from upstream", "server_error")
        chat = self.path == "/v1/chat/completions"
        model = str(body.get("model"))
        n_tok = int(body.get("max_tokens") or 16)
        pieces = ["%s#%d " % (model, i) for i in range(n_tok)]
        usage = {"prompt_tokens": len(text.split()), "completion_tokens": n_tok,
                 "total_tokens": len(text.split()) + n_tok}
        if body.get("stream") is not True:
            return self._whole(chat, model, pieces, usage)
        self._stream(chat, model, pieces, usage, text)

    def _whole(self, chat, model, pieces, usage):
        text = "".join(pieces)
        if chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
        else:
            choice = {"index": 0, "text": text, "finish_reason": "length"}
        self._json(200, {"id": "fake-1", "object": "chat.completion" if chat else "text_completion",
                         "created": int(time.time()), "model": model, "choices": [choice], "usage": usage})

    def _stream(self, chat, model, pieces, usage, text):
        obj = "chat.completion.chunk" if chat else "text_completion"
        base = {"id": "fake-stream", "object": obj, "created": int(time.time()), "model": model}

        def choice(piece, finish=None):
            if chat:
                return {"index": 0, "delta": {"content": piece} if piece is not None else {},
                        "finish_reason": finish}
            return {"index": 0, "text": piece or "", "finish_reason": finish}

        sent = 0
        cut = False
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.flush()
            if chat:
                self._event(dict(base, choices=[{"index": 0, "delta": {"role": "assistant"},
                                                 "finish_reason": None}]))
            for p in pieces:
                if (sent == 3 and "CRASH" in text) or (sent == 2 and "MIDERR" in text):
                    # let what was sent reach corral's client first, so that
                    # the stream has surely started there
                    time.sleep(ARGS.settle)
                if sent == 3 and "CRASH" in text:
                    sys.stderr.write("fake-upstream: CRASH requested, exiting with status 3\n")
                    sys.stderr.flush()
                    os._exit(3)
                if sent == 2 and "MIDERR" in text:
                    self._event({"error": {"message": "upstream failed mid-stream", "type": "server_error"}})
                    self._event("[DONE]")
                    self._chunk(b"")
                    return
                time.sleep(ARGS.delay)
                self._event(dict(base, choices=[choice(p)]))
                sent += 1
            self._event(dict(base, choices=[choice(None if chat else "", "length")]))
            self._event(dict(base, choices=[], usage=usage))
            self._event("[DONE]")
            self._chunk(b"")
        except Cut:
            cut = True
            self.close_connection = True
        finally:
            record({"event": "end", "path": self.path, "chunks": sent, "cut": cut})

    def _embeddings(self, body):
        inp = body.get("input")
        items = inp if isinstance(inp, list) else [inp]
        data = []
        for i, s in enumerate(items):
            s = str(s)
            data.append({"object": "embedding", "index": i,
                         "embedding": [float(len(s)), float(i), 0.5, -0.25]})
        self._json(200, {"object": "list", "model": str(body.get("model")), "data": data,
                         "usage": {"prompt_tokens": len(items), "total_tokens": len(items)}})


def main():
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--mode", choices=("ok", "exit", "unhealthy"), default="ok")
    ap.add_argument("--delay", type=float, default=0.01, help="seconds between stream chunks")
    ap.add_argument("--settle", type=float, default=0.3,
                    help="seconds to wait before a CRASH or MIDERR failure")
    ap.add_argument("--record", help="append a JSON line per request to this file")
    ap.add_argument("--require-key", help="answer 401 without Authorization: Bearer KEY")
    ARGS = ap.parse_args()

    if ARGS.mode == "exit":
        print("fake-upstream: pid %d mode exit: exiting with status 3 at start-up" % os.getpid(), flush=True)
        sys.exit(3)
    srv = ThreadingHTTPServer((ARGS.host, ARGS.port), Handler)
    srv.daemon_threads = True
    print("fake-upstream: pid %d port %d mode %s" % (os.getpid(), srv.server_address[1], ARGS.mode), flush=True)
    try:
        srv.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
