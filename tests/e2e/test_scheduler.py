"""The scheduler shares a model fairly: an embedding batch is computed a
chunk per step, so a stream started during it keeps generating."""
import threading
import time

from conftest import MODEL, chat_body, server_args, stream_request


def test_stream_finishes_during_a_long_embedding_batch(make_server):
    srv = make_server(server_args(parallel=2, ctx=512, queue=4))
    srv.wait_loaded()
    words = " ".join("word%d" % i for i in range(120))
    res = {}

    def embed():
        res["r"] = srv.post("/v1/embeddings", {"model": MODEL, "input": [words] * 200}, timeout=120)
        res["t"] = time.monotonic()

    t = threading.Thread(target=embed)
    t.start()
    deadline = time.monotonic() + 20
    while srv.model_health()["slots_busy"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)
    st = stream_request(srv, "/v1/chat/completions", chat_body("during the batch", max_tokens=20, ignore_eos=True),
                        timeout=120)
    stream_done = time.monotonic()
    assert st.status == 200 and st.done
    # the batch runs on (a stream was not stuck behind all of it)
    still_running = t.is_alive()
    t.join(120)
    assert res["r"].status_code == 200
    assert len(res["r"].json()["data"]) == 200
    assert still_running and stream_done < res["t"], (stream_done, res.get("t"))
