"""paraqa_utils.llm.store: the cache key, the append-only disk cache and the spending ledger."""
from __future__ import annotations

import dataclasses
import json

import pytest

from paraqa_utils.llm.store import CACHE_FILE, DiskCache, Ledger, LLMRequest, LLMResult, cache_key

MSGS = ({"role": "system", "content": "be brief"}, {"role": "user", "content": "what is ParaQA?"})
SCHEMA = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}


def req(**kw) -> LLMRequest:
    return LLMRequest(messages=list(MSGS), **kw)


def key(n: int) -> str:
    return cache_key("m", LLMRequest(messages=[{"role": "user", "content": f"q{n}"}]))


# --- cache_key ---------------------------------------------------------------------------------------------------
def test_cache_key_is_a_stable_sha256_hex_digest():
    k = cache_key("m", req())
    assert len(k) == 64 and int(k, 16) >= 0 and k == k.lower()
    assert cache_key("m", req()) == k  # the same request, built again
    # a message list, a tuple and dicts with another key order are the same request
    assert cache_key("m", LLMRequest(messages=tuple(MSGS))) == k
    assert cache_key("m", LLMRequest(messages=[{"content": m["content"], "role": m["role"]} for m in MSGS])) == k
    # schema key order does not matter either (sort_keys)
    reordered = {"required": ["answer"], "properties": SCHEMA["properties"], "type": "object"}
    assert cache_key("m", req(json_schema=SCHEMA)) == cache_key("m", req(json_schema=reordered))


@pytest.mark.parametrize("change", [
    {"temperature": 0.7}, {"max_tokens": 64}, {"top_p": 0.9}, {"seed": 1}, {"seed": 0},
    {"json_schema": SCHEMA}, {"schema_name": "other"},
])
def test_cache_key_changes_with_every_field_that_shapes_the_reply(change):
    assert cache_key("m", req(**change)) != cache_key("m", req())


def test_cache_key_changes_with_model_and_messages():
    base = cache_key("m", req())
    assert cache_key("m2", req()) != base
    assert cache_key("m", LLMRequest(messages=[*MSGS[:1], {"role": "user", "content": "what is ParaQA"}])) != base
    assert cache_key("m", LLMRequest(messages=[{"role": "assistant", "content": m["content"]} for m in MSGS])) != base
    assert cache_key("m", LLMRequest(messages=list(MSGS[::-1]))) != base  # order of turns matters
    assert cache_key("m", LLMRequest(messages=list(MSGS[1:]))) != base


def test_cache_key_ignores_tag_validator_and_the_request_model_field():
    def v(_):
        return None
    base = cache_key("m", req())
    assert cache_key("m", req(tag=("item", 3))) == base
    assert cache_key("m", req(validator=v)) == base
    # the model that counts is the one passed in (the client resolves req.model or its own)
    assert cache_key("m", req(model="other")) == base


def test_sampling_drops_unset_values():
    assert req().sampling() == {"temperature": 0.0, "max_tokens": 512}
    assert req(top_p=0.5, seed=0).sampling() == {"temperature": 0.0, "max_tokens": 512, "top_p": 0.5, "seed": 0}


# --- DiskCache ---------------------------------------------------------------------------------------------------
def test_disk_cache_put_get_and_reload(tmp_path):
    c = DiskCache(tmp_path / "sub")
    assert len(c) == 0 and c.get(key(0)) is None
    entries = {key(i): {"ok": True, "text": f"t{i}", "ünï": "çödé"} for i in range(5)}
    for k, e in entries.items():
        c.put(k, e)
    assert len(c) == 5 and all(c.get(k) == e for k, e in entries.items())
    c.close()
    assert c.get(key(0)) is None  # closed: no reads
    lines = (tmp_path / "sub" / CACHE_FILE).read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5 and all(line.split("\t", 1)[0] in entries for line in lines)
    again = DiskCache(tmp_path / "sub")
    assert len(again) == 5 and all(again.get(k) == e for k, e in entries.items())
    assert again.get(key(99)) is None
    again.close()


def test_disk_cache_later_entry_for_a_key_wins_also_after_reload(tmp_path):
    c = DiskCache(tmp_path)
    c.put(key(1), {"text": "old"})
    c.put(key(2), {"text": "other"})
    c.put(key(1), {"text": "new"})
    assert c.get(key(1)) == {"text": "new"} and len(c) == 2
    c.close()
    again = DiskCache(tmp_path)
    assert again.get(key(1)) == {"text": "new"} and again.get(key(2)) == {"text": "other"} and len(again) == 2
    again.close()


def test_disk_cache_without_a_folder_stores_nothing(tmp_path):
    c = DiskCache(None)
    assert c.path is None
    c.put(key(1), {"text": "x"})
    assert c.get(key(1)) is None and len(c) == 0
    c.close()


def test_disk_cache_skips_a_torn_last_line_and_seals_it(tmp_path):
    c = DiskCache(tmp_path)
    for i in range(3):
        c.put(key(i), {"ok": True, "text": f"t{i}"})
    c.close()
    path = tmp_path / CACHE_FILE
    with open(path, "ab") as f:
        f.write(key(7).encode() + b'\t{"ok": true, "te')  # killed in the middle of a write
    again = DiskCache(tmp_path)
    assert len(again) == 3 and again.get(key(7)) is None and again.get(key(2))["text"] == "t2"
    again.put(key(7), {"ok": True, "text": "t7"})  # asked again, appended after a sealing newline
    assert again.get(key(7))["text"] == "t7"
    again.close()
    raw = path.read_bytes()
    assert raw.endswith(b"\n") and raw.count(b"\n") == 5  # 3 good + sealed torn + the new one
    third = DiskCache(tmp_path)
    assert len(third) == 4 and third.get(key(7))["text"] == "t7" and third.get(key(0))["text"] == "t0"
    third.close()


def test_disk_cache_a_torn_line_that_ends_in_a_brace_is_a_miss_not_an_error(tmp_path):
    c = DiskCache(tmp_path)
    c.put(key(0), {"ok": True, "text": "t0"})
    c.close()
    with open(tmp_path / CACHE_FILE, "ab") as f:
        f.write(key(1).encode() + b'\t{"data": {"a": 1}')  # torn right after an inner object
    DiskCache(tmp_path).close()  # the next load seals the line with a newline
    third = DiskCache(tmp_path)
    assert third.get(key(1)) is None  # indexed (it ends in '}\n') but not JSON: a miss
    assert third.get(key(0)) == {"ok": True, "text": "t0"}
    third.put(key(1), {"ok": True, "text": "t1"})
    assert third.get(key(1)) == {"ok": True, "text": "t1"}
    third.close()


def test_disk_cache_ignores_lines_that_are_not_entries(tmp_path):
    path = tmp_path / CACHE_FILE
    good = f"{key(0)}\t{json.dumps({'text': 'ok'})}\n"
    path.write_text("garbage line }\n" + "x" * 64 + "\tnot json\n" + good)
    c = DiskCache(tmp_path)
    assert len(c) == 1 and c.get(key(0)) == {"text": "ok"}
    c.close()


# --- records and the ledger --------------------------------------------------------------------------------------
def test_request_equality_ignores_tag_and_validator_and_is_frozen():
    assert req(tag=1) == req(tag=2)
    assert req(validator=lambda d: None) == req()
    assert req(seed=1) != req()
    with pytest.raises(dataclasses.FrozenInstanceError):
        req().temperature = 1.0  # type: ignore[misc]


def test_result_defaults():
    r = LLMResult(key="k", ok=False)
    assert (r.text, r.data, r.error, r.error_kind, r.cached, r.attempts) == ("", None, "", "", False, 0)


def test_ledger_counts_and_rounds():
    led = Ledger("02_synthesize")
    led.count(led.errors, "timeout")
    led.count(led.errors, "timeout")
    led.count(led.errors, "http_429")
    led.count(led.calls_per_endpoint, "http://a")
    assert led.errors == {"timeout": 2, "http_429": 1} and led.calls_per_endpoint == {"http://a": 1}
    led.cost_usd, led.wall_s = 0.123456789, 1.23456
    d = led.as_dict()
    assert d["name"] == "02_synthesize" and d["cost_usd"] == 0.123457 and d["wall_s"] == 1.235
    assert d["errors"] == {"timeout": 2, "http_429": 1}
    assert set(d) == {f.name for f in dataclasses.fields(Ledger)}
    json.dumps(d)  # metrics.json can hold it
    assert Ledger("b").errors is not Ledger("c").errors  # no shared mutable default


def test_ledger_cost_follows_the_clients_price_table(tmp_path):
    from paraqa_utils.llm import LLMClient

    c = LLMClient(["http://127.0.0.1:9/v1"], model="m", cache_dir=None, progress=False,
                  price_table={"m": (2.0, 10.0)})
    c._spend("m", 1_000_000, 500_000)
    c._spend("m", 250_000, 0)
    c._spend("unpriced", 1_000, 1_000)  # a model without a price costs nothing but counts tokens
    led = c.ledger
    assert led.prompt_tokens == 1_251_000 and led.completion_tokens == 501_000
    assert led.cost_usd == pytest.approx(2.0 + 5.0 + 0.5)
    assert led.as_dict()["cost_usd"] == 7.5
    assert c.describe()["price_usd_per_1m_tokens"] == {"m": (2.0, 10.0)}
    free = LLMClient(["http://127.0.0.1:9/v1"], model="m", cache_dir=None, progress=False)
    free._spend("m", 1000, 1000)
    assert free.ledger.cost_usd == 0.0 and free.ledger.prompt_tokens == 1000
