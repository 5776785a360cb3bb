"""Stage 02's small-model prompt profile: the prompt file, stretches and their plain-word voice, the grammar that
fixes the slots a small model gets wrong, its rejects, one call per pair through the real client, and the
quality check on kept pairs."""
import json
import re

import pytest
import yaml

from paraqa_utils import llm
from paraqa_utils import synthesize as S
from paraqa_utils.llm import LLMResult, schema_error
from paraqa_utils.prompts import path as prompt_path
from paraqa_utils.synthesize import small
from tests.unit.test_llm_fakes import FakeLLMServer
from tests.unit.test_synthesize import SAD, make_annotation, synth_cfg

PROMPT = small.load_small_prompt("small_pairs_v1.yaml")
LABEL_WORDS = "label_words_v1.txt"


def stretch_of(ex):
    """The stretch a worked example stands for, read from its voice line ("a woman, sounding sad")."""
    gender = "female" if ex["voice"].startswith("a woman") else "male"
    emotion = re.search(r"sounding (\w+)", ex["voice"]).group(1)
    return {"gender": gender, "emotion": emotion, "n_words": len(ex["words"].split())}


def test_every_worked_example_follows_the_grammar_it_teaches():
    """An example the grammar would refuse teaches the model a reply it cannot give."""
    for qtype in small.TYPES:
        for ex in PROMPT.types[qtype]["examples"]:
            err = schema_error(small.schema(qtype, stretch_of(ex)), {"question": ex["question"], "answer": ex["answer"]})
            assert err is None, (qtype, ex["question"], err)


def grams(text, n=5):
    words = re.findall(r"[a-z']+", re.sub(r"\{\w+\}", " ", text.lower()))
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def strings(node):
    if isinstance(node, str):
        return [node]
    items = node.values() if isinstance(node, dict) else node if isinstance(node, list) else []
    return [s for x in items for s in strings(x)]


def test_the_small_prompt_shares_no_five_word_run_with_the_reference_test_bank():
    ref = set().union(*(grams(s) for s in strings(yaml.safe_load(prompt_path("reference_qa_v1.yaml").read_text()))))
    ours = strings(yaml.safe_load(prompt_path("small_pairs_v1.yaml").read_text()))
    shared = {g for s in ours for g in grams(s) & ref}
    assert len(ours) > 50 and not shared, shared


def test_a_prompt_file_without_its_parts_is_refused_naming_them(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"system": "x", "types": {"C": PROMPT.types["C"], "CE": {"ask": "y"}}}))
    with pytest.raises(small.SmallPromptError) as err:
        small.load_small_prompt(bad)
    msg = str(err.value)
    assert "no 'input' text" in msg and "type CE" in msg and "type G" in msg and "type C:" not in msg


def test_stretches_join_one_voice_say_it_in_words_and_keep_numbers_out():
    sts = small.stretches(SAD)
    assert [s["segments"] for s in sts] == [[0, 1], [2]]  # 6 words < CHUNK_WORDS: the next sad segment joins
    assert sts[0]["voice"] == "a woman, sounding sad; even, steady and strained"
    assert sts[1]["voice"] == "a woman, sounding neutral; even, steady and plain" and sts[1]["n_words"] == 5
    assert sts[0]["words"].startswith("The meeting moved to Friday again I had")
    assert not any(re.search(r"\d", s["voice"] + s["words"]) for s in sts)
    long = make_annotation("long", [(" ".join(f"w{k}" for k in range(9)), "happy", "male", 0.9)] * 3)
    assert [s["segments"] for s in small.stretches(long)] == [[0], [1], [2]]  # one long mood: three pieces
    tail = make_annotation("tail", [("one two three four five six seven eight nine", "sad", "male", 0.2),
                                    ("and then", "sad", "male", 0.2)])
    assert [s["segments"] for s in small.stretches(tail)] == [[0, 1]]  # a short same-voice tail joins
    assert small.delivery_words({}) == "" and small.delivery_words({"arousal": 0.9}) == "lively"
    assert small.delivery_words({"arousal": 0.1, "dominance": 0.7}) == "quiet and forceful"


def test_assign_uses_every_usable_stretch_before_repeating_and_is_seeded():
    sts = small.stretches(SAD)
    picks = small.assign([("CE", "simple")] * 3, sts, "0:cpqa:c1")
    assert sorted(picks[:2]) == [0, 1] and picks[2] in (0, 1)
    assert picks == small.assign([("CE", "simple")] * 3, sts, "0:cpqa:c1")
    other = make_annotation("o", [("we went to the shops", "other", "male", 0.5)])
    assert small.assign([("CE", "simple"), ("C", "simple")], small.stretches(other), "s") == [None, 0]


def test_requests_are_one_per_pair_with_their_own_seed_and_a_pair_with_no_stretch_is_a_reject():
    other = make_annotation("o", [("we went to the shops today", "other", "male", 0.5)])
    plan = [("CE", "simple"), ("C", "simple"), ("G", "simple")]
    reqs, rejects = small.requests(other, "cpqa", plan, PROMPT, {"temperature": 0.2, "seed": 7})
    assert [r.tag["question_type"] for r in reqs] == ["C", "G"] and [r.seed for r in reqs] == [8, 9]
    assert rejects[0]["filter"] == "input" and rejects[0]["qa_id"] == "cpqa-o-00" and "emotion" in rejects[0]["reason"]
    user = reqs[0].messages[-1]["content"]
    assert user.startswith('Spoken: "we went to the shops today"') and "Voice: a man" in user
    assert len(reqs[0].messages) == 2 + 2 * len(PROMPT.types["C"]["examples"])


def result(req, data, ok=True, **kw):
    return LLMResult(key="k" * 64, ok=ok, data=data, model="served", tag=req.tag, **kw)


def test_a_reply_that_breaks_the_grammar_or_the_call_is_a_reject_with_its_reason():
    reqs, _ = small.requests(SAD, "cpqa", [("CE", "simple")] * 2, PROMPT, {"seed": 0})
    req = next(r for r in reqs if r.tag["segments"] == [0, 1])  # the sad stretch
    sch = dict(req.json_schema)
    good = {"question": "How does the woman feel about the meeting moving?",
            "answer": "She sounds sad, since the meeting moved to Friday again."}
    qas, rej = small.to_record(result(req, good), SAD, PROMPT, sch)
    assert not rej and qas[0]["prompt_profile"] == "small" and qas[0]["evidence_segments"] == req.tag["segments"]
    assert qas[0]["prompt_sha256"] == PROMPT.sha256 and qas[0]["reasoning"] == "simple"
    wrong_label = {**good, "answer": "She sounds happy about Friday."}  # not the annotated emotion
    qas, rej = small.to_record(result(req, wrong_label, ok=False, error_kind="schema"), SAD, PROMPT, sch)
    assert not qas and rej[0]["filter"] == "schema" and rej[0]["reason"].startswith("small-profile reply:")
    no_mark = {**good, "question": "How does the woman feel about the meeting"}
    assert small.to_record(result(req, no_mark), SAD, PROMPT, sch)[1][0]["filter"] == "schema"
    dead = result(req, None, ok=False, error_kind="timeout", error="Request timed out.")
    assert small.to_record(dead, SAD, PROMPT, sch)[1][0]["reason"] == "timeout: Request timed out."
    listy = result(req, ["not", "an", "object"], ok=False, error_kind="schema", error="not an object")
    assert small.to_record(listy, SAD, PROMPT, sch)[1][0]["filter"] == "llm"


REPLIES = {  # a grammatical reply per type for a woman's sad stretch
    "C": ("What does the woman say about the meeting?", "She says the meeting moved to Friday."),
    "CE": ("How does the woman feel about the meeting?", "She sounds sad, since the meeting moved."),
    "CG": ("Who talks about the trip with a sister?", "The woman talks about the trip."),
    "E": ("Which mood does the voice carry here?", "The voice sounds sad and low."),
    "D": ("How does the voice come across in energy?", "It is even and steady."),
    "G": ("Is the voice a man's or a woman's?", "It is a woman's voice.")}
ASKS = {spec["ask"]: t for t, spec in PROMPT.types.items()}


def typed_reply(body):
    user = body["messages"][-1]["content"]
    qtype = next(t for ask, t in ASKS.items() if user.endswith(ask))
    q, a = REPLIES[qtype]
    return json.dumps({"question": q if "neutral" not in user else q.rstrip("?"), "answer": a})


def test_generate_makes_one_call_per_pair_through_the_client_and_records_the_profile(tmp_path):
    cfg = synth_cfg(prompt_profile="small", kinds=["cpqa", "pqa_star"], n_qa_cpqa_per_clip=3,
                    n_qa_pqa_star_per_clip=2)
    prompts = {k: PROMPT for k in cfg.kinds}
    clips = [SAD, make_annotation("c2", [("we should repaint the kitchen walls this spring", "sad", "female", 0.2)])]
    with FakeLLMServer(reply=typed_reply, max_lifetime_s=60) as srv:
        client = llm.LLMClient([srv.base_url], model="fake-model", cache_dir=tmp_path / "cache", progress=False,
                               max_invalid_retries=0, backoff_base_s=0.01)
        qas, rejects, counts = S.generate(client, clips, cfg, prompts)
    n_pairs = 2 * (3 + 2)
    assert client.ledger.calls == n_pairs and counts["n_calls_ok"] + counts["n_calls_failed"] == n_pairs
    assert counts["prompt_profile"] == "small" and counts["requested"] == {"cpqa": 6, "pqa_star": 4}
    assert len(qas) + len(rejects) == n_pairs and all(q["prompt_profile"] == "small" for q in qas)
    neutral = [r for r in rejects if r["filter"] == "schema"]  # the neutral stretch's question lacks its "?"
    assert all(q["clip_id"] in ("c1", "c2") for q in qas) and all(r["clip_id"] == "c1" for r in neutral)
    with pytest.raises(ValueError, match="not resolved"):
        S.generate(client, clips, synth_cfg(prompt_profile="auto"), prompts)


def test_auto_is_small_for_the_embedded_generator_and_large_for_an_endpoint():
    auto = synth_cfg(prompt_profile="auto")
    assert S.with_profile(auto, "").prompt_profile == "small"
    assert S.with_profile(auto, "https://api.example.com/v1").prompt_profile == "large"
    assert S.with_profile(synth_cfg(prompt_profile="small"), "http://x/v1").prompt_profile == "small"
    assert S.with_profile(auto, "").prompt_files["cpqa"] == "small_pairs_v1.yaml"
    with pytest.raises(ValueError, match="prompt_profile: 'tiny'"):
        synth_cfg(prompt_profile="tiny")


def test_kept_quality_checks_each_answer_against_its_evidence():
    base = {"clip_id": "c1", "evidence_segments": [0, 1]}
    kept = [{**base, "question_type": "CE", "answer": "She sounds sad about the meeting."},
            {**base, "question_type": "CE", "answer": "She sounds cheerful about it."},
            {**base, "question_type": "CG", "answer": "The man says it."},
            {**base, "question_type": "C", "answer": "It moved to Friday."},
            {**base, "question_type": "C", "answer": "Nothing of note."},
            {**base, "question_type": "D", "answer": "It is quiet."},
            {"clip_id": "c1", "evidence_segments": [], "question_type": "G", "answer": "A woman's voice."}]
    q = S.kept_quality(kept, [SAD], LABEL_WORDS)
    per = q["per_type"]
    assert (per["CE"]["checked"], per["CE"]["passed"]) == (2, 1) and per["CG"]["passed"] == 0
    assert (per["C"]["passed"], per["C"]["share"]) == (1, 0.5) and per["D"]["checked"] == 0
    assert per["G"]["passed"] == 1 and per["G"]["with_evidence"] == 0  # checked against the whole clip
    assert (q["checked"], q["passed"]) == (6, 3)


@pytest.mark.server
def test_the_embedded_server_follows_the_small_profile(tmp_path):
    """The real SmolLM2 server under the small profile: every reply parses and nearly all keep the grammar."""
    pytest.importorskip("llama_cpp")
    from paraqa_utils.llm import server as llm_server

    cfg = synth_cfg(prompt_profile="small", kinds=["cpqa"], n_qa_cpqa_per_clip=3, temperature=0.2, max_tokens=160)
    with llm_server.llm_endpoint("", "", tmp_path, n_threads=1, n_ctx=2048) as ep:
        client = llm.LLMClient([ep], cache_dir=tmp_path / "cache", timeout_s=240, response_format="auto",
                               max_invalid_retries=0, progress=False)
        qas, rejects, counts = S.generate(client, [SAD], cfg, {"cpqa": PROMPT})
    assert counts["n_calls_ok"] + counts["n_calls_failed"] == 3 and client.ledger.completion_tokens > 0
    assert len(qas) >= 2, rejects
    assert all(q["question"].endswith("?") and q["prompt_profile"] == "small" for q in qas)
