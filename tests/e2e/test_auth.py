"""--api-key: Bearer and x-api-key, /health open."""
import pytest
import requests

from conftest import MODEL, Server, assert_error, chat_body, server_args, stream_request

KEY = "sk-test-123"


@pytest.fixture(scope="module")
def auth_server():
    s = Server(server_args(parallel=1, ctx=256, queue=4, extra=["--api-key", KEY]))
    yield s
    assert s.stop() == 0


def _post(srv, headers, path="/v1/chat/completions", body=None):
    return requests.post(srv.url(path), json=body or chat_body(max_tokens=2), headers=headers, timeout=10)


def test_no_key_401(auth_server):
    r = _post(auth_server, {})
    e = assert_error(r, 401, "authentication_error", code="invalid_api_key")
    assert "key" in e["message"].lower()
    assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer wrong"},
    {"Authorization": "Bearer " + KEY + "x"},
    {"Authorization": "Bearer " + KEY[:-1]},
    {"Authorization": "Bearer "},
    {"Authorization": KEY},
    {"Authorization": "Basic " + KEY},
    {"x-api-key": "nope"},
    {"x-api-key": ""},
])
def test_wrong_key_401(auth_server, headers):
    assert_error(_post(auth_server, headers), 401, "authentication_error")


def test_bearer_ok(auth_server):
    r = _post(auth_server, {"Authorization": "Bearer " + KEY})
    assert r.status_code == 200, r.text
    assert r.json()["object"] == "chat.completion"
    # the scheme is case-insensitive
    assert _post(auth_server, {"Authorization": "bearer " + KEY}).status_code == 200


def test_x_api_key_ok(auth_server):
    r = _post(auth_server, {"x-api-key": KEY})
    assert r.status_code == 200, r.text
    r = _post(auth_server, {"X-API-Key": KEY}, path="/v1/completions",
              body={"model": MODEL, "prompt": "hi", "max_tokens": 2})
    assert r.status_code == 200, r.text


def test_models_need_key(auth_server):
    assert_error(requests.get(auth_server.url("/v1/models"), timeout=5), 401)
    assert_error(requests.get(auth_server.url("/v1/models/" + MODEL), timeout=5), 401)
    r = requests.get(auth_server.url("/v1/models"), headers={"Authorization": "Bearer " + KEY}, timeout=5)
    assert r.status_code == 200 and r.json()["data"][0]["id"] == MODEL


def test_embeddings_need_key(auth_server):
    assert_error(_post(auth_server, {}, "/v1/embeddings", {"model": MODEL, "input": "x"}), 401)
    r = _post(auth_server, {"x-api-key": KEY}, "/v1/embeddings", {"model": MODEL, "input": "x"})
    assert r.status_code == 200


def test_health_without_key(auth_server):
    r = requests.get(auth_server.url("/health"), timeout=5)
    assert r.status_code == 200
    assert r.json()["status"] == "ok"


def test_stream_needs_key(auth_server):
    r = requests.post(auth_server.url("/v1/chat/completions"), json=chat_body(stream=True), timeout=10)
    assert_error(r, 401)
    auth_server.api_key = KEY
    try:
        st = stream_request(auth_server, "/v1/chat/completions", chat_body(max_tokens=4))
    finally:
        auth_server.api_key = None
    assert st.status == 200 and st.done


def test_auth_checked_before_body(auth_server):
    """A request without the key is refused even with a huge declared body."""
    r = requests.post(auth_server.url("/v1/chat/completions"), data=b"{" * 10000,
                      headers={"Content-Type": "application/json"}, timeout=10)
    assert_error(r, 401)


def test_unknown_path_with_auth(auth_server):
    r = requests.get(auth_server.url("/v1/unknown"), timeout=5)
    assert r.status_code in (401, 404)
