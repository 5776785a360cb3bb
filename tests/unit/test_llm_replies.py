"""paraqa_utils.llm.replies: reading JSON replies, schema checks, and classifying failed calls."""
from __future__ import annotations

import asyncio
import email.utils
import time

import httpx
import openai
import pytest

from paraqa_utils.llm.replies import (RETRY_STATUS, check_reply, error_kind, parse_json_reply, retry_after_s,
                                      schema_error)
from paraqa_utils.llm.store import LLMRequest

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "minLength": 1},
                                           "kind": {"enum": ["yes", "no"]}},
          "required": ["answer"], "additionalProperties": False}
REQUEST = httpx.Request("POST", "http://127.0.0.1:8080/v1/chat/completions")


def req(**kw) -> LLMRequest:
    return LLMRequest(messages=[{"role": "user", "content": "q"}], **kw)


# --- parse_json_reply --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("text, want", [
    ('{"a": 1}', {"a": 1}),
    ('  \n{"a": 1}\n ', {"a": 1}),
    ('```json\n{"a": 1}\n```', {"a": 1}),
    ('```\n{"a": [1, 2]}\n```', {"a": [1, 2]}),
    ('```json{"a": 1}```', {"a": 1}),
    ('Sure! Here it is: {"a": {"b": "c"}} Hope this helps.', {"a": {"b": "c"}}),
    ('```JSON\n{"a": 1}\n```', {"a": 1}),  # fence tag in capitals: found by the brace fallback
    ('{"a": "line one\nline two"}', {"a": "line one\nline two"}),  # raw newline in a string (llama.cpp)
    ('[1, 2, 3]', [1, 2, 3]),  # any JSON value when the whole body is JSON
    ('"just a string"', "just a string"),
])
def test_parse_json_reply_tolerates_fences_and_chatter(text, want):
    assert parse_json_reply(text) == want


@pytest.mark.parametrize("text", [
    "", "I cannot do that.", '{"a": ', "[1, 2", '{"a": 1} and also {"b": 2}',  # two objects: not one
    "} backwards {", "Here: [1, 2] ok",  # chatter around an array is not salvaged (only objects)
    '```json\n{"a": 1,}\n```',
])
def test_parse_json_reply_raises_value_error_rather_than_inventing(text):
    with pytest.raises(ValueError, match=r"not valid JSON \(.+ at char \d+\)"):
        parse_json_reply(text)


# --- schema_error ------------------------------------------------------------------------------------------------
def test_schema_error_names_the_first_violation_or_returns_none():
    assert schema_error(SCHEMA, {"answer": "x"}) is None
    assert schema_error(SCHEMA, {"answer": "x", "kind": "yes"}) is None
    assert schema_error(SCHEMA, {}) == "schema violation: data must contain ['answer'] properties"
    assert schema_error(SCHEMA, {"answer": 3}) == "schema violation: data.answer must be string"
    assert schema_error(SCHEMA, {"answer": "x", "kind": "maybe"}) == \
        "schema violation: data.kind must be one of ['yes', 'no']"
    assert "data must not contain" in schema_error(SCHEMA, {"answer": "x", "extra": 1})
    assert schema_error(SCHEMA, [1]) == "schema violation: data must be object"
    nested = {"type": "object", "properties": {"qa_pairs": {"type": "array", "items": {
        "type": "object", "properties": {"question_type": {"enum": ["a", "b"]}}}}}}
    assert schema_error(nested, {"qa_pairs": [{"question_type": "a"}, {"question_type": "z"}]}) == \
        "schema violation: data.qa_pairs[1].question_type must be one of ['a', 'b']"


def test_schema_error_message_is_capped():
    schema = {"type": "object", "properties": {"k": {"enum": ["v" * 100 + str(i) for i in range(20)]}}}
    msg = schema_error(schema, {"k": "nope"})
    assert msg.startswith("schema violation: data.k must be one of") and len(msg) <= len("schema violation: ") + 300


def test_schema_error_compiles_equal_schemas_once_regardless_of_key_order():
    from paraqa_utils.llm import replies

    a = {"type": "object", "required": ["zz_unique_key"]}
    b = {"required": ["zz_unique_key"], "type": "object"}
    before = len(replies._VALIDATORS)
    assert schema_error(a, {}) == schema_error(b, {}) is not None
    assert len(replies._VALIDATORS) == before + 1


# --- check_reply -------------------------------------------------------------------------------------------------
def test_check_reply_refusal_and_empty_come_first():
    assert check_reply('{"answer": "x"}', "I will not", "stop", req(json_schema=SCHEMA)) == (
        None, "refusal", "the model refused: I will not")
    data, kind, err = check_reply("anything", "r" * 500, "stop", req())
    assert kind == "refusal" and len(err) == len("the model refused: ") + 200
    for blank in ("", "  \n\t"):
        assert check_reply(blank, None, "stop", req()) == (None, "empty", "the reply was empty")


def test_check_reply_without_schema_or_validator_returns_the_text():
    assert check_reply("plain words, not JSON", None, "length", req()) == ("plain words, not JSON", "", "")


def test_check_reply_with_a_schema():
    assert check_reply('```json\n{"answer": "hi"}\n```', None, "stop", req(json_schema=SCHEMA)) == (
        {"answer": "hi"}, "", "")
    data, kind, err = check_reply('{"answer": ""}', None, "stop", req(json_schema=SCHEMA))
    assert (data, kind) == ({"answer": ""}, "schema") and err.startswith("schema violation: data.answer")
    data, kind, err = check_reply("no json here", None, "stop", req(json_schema=SCHEMA))
    assert (data, kind) == (None, "invalid_json") and err.startswith("the reply is not valid JSON")
    assert "max_tokens" not in err
    data, kind, err = check_reply('{"answer": "cut', None, "length", req(json_schema=SCHEMA))
    assert (data, kind) == (None, "truncated") and err.endswith("(cut off at max_tokens)")


def test_check_reply_with_a_validator():
    def validator(data):
        if data.get("n", 0) < 3:
            raise ValueError("n must be at least 3 " + "x" * 400)

    assert check_reply('{"n": 5}', None, "stop", req(validator=validator)) == ({"n": 5}, "", "")
    data, kind, err = check_reply('{"n": 1}', None, "stop", req(validator=validator))
    assert (data, kind) == ({"n": 1}, "schema") and err.startswith("n must be at least 3") and len(err) == 300
    # a validator alone still requires JSON
    assert check_reply("nope", None, "stop", req(validator=validator))[1] == "invalid_json"
    # the schema is checked before the validator
    called = []
    data, kind, err = check_reply('{"answer": 1}', None, "stop",
                                  req(json_schema=SCHEMA, validator=lambda d: called.append(d)))
    assert kind == "schema" and "data.answer must be string" in err and not called


# --- retry_after_s -----------------------------------------------------------------------------------------------
def status_error(code: int, headers: dict | None = None) -> openai.APIStatusError:
    return openai.APIStatusError(f"error {code}", response=httpx.Response(code, request=REQUEST, headers=headers),
                                 body=None)


def test_retry_after_from_real_response_headers():
    assert retry_after_s(status_error(429, {"Retry-After": "2"})) == 2.0  # headers are case-insensitive
    assert retry_after_s(status_error(429, {"retry-after": "0.25"})) == 0.25
    assert retry_after_s(status_error(429, {"retry-after-ms": "1500"})) == 1.5
    # retry-after-ms is the more precise one and wins
    assert retry_after_s(status_error(429, {"retry-after-ms": "100", "retry-after": "9"})) == pytest.approx(0.1)
    assert retry_after_s(status_error(429, {"retry-after": "-5"})) == 0.0
    assert retry_after_s(status_error(429)) is None
    assert retry_after_s(status_error(503, {"x-other": "1"})) is None


def test_retry_after_as_an_http_date():
    future = email.utils.formatdate(time.time() + 30, usegmt=True)
    assert 25 <= retry_after_s(status_error(429, {"retry-after": future})) <= 31
    past = email.utils.formatdate(time.time() - 3600, usegmt=True)
    assert retry_after_s(status_error(429, {"retry-after": past})) == 0.0


def test_retry_after_a_bad_ms_value_falls_back_to_retry_after():
    assert retry_after_s(status_error(429, {"retry-after-ms": "soon", "retry-after": "3"})) == 3.0


def test_retry_after_for_exceptions_without_a_response():
    assert retry_after_s(ValueError("x")) is None
    assert retry_after_s(openai.APIConnectionError(request=REQUEST)) is None
    assert retry_after_s(asyncio.TimeoutError()) is None


def test_retry_after_an_unparseable_value_is_ignored():
    assert retry_after_s(status_error(429, {"retry-after": "soon"})) is None


# --- error_kind --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("code, retryable", [
    (408, True), (409, True), (429, True), (500, True), (502, True), (503, True), (504, True), (599, True),
    (400, False), (401, False), (403, False), (404, False), (413, False), (422, False),
])
def test_error_kind_of_http_status(code, retryable):
    assert error_kind(status_error(code)) == (f"http_{code}", retryable)


def test_retry_status_table():
    assert set(RETRY_STATUS) == {408, 409, 429}


def test_error_kind_timeouts():
    assert error_kind(asyncio.TimeoutError()) == ("timeout", True)
    assert error_kind(TimeoutError()) == ("timeout", True)
    assert error_kind(openai.APITimeoutError(request=REQUEST)) == ("timeout", True)


def chained(outer: BaseException, *causes: BaseException, context: bool = False) -> BaseException:
    exc = outer
    for c in causes:
        if context:
            exc.__context__ = c
        else:
            exc.__cause__ = c
        exc = c
    return outer


def test_a_timeout_caused_by_a_dropped_connection_is_a_connection_error():
    # openai's aiohttp transport reports a connection the server closed as a timeout; the cause tells
    assert error_kind(chained(openai.APITimeoutError(request=REQUEST), ConnectionResetError())) == (
        "connection", True)
    assert error_kind(chained(asyncio.TimeoutError(), RuntimeError("wrap"), ConnectionRefusedError(),
                              context=True)) == ("connection", True)
    aiohttp = pytest.importorskip("aiohttp")
    assert error_kind(chained(openai.APITimeoutError(request=REQUEST),
                              aiohttp.ServerDisconnectedError())) == ("connection", True)
    # ... but a timeout whose cause is itself a timeout (aiohttp's ServerTimeoutError is both) stays a timeout
    assert error_kind(chained(openai.APITimeoutError(request=REQUEST), aiohttp.ServerTimeoutError())) == (
        "timeout", True)


def test_the_cause_chain_is_followed_through_wrappers_and_a_cycle_ends():
    near = chained(asyncio.TimeoutError(), *[RuntimeError(str(i)) for i in range(5)], ConnectionResetError())
    assert error_kind(near) == ("connection", True)
    a, b = asyncio.TimeoutError(), RuntimeError("b")
    a.__context__, b.__context__ = b, a  # a cycle (possible with re-raised exceptions) must not hang
    assert error_kind(a) == ("timeout", True)


def test_error_kind_connection_errors_and_others():
    assert error_kind(openai.APIConnectionError(request=REQUEST)) == ("connection", True)
    assert error_kind(ValueError("bad")) == ("ValueError", False)
    assert error_kind(KeyError("k")) == ("KeyError", False)
    # a plain ConnectionError that is no openai error is not retried by this classifier
    assert error_kind(ConnectionResetError()) == ("ConnectionResetError", False)
