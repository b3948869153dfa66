"""`corral list` and `corral show`, and the `meta` of GET /v1/models/ID:
what each model's GGUF header says (size on disk, architecture, parameter
count, quantisation, context length), read without loading the model."""
import os
import subprocess

from conftest import CORRAL_BIN, MODEL, TEST_MODEL, server_args


def cli(srv, *args):
    env = dict(os.environ, CORRAL_PORT=str(srv.port) if srv else "1", CORRAL_HOST="127.0.0.1")
    return subprocess.run([CORRAL_BIN] + list(args), capture_output=True, timeout=30, env=env, text=True)


def test_meta_list_and_show_match_the_headers(make_server, mkmodel):
    q8 = mkmodel("list-q8.gguf", seed=2, typ="q8_0", ctx=2048)
    srv = make_server(server_args(extra=["--model", "q8=%s" % q8]))
    srv.wait_loaded()
    meta = srv.get("/v1/models/q8").json()["meta"]
    assert meta["quantization"] == "Q8_0" and meta["architecture"] == "llama", meta
    assert meta["context_length"] == 2048 and meta["layers"] == 2 and meta["heads"] == 4 and meta["kv_heads"] == 2
    assert meta["file_bytes"] == os.path.getsize(q8) and meta["chat_template"] is True
    f16 = srv.get("/v1/models/%s" % MODEL).json()["meta"]
    assert f16["quantization"] == "F16" and f16["parameters"] == meta["parameters"] > 1000000, (f16, meta)
    assert srv.get("/v1/models/q8").json()["status"] == "unloaded"  # read without loading it

    r = cli(srv, "list")
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    assert rows["q8"][1] == "unloaded" and rows["q8"][4] == "llama" and rows["q8"][6] == "Q8_0", r.stdout
    assert rows[MODEL][1] == "loaded" and rows[MODEL][6] == "F16", r.stdout
    r = cli(srv, "show", "q8")
    assert r.returncode == 0 and "quantization       Q8_0" in r.stdout and "context_length     2048" in r.stdout, r.stdout
    assert cli(srv, "show", "nope").returncode == 1


def test_list_without_a_server_reads_the_configured_files(mkmodel):
    r = cli(None, "list", "--model", "t=%s" % TEST_MODEL)
    assert r.returncode == 0, r.stderr
    row = r.stdout.splitlines()[1].split()
    assert row[0] == "t" and row[1] == "-" and row[4] == "llama" and row[6] == "F16", r.stdout
    r = cli(None, "list")
    assert r.returncode == 3 and "no corral server" in r.stderr
