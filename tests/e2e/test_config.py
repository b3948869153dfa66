"""Configuration (file, env, flags), startup failures, broken models."""
import os
import time

import pytest
import requests

from conftest import (TEST_MODEL, Server, assert_error, chat_body, completion_body, run_corral,
                      server_args)


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text)
    return str(p)


# ---------------------------------------------------------------- invalid


@pytest.mark.parametrize("text,line,needle", [
    ("[server]\nhost = 127.0.0.1\nport = abc\n", 3, "port"),
    ("[server]\nthreads = 0\n", 2, "threads"),
    ("[server]\nparallel = 1\nctx = 8\n", 3, "ctx"),
    ("[server]\nbody_limit = lots\n", 2, "body_limit"),
    ("[server]\nlog_level = loud\n", 2, "log_level"),
    ("[server]\nnot_a_key = 1\n", 2, "not_a_key"),
    ("; comment\n\n[model.a]\npath = /x.gguf\nparallel = -3\n", 5, "parallel"),
    ("[model.a]\npath = /x.gguf\nbogus = 1\n", 3, "bogus"),
    ("[nonsense]\n", 1, "nonsense"),
    ("port = 1\n", 1, "port"),
    ("[server]\nport = 1\n[server]\n", 3, "server"),
    ("[model.bad id!]\npath=/x\n", 1, "bad id"),
])
def test_invalid_config_exits_2(tmp_path, text, line, needle):
    f = write(tmp_path, "bad.ini", text)
    t0 = time.monotonic()
    p = run_corral(["serve", "--config", f, "--model", "m=" + TEST_MODEL, "--port", "0"])
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert time.monotonic() - t0 < 5
    assert "%s:%d:" % (f, line) in p.stderr, p.stderr
    assert needle in p.stderr, p.stderr
    assert "listening" not in p.stdout


def test_invalid_config_message_format(tmp_path):
    f = write(tmp_path, "x.ini", "[server]\n\nport = abc\n")
    p = run_corral(["serve", "--config", f])
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[0] == \
        'corral: %s:3: [server] port: expected an integer in 0..65535, got "abc"' % f, p.stderr


def test_model_section_without_path(tmp_path):
    f = write(tmp_path, "np.ini", "[model.x]\nparallel = 2\n")
    p = run_corral(["serve", "--config", f])
    assert p.returncode == 2
    assert "path" in p.stderr and "model.x" in p.stderr


def test_missing_config_file(tmp_path):
    p = run_corral(["serve", "--config", str(tmp_path / "nope.ini"), "--model", "m=" + TEST_MODEL])
    assert p.returncode == 2
    assert "nope.ini" in p.stderr


def test_unknown_flag_exits_2():
    p = run_corral(["serve", "--model", "m=" + TEST_MODEL, "--frobnicate", "1"])
    assert p.returncode == 2
    assert "--frobnicate" in p.stderr


@pytest.mark.parametrize("args,needle", [
    (["--port", "70000"], "--port"),
    (["--parallel", "0"], "--parallel"),
    (["--body-limit", "1"], "--body-limit"),
    (["--model", "noequals"], "--model"),
    (["--port"], "--port"),
])
def test_bad_flag_values_exit_2(args, needle):
    p = run_corral(["serve", "--model", "m=" + TEST_MODEL] + args)
    assert p.returncode == 2, p
    assert needle in p.stderr


def test_bad_env_value_exits_2():
    p = run_corral(["serve", "--model", "m=" + TEST_MODEL], env={"CORRAL_PORT": "http"})
    assert p.returncode == 2
    assert "CORRAL_PORT" in p.stderr


def test_no_model_exits_2():
    p = run_corral(["serve", "--port", "0"])
    assert p.returncode == 2
    assert "model" in p.stderr.lower()


def test_unknown_command_exits_2():
    p = run_corral(["frobnicate"])
    assert p.returncode == 2


def test_version_and_help():
    p = run_corral(["version"])
    assert p.returncode == 0 and p.stdout.startswith("corral ")
    p = run_corral(["serve", "--help"])
    assert p.returncode == 0 and "--model" in p.stdout


def test_models_command_lists(tmp_path):
    f = write(tmp_path, "m.ini", "[model.alpha]\npath = /a.gguf\n[model.beta]\npath = /b.gguf\n")
    p = run_corral(["models", "--config", f, "--model", "gamma=/c.gguf"])
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["alpha\t/a.gguf", "beta\t/b.gguf", "gamma\t/c.gguf"]


# ---------------------------------------------------------------- valid


def test_config_file_serves_model(tmp_path, make_server, mkmodel):
    other = mkmodel("other.gguf", seed=21)
    f = write(tmp_path, "ok.ini", "\n".join([
        "# a comment",
        "[server]",
        "host = 127.0.0.1",
        "port = 0",
        "threads = 1",
        "parallel = 2",
        "ctx = 256",
        "queue_size = 3",
        "max_concurrent = 3",
        "log_level = warn",
        "",
        "[model.x]",
        "path = " + TEST_MODEL,
        "",
        "[model.y]",
        "path = " + other,
        "parallel = 3",
        "ctx = 512",
        "",
    ]))
    srv = make_server(["--config", f, "--preload", "x", "--preload", "y"])
    srv.wait_loaded("x")
    srv.wait_loaded("y")
    h = srv.health()
    assert h["status"] == "ok"
    ms = {m["id"]: m for m in h["models"]}
    assert set(ms) == {"x", "y"}
    assert ms["x"]["slots_total"] == 2
    assert ms["y"]["slots_total"] == 3
    ids = [m["id"] for m in srv.get("/v1/models").json()["data"]]
    assert ids == ["x", "y"]
    rx = srv.post("/v1/completions", completion_body(model="x", max_tokens=8))
    ry = srv.post("/v1/completions", completion_body(model="y", max_tokens=8))
    assert rx.status_code == 200 and ry.status_code == 200
    assert rx.json()["model"] == "x" and ry.json()["model"] == "y"
    # different weights, different text
    assert rx.json()["choices"][0]["text"] != ry.json()["choices"][0]["text"]
    e = assert_error(srv.post("/v1/completions", completion_body(model="z")), 404)
    assert "'x'" in e["message"] and "'y'" in e["message"], e
    # log_level = warn: no info lines
    assert " info " not in srv.stderr()


def test_env_overrides_file_and_flags_override_env(tmp_path, make_server):
    f = write(tmp_path, "e.ini", "[server]\nparallel = 2\nctx = 256\nthreads = 1\n[model.f]\npath = %s\n"
              % TEST_MODEL)
    srv = make_server(["--config", f, "--port", "0", "--parallel", "3", "--preload", "f"],
                      env={"CORRAL_PARALLEL": "1", "CORRAL_QUEUE_SIZE": "5", "CORRAL_MAX_CONCURRENT": "4"})
    assert srv.wait_loaded("f")["slots_total"] == 3  # flag beats env beats file
    srv2 = make_server(["--config", f, "--port", "0"], env={"CORRAL_PARALLEL": "1", "CORRAL_PRELOAD": "f"})
    assert srv2.wait_loaded("f")["slots_total"] == 1  # env beats file


def test_env_only_config(make_server):
    srv = make_server([], env={"CORRAL_MODELS": "e1=%s" % TEST_MODEL, "CORRAL_PORT": "0",
                               "CORRAL_HOST": "127.0.0.1", "CORRAL_PARALLEL": "2", "CORRAL_CTX": "256",
                               "CORRAL_THREADS": "1", "CORRAL_API_KEY": "envkey"})
    assert srv.model_health("e1")["status"] == "unloaded"  # lazy: loaded on first use
    assert srv.post("/v1/completions", completion_body(model="e1")).status_code == 401
    r = requests.post(srv.url("/v1/completions"), json=completion_body(model="e1", max_tokens=2),
                      headers={"Authorization": "Bearer envkey"}, timeout=30)
    assert r.status_code == 200
    assert srv.model_health("e1")["slots_total"] == 2
    assert srv.post("/v1/completions", completion_body(model="e1")).status_code == 401
    r = requests.post(srv.url("/v1/completions"), json=completion_body(model="e1", max_tokens=2),
                      headers={"Authorization": "Bearer envkey"}, timeout=10)
    assert r.status_code == 200


def test_env_config_path(tmp_path, make_server):
    f = write(tmp_path, "c.ini", "[server]\nport = 0\nthreads = 1\nctx = 256\n[model.envcfg]\npath = %s\n"
              "preload = true\n" % TEST_MODEL)
    srv = make_server([], env={"CORRAL_CONFIG": f})
    assert srv.wait_loaded("envcfg")["status"] == "loaded"


# ---------------------------------------------------------------- broken models


def test_junk_gguf_model(tmp_path, make_server):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"this is not a gguf file at all\n" * 100)
    srv = make_server(["--model", "good=" + TEST_MODEL, "--model", "bad=" + str(junk), "--port", "0",
                       "--threads", "1", "--ctx", "256", "--parallel", "1", "--preload", "good",
                       "--preload", "bad"])
    srv.wait_loaded("good")
    srv.wait_loaded("bad")
    h = srv.health()
    ms = {m["id"]: m for m in h["models"]}
    assert ms["good"]["status"] == "loaded"
    assert ms["bad"]["status"] == "failed"
    assert ms["bad"].get("error"), ms["bad"]
    assert "junk.gguf" in ms["bad"]["error"]
    assert h["status"] != "ok"  # not every model is up
    models = {m["id"]: m for m in srv.get("/v1/models").json()["data"]}
    assert models["bad"]["status"] == "failed" and models["good"]["status"] == "loaded"
    r = srv.post("/v1/chat/completions", chat_body(model="bad"))
    e = assert_error(r, 503, "server_error", code="model_unavailable")
    assert "bad" in e["message"] and "junk.gguf" in e["message"], e
    assert srv.post("/v1/completions", completion_body(model="bad", stream=True)).status_code == 503
    r = srv.post("/v1/chat/completions", chat_body(model="good", max_tokens=3))
    assert r.status_code == 200


def test_missing_model_file(make_server, tmp_path):
    srv = make_server(["--model", "good=" + TEST_MODEL, "--model", "gone=" + str(tmp_path / "no.gguf"),
                       "--port", "0", "--threads", "1", "--ctx", "256", "--parallel", "1",
                       "--preload", "gone"])
    m = srv.wait_loaded("gone")
    assert m["status"] == "failed" and "no.gguf" in m["error"]
    assert_error(srv.post("/v1/completions", completion_body(model="gone")), 503)
    assert srv.post("/v1/completions", completion_body(model="good", max_tokens=2)).status_code == 200


def test_model_without_chat_template(make_server, mkmodel):
    plain = mkmodel("plain.gguf", seed=7, chat_template="none")
    chatml = mkmodel("chatml.gguf", seed=7, chat_template="chatml")
    srv = make_server(["--model", "plain=" + plain, "--model", "ref=" + chatml, "--port", "0",
                       "--threads", "1", "--ctx", "256", "--parallel", "1"])
    r = srv.post("/v1/chat/completions", chat_body(model="plain", max_tokens=10))
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 10
    err = srv.stderr()
    assert "chatml" in err and "plain" in err, err
    # the same weights with the ChatML template in the file: same prompt, same answer
    ref = srv.post("/v1/chat/completions", chat_body(model="ref", max_tokens=10)).json()
    assert r.json()["usage"]["prompt_tokens"] == ref["usage"]["prompt_tokens"]
    assert r.json()["choices"][0]["message"]["content"] == ref["choices"][0]["message"]["content"]


def test_chat_template_override(tmp_path, make_server, mkmodel):
    f = write(tmp_path, "t.ini", "[server]\nport = 0\nthreads = 1\nctx = 256\nparallel = 1\n"
              "[model.l2]\npath = %s\nchat_template = llama2\n[model.c]\npath = %s\n" % (TEST_MODEL, TEST_MODEL))
    srv = make_server(["--config", f])
    a = srv.post("/v1/chat/completions", chat_body(model="l2", max_tokens=4)).json()
    b = srv.post("/v1/chat/completions", chat_body(model="c", max_tokens=4)).json()
    assert a["usage"]["prompt_tokens"] != b["usage"]["prompt_tokens"]


def test_quantized_model_serves(make_server, mkmodel):
    q = mkmodel("q8.gguf", seed=5, typ="q8_0")
    srv = make_server(["--model", "q=" + q, "--port", "0", "--threads", "1", "--ctx", "256",
                       "--parallel", "2"])
    r = srv.post("/v1/completions", completion_body(model="q", max_tokens=8))
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 8


def test_port_in_use(make_server):
    a = make_server()
    p = run_corral(["serve", "--model", "m=" + TEST_MODEL, "--port", str(a.port), "--host", "127.0.0.1",
                    "--threads", "1", "--ctx", "256", "--parallel", "1"])
    assert p.returncode != 0
    assert str(a.port) in p.stderr
    assert a.health()["status"] == "ok"
