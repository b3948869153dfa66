"""End-to-end tests of the admin CLI: `corral ps`, `corral load`, `corral unload`.

Each test starts a real server with two lazy models (a and b start unloaded)
and runs the corral binary against it over the admin API.
"""
import re
import socket
import time

from conftest import TEST_MODEL, open_stream_socket, read_until, run_corral


def lazy_args(extra=()):
    return [
        "--model", "a=%s" % TEST_MODEL, "--model", "b=%s" % TEST_MODEL,
        "--port", "0", "--host", "127.0.0.1",
        "--parallel", "2", "--ctx", "512", "--threads", "1",
    ] + list(extra)


def ps_rows(out):
    """Map model id -> status from `corral ps` output (the rows after the
    ID/STATUS header)."""
    rows = {}
    lines = out.splitlines()
    start = next(i for i, l in enumerate(lines) if l.split()[:2] == ["ID", "STATUS"]) + 1
    for line in lines[start:]:
        if not line or line.startswith(" "):
            continue
        cols = line.split()
        rows[cols[0]] = cols[1]
    return rows


def port_args(srv):
    return ["--port", str(srv.port)]


def test_ps_lists_unloaded_models(make_server):
    srv = make_server(lazy_args())
    r = run_corral(["ps"] + port_args(srv))
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert "budget" in lines[0], r.stdout
    assert re.match(r"capacity 0 of \d+ in use \(host \d+, auto\); 0 queued, 0 waiting for a load$", lines[1]), r.stdout
    assert lines[2].split()[:2] == ["ID", "STATUS"], r.stdout
    for col in ("MEMORY", "IN FLIGHT", "SLOTS", "LAST USED", "KEEP ALIVE"):
        assert col in lines[2], r.stdout
    assert ps_rows(r.stdout) == {"a": "unloaded", "b": "unloaded"}, r.stdout


def test_load_then_unload(make_server):
    srv = make_server(lazy_args())
    r = run_corral(["load", "a"] + port_args(srv))
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("a: loaded in "), r.stdout
    assert r.stdout.rstrip().endswith(" ms"), r.stdout
    assert srv.model_health("a")["status"] == "loaded"

    r = run_corral(["ps"] + port_args(srv))
    assert r.returncode == 0, r.stderr
    assert ps_rows(r.stdout) == {"a": "loaded", "b": "unloaded"}, r.stdout
    assert "MiB" in r.stdout, r.stdout  # the loaded model's memory

    # Loading a loaded model is fine too.
    r = run_corral(["load", "a"] + port_args(srv))
    assert r.returncode == 0, r.stderr

    r = run_corral(["unload", "a"] + port_args(srv))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "a: unloaded", r.stdout
    assert srv.model_health("a")["status"] == "unloaded"


def test_env_port(make_server):
    srv = make_server(lazy_args())
    r = run_corral(["ps"], env={"CORRAL_PORT": str(srv.port), "CORRAL_HOST": "127.0.0.1"})
    assert r.returncode == 0, r.stderr
    assert set(ps_rows(r.stdout)) == {"a", "b"}


def test_force_unload_with_request_in_flight(make_server):
    srv = make_server(lazy_args())
    assert run_corral(["load", "a"] + port_args(srv)).returncode == 0
    body = {"model": "a", "prompt": "Once upon a time", "max_tokens": 400, "temperature": 0,
            "ignore_eos": True}
    s = open_stream_socket(srv, "/v1/completions", body)
    try:
        read_until(s, lambda b: b"data:" in b)
        r = run_corral(["unload", "a", "--force", "--timeout", "20"] + port_args(srv))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "a: unloaded", r.stdout
        assert srv.model_health("a")["status"] == "unloaded"
    finally:
        s.close()
    assert srv.alive()


def test_load_unknown_model(make_server):
    srv = make_server(lazy_args())
    r = run_corral(["load", "nope"] + port_args(srv))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "nope" in r.stderr and "404" in r.stderr, r.stderr
    r = run_corral(["unload", "nope"] + port_args(srv))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "nope" in r.stderr, r.stderr


def test_usage_errors():
    for args in (["load"], ["unload"], ["ps", "--bogus"], ["ps", "extra"], ["load", "a", "b"],
                 ["ps", "--port"], ["ps", "--port", "notaport"], ["ps", "--port", "70000"],
                 ["load", "a", "--timeout", "0"], ["load", "a", "--force"], ["ps", "--timeout", "x"]):
        r = run_corral(args)
        assert r.returncode == 2, (args, r.returncode, r.stderr)
        assert "usage: corral" in r.stderr, (args, r.stderr)


def test_cannot_connect():
    # A port that was free a moment ago (nothing listens there).
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for cmd in (["ps"], ["load", "a"], ["unload", "a"]):
        t0 = time.monotonic()
        r = run_corral(cmd + ["--port", str(port)])
        assert r.returncode == 3, (cmd, r.returncode, r.stderr)
        assert "cannot connect to 127.0.0.1:%d" % port in r.stderr, r.stderr
        assert time.monotonic() - t0 < 10


def test_admin_api_key(make_server):
    srv = make_server(lazy_args(["--admin-api-key", "k"]))
    r = run_corral(["ps"] + port_args(srv))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "401" in r.stderr, r.stderr
    r = run_corral(["ps", "--admin-api-key", "wrong"] + port_args(srv))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "401" in r.stderr, r.stderr

    r = run_corral(["ps", "--admin-api-key", "k"] + port_args(srv))
    assert r.returncode == 0, r.stderr
    assert set(ps_rows(r.stdout)) == {"a", "b"}
    r = run_corral(["load", "b"] + port_args(srv), env={"CORRAL_ADMIN_API_KEY": "k"})
    assert r.returncode == 0, r.stderr
    assert srv.model_health("b")["status"] == "loaded"


def test_unload_waits_for_requests_in_flight(make_server):
    srv = make_server(lazy_args())
    assert run_corral(["load", "a"] + port_args(srv)).returncode == 0
    body = {"model": "a", "prompt": "Once upon a time", "max_tokens": 400, "temperature": 0,
            "ignore_eos": True}
    s = open_stream_socket(srv, "/v1/completions", body)
    try:
        read_until(s, lambda b: b"data:" in b)
        r = run_corral(["unload", "a", "--timeout", "30"] + port_args(srv), timeout=40)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "a: unloaded", r.stdout
        assert srv.model_health("a")["status"] == "unloaded"
        # The request ran to its end: the stream finished normally.
        raw = read_until(s, lambda b: b"[DONE]" in b)
        assert b"[DONE]" in raw or b"data:" in raw
    finally:
        s.close()


def test_load_failure_prints_error(make_server, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"this is not a gguf file\n")
    srv = make_server(lazy_args(["--model", "c=%s" % bad]))
    r = run_corral(["load", "c"] + port_args(srv))
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "load failed" in r.stderr and "GGUF" in r.stderr, r.stderr
    r = run_corral(["ps"] + port_args(srv))
    assert r.returncode == 0, r.stderr
    assert ps_rows(r.stdout)["c"] == "failed", r.stdout
    assert "    error: " in r.stdout, r.stdout
