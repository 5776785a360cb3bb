"""The LLM client against the fault-injecting loopback server: order, limits, retries, cache, schemas, ledger, keys."""
import asyncio
import json
import threading
import time

import pytest

from paraqa_utils import llm
from paraqa_utils.llm import client as llm_client
from paraqa_utils.llm import LLMClient, LLMRequest
from paraqa_utils.llm.server import Endpoint
from tests.unit.test_llm_fakes import CONTENT_FAULTS, FakeLLMServer, answered_per_prompt

SCHEMA = {"type": "object", "properties": {"answer": {"type": "string", "minLength": 1}},
          "required": ["answer"], "additionalProperties": False}


def answer_reply(body):
    return json.dumps({"answer": "re: " + body["messages"][0]["content"][:30]})


def client(url, tmp_path, **kw):
    kw = {"model": "fake-model", "cache_dir": tmp_path / "cache", "concurrency": 4, "timeout_s": 5,
          "max_retries": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.05, "progress": False, **kw}
    return LLMClient([url], **kw)


def reqs(n, prefix="q", **kw):
    return [LLMRequest(messages=[{"role": "user", "content": f"{prefix}{i} please"}], tag=i, **kw) for i in range(n)]


def test_batch_keeps_order_and_a_rerun_is_served_from_the_cache(tmp_path):
    with FakeLLMServer(max_lifetime_s=30) as srv:
        res = client(srv.base_url, tmp_path).complete(reqs(20))
        assert [r.tag for r in res] == list(range(20)) and all(r.ok for r in res)
        assert [json.loads(r.text)["echo"] for r in res] == [f"q{i} please" for i in range(20)]
        assert srv.n_requests == 20
        again = client(srv.base_url, tmp_path)
        res2 = again.complete(reqs(20) + reqs(2, prefix="new"))
        assert srv.n_requests == 22, "only the two new requests may reach the server"
        assert [r.text for r in res2[:20]] == [r.text for r in res] and all(r.cached for r in res2[:20])
        assert again.ledger.cache_hits == 20 and again.ledger.calls == 2 and again.ledger.requests == 22
    # the key covers sampling and schema: changing either is a new call
    assert len({llm.cache_key("m", r) for r in (reqs(1)[0], reqs(1, temperature=0.5)[0],
                                                reqs(1, json_schema=SCHEMA)[0], reqs(1, seed=3)[0])}) == 4


def test_concurrency_limit_holds_and_is_used(tmp_path):
    with FakeLLMServer(latency_s=0.05, max_lifetime_s=30) as srv:
        t0 = time.monotonic()
        assert all(r.ok for r in client(srv.base_url, tmp_path, concurrency=6, cache_dir=None).complete(reqs(36)))
        assert srv.max_in_flight == 6 and time.monotonic() - t0 >= 36 / 6 * 0.05 * 0.9


def test_round_robin_over_replicas(tmp_path):
    with FakeLLMServer(max_lifetime_s=30) as a, FakeLLMServer(max_lifetime_s=30) as b:
        c = LLMClient([Endpoint(base_url=f"{a.base_url},{b.base_url}", model="fake-model")], cache_dir=None,
                      concurrency=3, progress=False)
        assert all(r.ok for r in c.complete(reqs(36)))
        assert a.n_requests == b.n_requests == 18
        assert c.ledger.calls_per_endpoint == {a.base_url: 18, b.base_url: 18}


def test_429_retry_after_is_honoured(tmp_path):
    with FakeLLMServer(faults={"q0": ["429:0.4"]}, max_lifetime_s=30) as srv:
        c = client(srv.base_url, tmp_path, concurrency=1)
        t0 = time.monotonic()
        (r,) = c.complete(reqs(1))
        assert r.ok and r.attempts == 2 and time.monotonic() - t0 >= 0.4  # backoff alone would be ~0.01 s
        assert c.ledger.retries == 1 and c.ledger.errors == {"http_429": 1}


def test_5xx_hung_and_dropped_connections_are_retried(tmp_path):
    faults = {"q0": ["500", "503"], "q1": ["hang"], "q2": ["close"]}
    with FakeLLMServer(faults=faults, max_lifetime_s=30) as srv:
        c = client(srv.base_url, tmp_path, timeout_s=0.5)
        res = c.complete(reqs(4))
        assert all(r.ok for r in res) and [r.attempts for r in res] == [3, 2, 2, 1]
        assert c.ledger.errors == {"http_500": 1, "http_503": 1, "timeout": 1, "connection": 1}
        assert c.ledger.retries == 4 and c.ledger.failures == 0


def test_without_aiohttp_the_httpx2_transport_classifies_faults_alike(tmp_path, monkeypatch):
    def missing(**_):
        raise RuntimeError("To use the aiohttp client you must have installed the package with the `aiohttp` extra")

    monkeypatch.setattr(llm_client.openai, "DefaultAioHttpClient", missing)
    assert llm_client._Target("http://127.0.0.1:9/v1", "k", 1.0, 1, "none").transport == "httpx2"
    faults = {"q0": ["500"], "q1": ["hang"], "q2": ["close"]}
    with FakeLLMServer(faults=faults, max_lifetime_s=30) as srv:
        c = client(srv.base_url, tmp_path, timeout_s=0.5)
        res = c.complete(reqs(3))
        assert all(r.ok for r in res) and [r.attempts for r in res] == [2, 2, 2]
        assert c.ledger.errors == {"http_500": 1, "timeout": 1, "connection": 1}


def test_final_failure_is_recorded_not_raised_and_retried_on_resume(tmp_path):
    with FakeLLMServer(faults={"q1": ["500"] * 9, "q2": ["400"]}, max_lifetime_s=30) as srv:
        c = client(srv.base_url, tmp_path, max_retries=2)
        res = c.complete(reqs(4))
        assert [r.ok for r in res] == [True, False, False, True]
        assert res[1].error_kind == "http_500" and res[1].attempts == 3 and "500" in res[1].error
        assert res[2].error_kind == "http_400" and res[2].attempts == 1, "a 400 is not retried"
        assert c.ledger.failures == 2 and c.ledger.errors["final_http_500"] == 1
    with FakeLLMServer(max_lifetime_s=30) as srv2:  # a later run: transport failures are not cached
        res = client(srv2.base_url, tmp_path).complete(reqs(4))
        assert all(r.ok for r in res) and srv2.n_requests == 2


def test_server_dying_mid_run_then_resume_sends_only_the_missing(tmp_path):
    with FakeLLMServer(latency_s=0.02, max_lifetime_s=30) as srv:
        def kill_when_busy():
            deadline = time.monotonic() + 10
            while srv.n_answered < 10 and time.monotonic() < deadline:
                time.sleep(0.005)
            srv.stop()
        threading.Thread(target=kill_when_busy, daemon=True).start()
        res = client(srv.base_url, tmp_path, max_retries=1).complete(reqs(60))
    done = [r for r in res if r.ok]
    failed = [r for r in res if not r.ok]
    assert 10 <= len(done) < 60 and failed and {r.error_kind for r in failed} <= {"connection", "timeout"}
    with FakeLLMServer(max_lifetime_s=30) as srv2:
        res2 = client(srv2.base_url, tmp_path).complete(reqs(60))
        assert all(r.ok for r in res2) and srv2.n_requests == len(failed)
        assert max(answered_per_prompt(srv2).values()) == 1
    assert [r.text for r in res2 if r.tag in {d.tag for d in done}] == [d.text for d in done]


def test_bad_replies_are_fed_back_then_recorded_and_cached(tmp_path):
    faults = {"q0": ["malformed"], "q1": ["wrong_schema", "wrong_schema"], "q2": ["refusal", "refusal"],
              "q3": ["empty", "empty"], "q4": ["truncated", "truncated"]}
    with FakeLLMServer(reply=answer_reply, faults=faults, max_lifetime_s=30) as srv:
        c = client(srv.base_url, tmp_path, max_invalid_retries=1)
        res = c.complete(reqs(6, json_schema=SCHEMA))
        assert res[0].ok and res[0].data == {"answer": "re: q0 please"} and res[0].attempts == 2
        second = [b for b in srv.bodies if "q0" in b["messages"][0]["content"]][1]["messages"]
        assert second[1] == {"role": "assistant", "content": CONTENT_FAULTS["malformed"]}
        assert "not valid JSON" in second[2]["content"]
        assert [r.error_kind for r in res[1:5]] == ["schema", "refusal", "empty", "truncated"]
        assert "can't help" in res[2].error
        assert "answer" in res[1].error and res[1].data == {"items": 3}, "the invalid data is kept for salvage"
        assert res[5].ok and c.ledger.invalid_retries == 5 and c.ledger.failures == 4
        sent = srv.n_requests
        res2 = client(srv.base_url, tmp_path).complete(reqs(6, json_schema=SCHEMA))
        assert srv.n_requests == sent, "invalid final replies are cached: a rerun repeats no call"
        assert [r.error_kind for r in res2] == [r.error_kind for r in res]


def test_validator_feedback_and_stricter_validator_invalidates_cache(tmp_path):
    seen = []

    def need_long(data):
        seen.append(data)
        if len(data["answer"]) < 100:
            raise ValueError("answer must have at least 100 characters")
    with FakeLLMServer(reply=answer_reply, max_lifetime_s=30) as srv:
        (r,) = client(srv.base_url, tmp_path, max_invalid_retries=2).complete(reqs(1, json_schema=SCHEMA))
        assert r.ok and srv.n_requests == 1
        (r2,) = client(srv.base_url, tmp_path, max_invalid_retries=2).complete(
            reqs(1, json_schema=SCHEMA, validator=need_long))
        assert not r2.ok and r2.error_kind == "schema" and "100 characters" in r2.error
        assert srv.n_requests == 4  # the cached reply fails the stricter check, so it is asked again (1 + 2 retries)
        assert "at least 100 characters" in srv.bodies[-1]["messages"][-1]["content"]


@pytest.mark.parametrize("status", [400, 500])
def test_response_format_is_sent_and_degraded_when_refused(tmp_path, status):
    with FakeLLMServer(reply=answer_reply, supports=("json_object",), refuse_status=status, max_lifetime_s=30) as srv:
        c = client(srv.base_url, tmp_path)
        (r,) = c.complete(reqs(1, json_schema=SCHEMA, schema_name="qa"))
        assert r.ok and r.attempts == 2 and c.ledger.failures == 0 and c.ledger.retries == 0
        first, second = srv.bodies
        assert first["response_format"] == {"type": "json_schema", "json_schema": {"name": "qa", "schema": SCHEMA}}
        assert second["response_format"] == {"type": "json_object", "schema": SCHEMA}  # llama-cpp-python's form
        c.complete(reqs(1, prefix="later", json_schema=SCHEMA))
        assert len(srv.bodies) == 3, "a later batch starts with the form the server accepted"
    with FakeLLMServer(reply=answer_reply, max_lifetime_s=30) as srv:
        client(srv.base_url, tmp_path, response_format="none", cache_dir=None).complete(reqs(1, json_schema=SCHEMA))
        assert "response_format" not in srv.bodies[0] and srv.bodies[0]["max_tokens"] == 512
    emb = LLMClient([Endpoint(base_url="http://127.0.0.1:9/v1", model="m", embedded=True)], response_format="auto")
    assert emb.formats == ["json_object_schema"]


def test_rate_limiter_spaces_requests_and_tokens():
    async def go():
        lim = llm.RateLimiter(per_minute=1200)  # 20 per second, bucket of 20
        t0 = time.monotonic()
        for _ in range(30):
            await lim.acquire(1)
        t_rpm = time.monotonic() - t0
        big = llm.RateLimiter(per_minute=600)  # 10 tokens/s, bucket of 10
        t0 = time.monotonic()
        await big.acquire(25)  # bigger than the bucket: allowed, leaves a debt of 15
        await big.acquire(1)   # waits for the debt (1.6 s)
        return t_rpm, time.monotonic() - t0
    t_rpm, t_tpm = asyncio.run(go())
    assert 0.4 <= t_rpm < 1.5 and 1.4 <= t_tpm < 3.0


def test_rpm_limit_holds_end_to_end(tmp_path):
    with FakeLLMServer(max_lifetime_s=30) as srv:
        t0 = time.monotonic()
        client(srv.base_url, tmp_path, rpm=600, cache_dir=None).complete(reqs(20))  # 10/s, burst 10
        assert time.monotonic() - t0 >= 0.9 and srv.n_requests == 20


def test_api_key_comes_from_the_environment_and_is_written_nowhere(tmp_path, monkeypatch):
    secret = "sk-test-" + "9" * 24
    monkeypatch.setenv("PARAQA_TEST_KEY", secret)
    with FakeLLMServer(max_lifetime_s=30) as srv:
        c = LLMClient([Endpoint(base_url=srv.base_url, model="fake-model", api_key_env="PARAQA_TEST_KEY")],
                      cache_dir=tmp_path / "cache", progress=False, price_table={"fake-model": (1.0, 2.0)})
        res = c.complete(reqs(3))
        assert srv.authorizations == {f"Bearer {secret}"}
    written = (tmp_path / "cache" / llm.CACHE_FILE).read_text() + json.dumps(c.ledger.as_dict()) + json.dumps(
        c.describe()) + repr(res)
    assert secret not in written and "PARAQA_TEST_KEY" in json.dumps(c.describe())
    led = c.ledger
    assert led.cost_usd == pytest.approx((led.prompt_tokens * 1.0 + led.completion_tokens * 2.0) / 1e6)
    assert led.prompt_tokens == sum(r.prompt_tokens for r in res) > 0
    monkeypatch.delenv("PARAQA_TEST_KEY")
    with pytest.raises(llm.LLMConfigError, match="PARAQA_TEST_KEY") as info:
        LLMClient([Endpoint(base_url="https://llm.example.org/v1", model="m", api_key_env="PARAQA_TEST_KEY")])
    assert secret not in str(info.value)
    assert llm.public_url("https://user:pw@h.example:8443/v1?key=abc") == "https://h.example:8443/v1"


def test_sync_wrapper_works_inside_a_running_event_loop(tmp_path):
    with FakeLLMServer(max_lifetime_s=30) as srv:
        c = client(srv.base_url, tmp_path)

        async def notebook_cell():  # Jupyter runs cells inside an event loop
            return c.complete(reqs(3))
        assert all(r.ok for r in asyncio.run(notebook_cell()))


def test_cache_skips_a_torn_last_line_and_keeps_appending(tmp_path):
    cache = llm.DiskCache(tmp_path)
    keys = [llm.cache_key("m", r) for r in reqs(3)]
    for i, k in enumerate(keys):
        cache.put(k, {"ok": True, "text": f"t{i}"})
    cache.close()
    with open(tmp_path / llm.CACHE_FILE, "ab") as f:
        f.write(b"f" * 64 + b'\t{"ok": tr')  # a kill in the middle of a write
    again = llm.DiskCache(tmp_path)
    assert len(again) == 3 and again.get(keys[1]) == {"ok": True, "text": "t1"}
    new_key = llm.cache_key("m", reqs(4)[3])
    again.put(new_key, {"ok": True, "text": "t3"})
    again.close()
    third = llm.DiskCache(tmp_path)
    assert len(third) == 4 and third.get(new_key)["text"] == "t3" and third.get(keys[0])["text"] == "t0"


def test_json_replies_are_read_tolerantly_but_not_invented():
    assert llm.parse_json_reply('```json\n{"a": 1}\n```') == {"a": 1}
    assert llm.parse_json_reply('Sure! Here it is: {"a": [2]} Hope this helps.') == {"a": [2]}
    assert llm.parse_json_reply('{"a": "line one\nline two"}') == {"a": "line one\nline two"}  # llama.cpp lets it by
    for bad in ("I cannot do that.", '{"a": ', "[1, 2"):
        with pytest.raises(ValueError, match="not valid JSON"):
            llm.parse_json_reply(bad)
    assert llm.retry_after_s(type("E", (), {"response": type("R", (), {"headers": {"retry-after-ms": "1500"}})})()) == 1.5
