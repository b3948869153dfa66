"""Structured outputs: response_format json_schema (a grammar made from the
schema by llama.cpp's converter), json_object, and the llama-server
extension `grammar` (GBNF). With the output constrained, even the random
test model's answers must validate.
"""
import json

import jsonschema

from conftest import assert_error, chat_body, completion_body, server_args, stream_request

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 16},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]}, "maxItems": 3},
        "pet": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {"kind": {"const": "cat"}},
                                             "required": ["kind"], "additionalProperties": False}]},
    },
    "required": ["name", "age", "tags", "pet"],
    "additionalProperties": False,
}


def schema_format(schema, name="person"):
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def test_json_schema_validates_20_of_20_at_temperature_1(make_server):
    srv = make_server(server_args(parallel=2, ctx=1024, capacity=2))
    for i in range(20):
        r = srv.post("/v1/chat/completions", chat_body("A person, please", max_tokens=300, temperature=1.0, seed=i,
                                                       response_format=schema_format(PERSON)))
        assert r.status_code == 200, r.text
        c = r.json()["choices"][0]
        assert c["finish_reason"] == "stop", c
        jsonschema.validate(json.loads(c["message"]["content"]), PERSON)


def test_json_schema_streamed_and_in_completions(make_server):
    srv = make_server(server_args(parallel=1))
    s = stream_request(srv, "/v1/chat/completions",
                       chat_body("x", max_tokens=300, stream=True, response_format=schema_format(PERSON)))
    assert s.status == 200
    jsonschema.validate(json.loads(s.text(chat=True)), PERSON)
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 4}
    r = srv.post("/v1/completions", completion_body("Numbers:", max_tokens=100, response_format=schema_format(schema)))
    assert r.status_code == 200, r.text
    jsonschema.validate(json.loads(r.json()["choices"][0]["text"]), schema)


def test_grammar_extension(make_server):
    srv = make_server(server_args(parallel=1))
    for seed in range(5):
        r = srv.post("/v1/chat/completions", chat_body("?", max_tokens=10, temperature=1.0, seed=seed,
                                                       grammar='root ::= "yes" | "no"'))
        assert r.status_code == 200, r.text
        assert r.json()["choices"][0]["message"]["content"] in ("yes", "no")


def test_json_object_still_works(make_server):
    srv = make_server(server_args(parallel=1))
    stopped = 0
    for seed in range(6):
        r = srv.post("/v1/chat/completions", chat_body("x", max_tokens=300, temperature=1.0, seed=seed,
                                                       response_format={"type": "json_object"}))
        assert r.status_code == 200, r.text
        c = r.json()["choices"][0]
        assert c["message"]["content"].lstrip().startswith("{"), c
        if c["finish_reason"] == "stop":  # a string may run past max_tokens: no schema bounds it
            assert isinstance(json.loads(c["message"]["content"]), dict)
            stopped += 1
    assert stopped >= 1


def test_bad_schemas_and_grammars_are_400s(make_server):
    srv = make_server(server_args(parallel=1))
    r = srv.post("/v1/chat/completions", chat_body(response_format=schema_format(
        {"type": "object", "properties": {"a": {"$ref": "#/definitions/missing"}}})))
    assert_error(r, 400, "invalid_request_error", param="response_format.json_schema.schema",
                 in_message=("missing",))
    r = srv.post("/v1/chat/completions", chat_body(grammar="root ::= (("))
    assert_error(r, 400, "invalid_request_error", param="grammar")
    r = srv.post("/v1/chat/completions", chat_body(grammar='root ::= "a"', response_format={"type": "json_object"}))
    assert_error(r, 400, "invalid_request_error", param="grammar")
    r = srv.post("/v1/chat/completions", chat_body(response_format={"type": "json_schema"}))
    assert_error(r, 400, "invalid_request_error", param="response_format.json_schema")
    # the server keeps serving
    assert srv.post("/v1/chat/completions", chat_body(max_tokens=2)).status_code == 200
