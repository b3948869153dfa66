#!/usr/bin/python3
"""soak.py - mixed load against one running corral for a long time, with
RSS and open file descriptors sampled every few seconds; bench/soak.sh
starts the server and calls this.

Workers pick, by weight: streams read to the end, streams dropped midway,
whole completions, chats, embeddings, bad requests (malformed JSON, unknown
models, wrong types, a foreign Origin, an admin POST that is not JSON),
half-closed and slow incomplete requests, requests to a third model that
swaps the herd (room for two), and admin loads and forced unloads.

The report: requests by outcome, the samples (CSV), and the slope of RSS
and of open fds over the samples after warm-up, fitted by least squares and
given as growth over the measured stretch. It exits 1 if the server died,
answered 5xx other than 503, failed to answer, or grew beyond the bounds.
"""
import argparse
import json
import os
import random
import socket
import sys
import threading
import time

import requests

ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--pid", type=int, required=True)
ap.add_argument("--duration", type=float, default=3600)
ap.add_argument("--interval", type=float, default=10)
ap.add_argument("--warmup", type=float, default=None, help="seconds left out of the fit (default: a sixth)")
ap.add_argument("--workers", type=int, default=6)
ap.add_argument("--models", default="a,b,c")
ap.add_argument("--out", required=True)
ap.add_argument("--seed", type=int, default=1)
ap.add_argument("--rss-bound-mib", type=float, default=16.0, help="allowed RSS growth after warm-up")
ap.add_argument("--fd-bound", type=float, default=4.0, help="allowed open-fd growth after warm-up")
args = ap.parse_args()

URL = args.url.rstrip("/")
HOST, PORT = URL.split("//")[1].split(":")[0], int(URL.rsplit(":", 1)[1])
MODELS = args.models.split(",")
END = time.monotonic() + args.duration
WARMUP = args.warmup if args.warmup is not None else args.duration / 6

lock = threading.Lock()
counts = {}
failures = []


def note(kind, outcome):
    with lock:
        counts.setdefault(kind, {}).setdefault(outcome, 0)
        counts[kind][outcome] += 1


def bad(kind, what):
    with lock:
        if len(failures) < 50:
            failures.append("%s: %s" % (kind, what))
    note(kind, "FAILED")


def check(kind, r, ok=(200,)):
    if r.status_code in ok or r.status_code == 503:
        note(kind, str(r.status_code))
    elif 400 <= r.status_code < 500:
        note(kind, str(r.status_code))
    else:
        bad(kind, "HTTP %d: %s" % (r.status_code, r.text[:200]))


def words(rng, n):
    return " ".join(rng.choice(["the", "a", "river", "stone", "light", "quiet", "seven", "under", "over"])
                    for _ in range(n))


def body(rng, model, chat, stream, max_tokens):
    b = {"model": model, "max_tokens": max_tokens, "temperature": rng.choice([0, 0.7]), "stream": stream}
    if chat:
        b["messages"] = [{"role": "system", "content": "You are terse."},
                         {"role": "user", "content": words(rng, rng.randint(3, 60))}]
    else:
        b["prompt"] = words(rng, rng.randint(3, 80))
    if stream and rng.random() < 0.5:
        b["stream_options"] = {"include_usage": True}
    return b


def sock_request(path, payload, headers=None):
    s = socket.create_connection((HOST, PORT), timeout=30)
    h = {"Host": "%s:%d" % (HOST, PORT), "Content-Type": "application/json", "Connection": "close"}
    h.update(headers or {})
    if payload is not None:
        h["Content-Length"] = str(len(payload))
    head = "POST %s HTTP/1.1\r\n" % path + "".join("%s: %s\r\n" % kv for kv in h.items()) + "\r\n"
    s.sendall(head.encode() + (payload or b""))
    return s


def read_all(s, limit=8 << 20):
    data = b""
    while len(data) < limit:
        d = s.recv(65536)
        if not d:
            break
        data += d
    return data


# ---------------------------------------------------------------- actions

def a_stream(rng, sess):
    m = rng.choice(MODELS[:2])
    chat = rng.random() < 0.5
    path = "/v1/chat/completions" if chat else "/v1/completions"
    with sess.post(URL + path, json=body(rng, m, chat, True, rng.randint(8, 96)), stream=True, timeout=120) as r:
        raw = b"".join(r.iter_content(None))
        if r.status_code == 200 and not raw.rstrip().endswith(b"data: [DONE]"):
            bad("stream", "no [DONE]: %r" % raw[-120:])
            return
        check("stream", r)


def a_drop(rng, sess):
    m = rng.choice(MODELS[:2])
    s = sock_request("/v1/completions", json.dumps(body(rng, m, False, True, 400)).encode())
    try:
        s.settimeout(30)
        got = b""
        want = rng.randint(1, 6)
        while got.count(b"data: ") < want:
            d = s.recv(4096)
            if not d:
                break
            got += d
        note("drop", "dropped")
    finally:
        s.close()


def a_whole(rng, sess):
    m = rng.choice(MODELS[:2])
    chat = rng.random() < 0.5
    path = "/v1/chat/completions" if chat else "/v1/completions"
    check("whole", sess.post(URL + path, json=body(rng, m, chat, False, rng.randint(1, 48)), timeout=120))


def a_embed(rng, sess):
    m = rng.choice(MODELS[:2])
    inp = [words(rng, rng.randint(2, 40)) for _ in range(rng.randint(1, 12))]
    check("embed", sess.post(URL + "/v1/embeddings", json={"model": m, "input": inp}, timeout=120))


def a_swap(rng, sess):
    m = MODELS[2] if len(MODELS) > 2 else MODELS[0]
    check("swap", sess.post(URL + "/v1/completions", json=body(rng, m, False, False, 4), timeout=180))


def a_bad(rng, sess):
    kind = rng.randrange(7)
    if kind == 0:
        r = sess.post(URL + "/v1/chat/completions", data=b'{"model": "a", "messages": [', timeout=30,
                      headers={"Content-Type": "application/json"})
    elif kind == 1:
        r = sess.post(URL + "/v1/completions", json={"model": "no-such-model", "prompt": "x"}, timeout=30)
    elif kind == 2:
        r = sess.post(URL + "/v1/chat/completions", json={"model": MODELS[0], "messages": "nope"}, timeout=30)
    elif kind == 3:
        r = sess.post(URL + "/v1/completions", json={"model": MODELS[0], "prompt": "x" * 200000}, timeout=30)
    elif kind == 4:
        r = sess.get(URL + "/v1/models", headers={"Origin": "http://evil.example"}, timeout=30)
    elif kind == 5:
        r = sess.post(URL + "/admin/models/unload", data=b'{"model":"a"}', headers={"Content-Type": "text/plain"},
                      timeout=30)
    else:
        r = sess.get(URL + "/nope", timeout=30)
    if r.status_code in (400, 403, 404, 413, 415, 503):
        note("bad", str(r.status_code))
    else:
        bad("bad", "kind %d answered %d: %s" % (kind, r.status_code, r.text[:200]))


def a_halfclosed(rng, sess):
    s = socket.create_connection((HOST, PORT), timeout=10)
    try:
        payload = json.dumps(body(rng, MODELS[0], False, False, 4)).encode()
        head = ("POST /v1/completions HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n" % (HOST, PORT, len(payload) + 100)).encode()
        s.sendall(head + payload[: rng.randint(0, len(payload))])
        s.shutdown(socket.SHUT_WR)
        t0 = time.monotonic()
        s.settimeout(10)
        while s.recv(4096):
            pass
        waited = time.monotonic() - t0
        if waited > 2:
            bad("halfclosed", "closed after %.1f s" % waited)
        else:
            note("halfclosed", "closed")
    except (ConnectionResetError, BrokenPipeError):
        note("halfclosed", "reset")
    except socket.timeout:
        bad("halfclosed", "never closed")
    finally:
        s.close()


def a_admin(rng, sess):
    m = rng.choice(MODELS)
    if rng.random() < 0.5:
        r = sess.post(URL + "/admin/models/load", json={"model": m}, timeout=30)
        ok = (200, 202)
    else:
        r = sess.post(URL + "/admin/models/unload", json={"model": m, "force": rng.random() < 0.5}, timeout=30)
        ok = (200, 202)
    check("admin", r, ok)


def a_info(rng, sess):
    for p in ("/health", "/metrics", "/capacity", "/admin/pool", "/v1/models"):
        r = sess.get(URL + p, timeout=30)
        if r.status_code != 200:
            bad("info", "%s answered %d" % (p, r.status_code))
            return
    note("info", "200")


ACTIONS = [(a_stream, 30), (a_drop, 8), (a_whole, 20), (a_embed, 8), (a_swap, 3), (a_bad, 12),
           (a_halfclosed, 6), (a_admin, 2), (a_info, 6)]


def worker(i):
    rng = random.Random(args.seed * 1000 + i)
    sess = requests.Session()
    fns = [f for f, w in ACTIONS for _ in range(w)]
    while time.monotonic() < END:
        f = rng.choice(fns)
        try:
            f(rng, sess)
        except requests.RequestException as e:
            bad(f.__name__, "no answer: %s" % e)
            sess = requests.Session()
        except (OSError, ValueError) as e:
            bad(f.__name__, "socket: %s" % e)


# ---------------------------------------------------------------- sampling

def sample():
    rss = 0
    with open("/proc/%d/status" % args.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
    fds = len(os.listdir("/proc/%d/fd" % args.pid))
    return rss, fds


def fit(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    return 0.0 if sxx == 0 else sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def main():
    os.makedirs(args.out, exist_ok=True)
    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(args.workers)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    samples = []
    csv = open(os.path.join(args.out, "samples.csv"), "w")
    csv.write("seconds,rss_bytes,open_fds\n")
    died = False
    while True:
        try:
            rss, fds = sample()
        except FileNotFoundError:
            died = True
            break
        now = time.monotonic() - t0
        samples.append((now, rss, fds))
        csv.write("%.1f,%d,%d\n" % (now, rss, fds))
        csv.flush()
        if time.monotonic() >= END:
            break
        time.sleep(min(args.interval, max(0.1, END - time.monotonic())))
    for t in threads:
        t.join(180)
    # the server must still be well and idle-able
    try:
        h = requests.get(URL + "/health", timeout=10)
        healthy = h.status_code == 200
    except requests.RequestException:
        healthy = False
    time.sleep(2)
    try:
        rss, fds = sample()
        samples.append((time.monotonic() - t0, rss, fds))
        csv.write("%.1f,%d,%d\n" % samples[-1])
    except FileNotFoundError:
        died = True
    csv.close()

    kept = [s for s in samples if s[0] >= WARMUP] or samples
    xs = [s[0] for s in kept]
    span = (xs[-1] - xs[0]) if len(xs) > 1 else 0
    rss_slope = fit(xs, [s[1] for s in kept]) if len(xs) > 1 else 0.0
    fd_slope = fit(xs, [s[2] for s in kept]) if len(xs) > 1 else 0.0
    rss_growth = rss_slope * span / 1048576
    fd_growth = fd_slope * span
    total = sum(sum(v.values()) for v in counts.values())
    report = {
        "duration_s": round(samples[-1][0], 1) if samples else 0,
        "warmup_s": WARMUP,
        "samples": len(samples),
        "requests": total,
        "by_kind": counts,
        "failures": failures,
        "rss_mib": {"first": round(samples[0][1] / 1048576, 1), "after_warmup": round(kept[0][1] / 1048576, 1),
                    "last": round(samples[-1][1] / 1048576, 1), "max": round(max(s[1] for s in samples) / 1048576, 1),
                    "slope_kib_per_min": round(rss_slope * 60 / 1024, 2),
                    "growth_over_fit_mib": round(rss_growth, 2)},
        "fds": {"first": samples[0][2], "after_warmup": kept[0][2], "last": samples[-1][2],
                "max": max(s[2] for s in samples), "slope_per_hour": round(fd_slope * 3600, 2),
                "growth_over_fit": round(fd_growth, 2)},
        "server_died": died,
        "healthy_at_end": healthy,
    }
    flat = rss_growth <= args.rss_bound_mib and fd_growth <= args.fd_bound
    report["flat"] = flat
    with open(os.path.join(args.out, "report.json"), "w") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2))
    ok = flat and not died and healthy and not failures
    print("soak: %s (RSS %+.2f MiB and fds %+.1f over the %.0f s after warm-up; %d requests, %d failures)" %
          ("PASS" if ok else "FAIL", rss_growth, fd_growth, span, total, len(failures)))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
