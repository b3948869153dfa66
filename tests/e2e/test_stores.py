"""The models people already have: Ollama's store (manifests naming GGUF
blobs; ids like llama3.2:3b), the Hugging Face hub cache (snapshots linking
to blobs; ids ORG/REPO/FILE-STEM), and split GGUF files in models_dir (one
model), in small fake stores built from generated models. They are served,
and `corral list` shows them with the sizes and quantisations their headers
give."""
import hashlib
import json
import os
import shutil
import subprocess

from conftest import CORRAL_BIN, server_args


def _blob(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def build_stores(tmp_path, mkmodel):
    q8 = mkmodel("store-q8.gguf", seed=21, typ="q8_0")
    f16 = mkmodel("store-f16.gguf", seed=22)
    # Ollama: manifests/HOST/NS/NAME/TAG -> blobs/sha256-HEX
    ol = tmp_path / "ollama"
    (ol / "blobs").mkdir(parents=True)
    for ns, name, tag, src in (("library", "llama3.2", "3b", q8), ("someone", "thing", "latest", f16)):
        h = _blob(src)
        shutil.copy(src, ol / "blobs" / ("sha256-" + h))
        (ol / "blobs" / "sha256-cfg").write_text("{}")
        d = ol / "manifests" / "registry.ollama.ai" / ns / name
        d.mkdir(parents=True, exist_ok=True)
        (d / tag).write_text(json.dumps({"schemaVersion": 2, "layers": [
            {"mediaType": "application/vnd.ollama.image.template", "digest": "sha256:cfg", "size": 2},
            {"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:" + h,
             "size": os.path.getsize(src)}]}))
    # a manifest whose blob is missing is skipped
    (ol / "manifests" / "registry.ollama.ai" / "library" / "gone").mkdir()
    (ol / "manifests" / "registry.ollama.ai" / "library" / "gone" / "1b").write_text(json.dumps(
        {"layers": [{"mediaType": "application/vnd.ollama.image.model", "digest": "sha256:" + "0" * 64}]}))
    # Hugging Face: models--ORG--REPO/snapshots/REV/FILE -> ../../blobs/HASH
    hf = tmp_path / "hf"
    repo = hf / "models--acme--tiny-GGUF"
    (repo / "blobs").mkdir(parents=True)
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    shutil.copy(q8, repo / "blobs" / "deadbeef")
    os.symlink("../../blobs/deadbeef", repo / "snapshots" / "abc123" / "tiny.Q8_0.gguf")
    # models_dir: a split model is one model, at its first part
    md = tmp_path / "dir"
    md.mkdir()
    shutil.copy(f16, md / "plain.gguf")
    shutil.copy(q8, md / "big-00001-of-00002.gguf")
    shutil.copy(q8, md / "big-00002-of-00002.gguf")
    return {"ollama": str(ol), "hf": str(hf), "dir": str(md), "q8": q8, "f16": f16}


IDS = {"llama3.2:3b": "Q8_0", "someone/thing:latest": "F16", "acme/tiny-GGUF/tiny.Q8_0": "Q8_0", "plain": "F16",
       "big": "Q8_0"}


def test_stores_are_served(make_server, mkmodel, tmp_path):
    st = build_stores(tmp_path, mkmodel)
    args = ["--models-dir", st["dir"], "--ollama-models", st["ollama"], "--hf-cache", st["hf"]]
    srv = make_server(server_args(extra=args))
    ids = {m["id"] for m in srv.get("/v1/models").json()["data"]}
    assert set(IDS) <= ids, ids
    assert not any("gone" in i or "00002" in i for i in ids), ids
    for mid, quant in IDS.items():
        meta = srv.get("/v1/models/" + mid).json()["meta"]
        assert meta["quantization"] == quant, (mid, meta)
    meta = srv.get("/v1/models/llama3.2:3b").json()["meta"]
    assert meta["file_bytes"] == os.path.getsize(st["q8"])
    for mid in ("llama3.2:3b", "acme/tiny-GGUF/tiny.Q8_0", "big"):
        r = srv.post("/v1/chat/completions", {"model": mid, "messages": [{"role": "user", "content": "hi"}],
                                              "max_tokens": 3})
        assert r.status_code == 200, (mid, r.text)
        assert r.json()["model"] == mid

    # corral list with the same options and no server reads the same files
    env = dict(os.environ, CORRAL_PORT="1")
    r = subprocess.run([CORRAL_BIN, "list"] + args, capture_output=True, text=True, timeout=30, env=env)
    assert r.returncode == 0, r.stderr
    rows = {line.split()[0]: line.split() for line in r.stdout.splitlines()[1:]}
    for mid, quant in IDS.items():
        assert rows[mid][6] == quant and rows[mid][4] == "llama", (mid, r.stdout)
    assert rows["llama3.2:3b"][2] == "%.1f" % (os.path.getsize(st["q8"]) / 1048576), r.stdout
