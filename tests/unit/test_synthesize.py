"""Stage 02: prompt filling, plans, parsing into QA records, and every post-filter (each shown to remove something)."""
import hashlib
import json
import re

import numpy as np
import pytest

from paraqa_utils.synthesize import filters as F
from paraqa_utils import synthesize as S
from paraqa_utils import params
from paraqa_utils.text import minilm_embedder
from paraqa_utils.synthesize import generation as S_generate
from paraqa_utils.llm import LLMResult

DESIGN_FIELDS = {"qa_id", "clip_id", "kind", "question_type", "question", "answer", "evidence_segments", "model",
                 "prompt_file", "prompt_sha256", "sampling", "cache_key", "split"}


def synth_cfg(**values):
    """A SynthesizeConfig with these knobs, the rest from 02_synthesize.ipynb's parameters cell; the large prompt
    profile unless asked (the small one has its own tests in test_synthesize_small.py)."""
    return params.stage_config(S.SynthesizeConfig, "02_synthesize", {"prompt_profile": "large", **values})


def filter_cfg(**values):
    return params.stage_config(F.FilterConfig, "02_synthesize", values)


def make_annotation(clip_id, parts, split="train", kept=True):
    """An 01_annotate record: parts = [(text, emotion, gender, valence)], 1.5 s per part, 01's transcript format."""
    words, segs, lines, t = [], [], [], 0.0
    for text, emo, gender, val in parts:
        toks = text.split()
        for k, w in enumerate(toks):
            words.append({"w": w, "start_s": round(t + 1.5 * k / len(toks), 3),
                          "end_s": round(t + 1.5 * (k + 1) / len(toks), 3)})
        segs.append({"start_s": t, "end_s": t + 1.5, "emotion": emo, "emotion_conf": 0.8, "valence": val,
                     "arousal": 0.5, "dominance": 0.4, "gender": gender, "backend": "test"})
        lab = f"{gender}; {emo}, valence {val:.2f} arousal 0.50 dominance 0.40" if emo else gender
        lines.append(f"[{t:.1f}-{t + 1.5:.1f} s] ({lab}) {text}")
        t += 1.5
    emos = [p[1] for p in parts if p[1]]
    return {"clip_id": clip_id, "split": split, "words": words, "segments": segs, "kept": kept,
            "dominant_emotion": max(set(emos), key=emos.count) if emos else None,
            "drop_reason": None if kept else "occurrence", "annotated_transcript": "\n".join(lines)}


def bow_embed(texts):
    """A deterministic stand-in for MiniLM: hashed bag of words, L2-normalised (fast, no model load)."""
    out = np.zeros((len(texts), 256), dtype=np.float32)
    for i, t in enumerate(texts):
        for tok in F.tokens(t):
            out[i, int(hashlib.md5(tok.encode()).hexdigest(), 16) % 256] += 1.0
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def qa(clip_id, q, a, qtype="CE", kind="cpqa", i=0):
    return {"qa_id": f"{kind}-{clip_id}-{i:02d}", "clip_id": clip_id, "kind": kind, "question_type": qtype,
            "question": q, "answer": a}


SAD = make_annotation("c1", [("The meeting moved to Friday again", "sad", "female", 0.2),
                             ("I had planned a trip with my sister", "sad", "female", 0.25),
                             ("Well we will manage somehow", "neutral", "female", 0.45)])


def test_prompt_is_filled_numbered_and_carries_every_label():
    cfg = synth_cfg(n_qa_cpqa_per_clip=4, n_qa_pqa_star_per_clip=2)
    for kind in ("cpqa", "pqa_star"):
        req = S.build_request(SAD, kind, S.load_prompt(cfg.prompt_files[kind]), cfg)
        system, user = req.messages
        assert system["role"] == "system" and user["role"] == "user"
        assert "$" not in user["content"] and "${" not in system["content"]
        # the sad and neutral windows differ in emotion, so 01 keeps three lines; each is numbered
        assert "1. [0.0-1.5 s] (female; sad, valence 0.20 arousal 0.50 dominance 0.40) The meeting" in user["content"]
        assert "3. [3.0-4.5 s] (female; neutral" in user["content"]
        plan = re.findall(r"^\d+\. (\w+), (simple|multi_step)$", user["content"], re.M)
        assert len(plan) == cfg.n_qa[kind] and {t for t, _ in plan} <= set(S.QUESTION_TYPES[kind])
        items = req.json_schema["properties"]["qa_pairs"]
        assert items["minItems"] == items["maxItems"] == cfg.n_qa[kind]
        assert items["items"]["properties"]["evidence"]["maxItems"] == 3
        assert req.seed == cfg.seed and req.temperature == cfg.temperature and req.tag["clip_id"] == "c1"


def test_merged_lines_map_back_to_their_segments():
    ann = make_annotation("c2", [("one two", "happy", "male", 0.8), ("three four", "happy", "male", 0.8),
                                 ("five six", "angry", "male", 0.1)])
    ann["annotated_transcript"] = ("[0.0-3.0 s] (male; happy, valence 0.80) one two three four\n"
                                   "[3.0-4.5 s] (male; angry, valence 0.10) five six")
    text, covered = S.numbered_transcript(ann)
    assert covered == [[0, 1], [2]] and text.startswith("1. [0.0-3.0 s]") and "\n2. [3.0-4.5 s]" in text
    ann["annotated_transcript"] = ""  # no serialised form: one line per segment, built from words
    text, covered = S.numbered_transcript(ann)
    assert covered == [[0], [1], [2]] and "2. [1.5-3.0 s] (male; happy, valence 0.80" in text and "three four" in text


def test_plan_follows_weights_and_only_asks_what_the_annotation_supports():
    cfg = synth_cfg(n_qa_cpqa_per_clip=4, n_qa_pqa_star_per_clip=3)
    anns = [make_annotation(f"k{i}", [("a b c", "sad", "female", 0.2)]) for i in range(500)]
    counts = {}
    for a in anns:
        plan = S.pair_plan("cpqa", a, cfg)
        assert len(plan) == 4 and plan == S.pair_plan("cpqa", a, cfg)  # deterministic per clip
        for t, r in plan:
            counts[t] = counts.get(t, 0) + 1
    assert abs(counts["CE"] / 2000 - 0.65) < 0.02 and abs(counts["C"] / 2000 - 0.16) < 0.02
    no_gender_no_emotion = make_annotation("k", [("a b c", None, None, 0.5)])
    assert S.available_types("cpqa", no_gender_no_emotion) == ("C",)
    assert {t for t, _ in S.pair_plan("cpqa", no_gender_no_emotion, cfg)} == {"C"}
    assert S.available_types("pqa_star", make_annotation("k", [("a", "other", "male", 0.5)])) == ("G",)


def test_records_carry_provenance_and_invalid_replies_are_salvaged():
    cfg = synth_cfg(n_qa_cpqa_per_clip=3, n_qa_pqa_star_per_clip=2)
    prompt = S.load_prompt("cpqa_v1.txt")
    req = S.build_request(SAD, "cpqa", prompt, cfg)
    good = {"question_type": "CE", "reasoning": "multi_step", "question": "Why does she sound low about Friday?",
            "answer": "Her trip with her sister is off.", "evidence": [1, 2]}
    res = LLMResult(key="k" * 64, ok=True, data={"qa_pairs": [good, {**good, "question": "What moved?"},
                                                              {**good, "question_type": "C", "evidence": [3, 9]}]},
                    model="served-model", tag=req.tag)
    qas, rejects = S.to_records(res, SAD, "cpqa", prompt, cfg)
    assert len(qas) == 3 and not rejects
    assert set(qas[0]) >= DESIGN_FIELDS and qas[0]["evidence_segments"] == [0, 1]
    assert qas[2]["evidence_segments"] == [2], "line 9 does not exist: dropped, the pair kept"
    assert qas[0]["prompt_sha256"] == prompt.sha256 and qas[0]["model"] == "served-model"
    assert qas[0]["sampling"] == cfg.sampling() and qas[2]["qa_id"] == "cpqa-c1-02" and qas[0]["split"] == "train"
    bad = LLMResult(key="b" * 64, ok=False, error_kind="schema", error="...", tag=req.tag,
                    data={"qa_pairs": [good, {**good, "question_type": "XX"}]})
    qas, rejects = S.to_records(bad, SAD, "cpqa", prompt, cfg)
    assert len(qas) == 1 and [r["filter"] for r in rejects] == ["schema", "schema"]
    assert "question_type must be one of" in rejects[0]["reason"] and "2 of 3" in rejects[1]["reason"]
    dead = LLMResult(key="d" * 64, ok=False, error_kind="timeout", error="Request timed out.", tag=req.tag)
    qas, rejects = S.to_records(dead, SAD, "cpqa", prompt, cfg)
    assert qas == [] and rejects[0]["filter"] == "llm" and rejects[0]["reason"].startswith("timeout")


def test_only_kept_clips_are_used_and_a_clip_without_words_is_a_reject(tmp_path):
    empty = make_annotation("nowords", [("x", "sad", "male", 0.2)])
    empty["words"] = []
    rows = [SAD, make_annotation("dropped", [("a b", "sad", "male", 0.2)], kept=False), empty,
            make_annotation("c3", [("hello there", "happy", "male", 0.9)])]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    clips, rejects = S.load_annotations(tmp_path / "a.jsonl")
    assert [c["clip_id"] for c in clips] == ["c1", "c3"]
    assert rejects == [{"clip_id": "nowords", "kind": "*", "filter": "input",
                        "reason": "annotation has no words: nothing to ask about, no call made"}]
    assert [c["clip_id"] for c in S.load_annotations(tmp_path / "a.jsonl", max_clips=1)[0]] == ["c1"]


@pytest.mark.parametrize("text,hit", [
    ("According to the transcript, why is she sad?", True), ("What do the labels say?", True),
    ("How high is the arousal in the second half?", True), ("Her valence is low.", True),
    ("In line 2 she mentions Friday.", True), ("She sounds sad, with a score of 0.21.", True),
    ("What happens at [0.0-2.1 s]?", True), ("The annotation marks her as sad.", True),
    ("As stated in the text above, she is sad.", True),
    ("Why does the speaker sound disappointed when she mentions Friday?", False),
    ("What does the man say about the train at 5 pm?", False), ("She waited in the line for 2 hours.", False)])
def test_reference_filter(text, hit):
    kept, rejects, _ = F.run_filters([qa("c1", text, "Because the plan fell through.")], {"c1": SAD},
                                     filter_cfg(), bow_embed)
    assert (len(rejects) == 1 and rejects[0]["filter"] == "references") is hit, rejects


def test_form_length_and_label_consistency_filters():
    items = [qa("c1", "Why does she sound gloomy about Friday?", "Her trip with her sister fell through.", i=0),
             qa("c1", "How does she feel about the meeting?", "She sounds happy and relieved.", i=1),
             qa("c1", "Does she sound angry?", "No, she is not angry; she sounds let down.", i=2),
             qa("c1", "Who talks about the trip?", "A man talks about the trip.", qtype="CG", i=3),
             qa("c1", "What moved?", "", i=4),
             qa("c1", "What did she plan?", " ".join(["word"] * 90), i=5),
             qa("c1", "What was planned with the sister, and by whom?", "A woman planned a trip.", qtype="CG", i=6),
             qa("c1", "What does she say about managing?", "That they will manage somehow.", qtype="C", i=7),
             qa("c1", "Why does the man sound gloomy about the trip?", "It was cancelled.", qtype="CG", i=8),
             qa("c1", "2. CE, simple", "Because of the trip.", i=9),
             qa("c1", "She talks about the trip with her sister", "Yes.", i=10),
             qa("c1", "Is the trip off?", "Is the trip off?", i=11)]
    kept, rejects, funnel = F.run_filters(items, {"c1": SAD}, filter_cfg(), bow_embed)
    why = {r["qa_id"][-2:]: (r["filter"], r["reason"]) for r in rejects}
    assert why["01"][0] == "label_consistency" and "'happy'" in why["01"][1] and "neutral/sad" in why["01"][1]
    assert why["03"][0] == "label_consistency" and "'man'" in why["03"][1]
    assert why["08"][0] == "label_consistency" and why["08"][1].startswith("question says 'man'")
    assert why["04"] == ("form_length", "empty answer (no words)") and why["05"][0] == "form_length"
    assert why["09"][1].startswith("not a question") and why["10"][1].startswith("not a question")
    assert why["11"] == ("form_length", "the answer repeats the question")
    assert {q["qa_id"][-2:] for q in kept} == {"00", "02", "06", "07"}, "negation and matching labels survive"
    # a label word the speaker actually says is content, not a claim about her state
    said = make_annotation("c9", [("I am so happy for you", "sad", "female", 0.2)])
    assert F.label_problem(qa("c9", "What does she say?", "She says she is happy for them."), said,
                           F.label_lexicon("label_words_v1.txt")) is None


def test_near_duplicates_within_a_clip_and_across_the_set():
    items = [qa("c1", "Why does the speaker feel sad about Friday?", "The trip is off.", i=0),
             qa("c1", "Why does the speaker feel so sad about Friday?", "Her trip was cancelled.", i=1),
             qa("c1", "What did she plan with her sister?", "A trip.", qtype="C", i=2),
             qa("c2", "What did she plan with her sister?", "A trip.", qtype="C", i=0),
             qa("c2", "What did she plan with her sister?", "A trip.", qtype="C", kind="pqa_star", i=0)]
    anns = {"c1": SAD, "c2": {**SAD, "clip_id": "c2"}}
    kept, rejects, funnel = F.run_filters(items, anns, filter_cfg(), bow_embed)
    assert [(r["qa_id"], r["filter"]) for r in rejects] == [("cpqa-c1-01", "dedup_within_clip"),
                                                             ("cpqa-c2-00", "dedup_across_set")]
    assert "cpqa-c1-00" in rejects[0]["reason"] and "cpqa-c1-02" in rejects[1]["reason"]
    assert len(kept) == 3, "the same QA under another kind is not a duplicate of it"
    steps = [r for r in funnel if r["kind"] == "cpqa"]
    assert [r["step"] for r in steps] == list(F.STEPS)
    assert all(a["n_out"] == b["n_in"] for a, b in zip(steps, steps[1:]))
    assert sum(r["n_removed"] for r in steps) == 2 and steps[0]["n_in"] == 4


def test_across_set_dedup_is_blockwise_and_matches_the_plain_greedy_rule():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(30, 16))
    emb = np.concatenate([base, base[:10] + 0.01 * rng.normal(size=(10, 16))])
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    items = [{"qa_id": f"q{i}", "clip_id": f"c{i}", "kind": "cpqa"} for i in range(40)]
    small_blocks = F._across_set(items, emb, filter_cfg(), block=7)
    assert small_blocks == F._across_set(items, emb, filter_cfg(), block=512)
    assert sorted(small_blocks) == list(range(30, 40)) and "q0 " in small_blocks[30]


def test_minilm_separates_paraphrases_from_different_questions():
    embed = minilm_embedder("")
    e = embed(["Why does the speaker sound sad about Friday?", "Why does the speaker seem sad about Friday?",
               "What is the name of the town where the train stops?"])
    assert e.shape == (3, 384) and np.allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-4)
    assert float(e[0] @ e[1]) > filter_cfg().dedup_cosine_within_clip > float(e[0] @ e[2]) + 0.3


def test_type_mix_counts_before_and_after():
    before = [qa("c", "q", "a", t) for t in ("C", "CE", "CE", "CG")]
    mix = {(r["question_type"]): r for r in F.type_mix(before, before[1:3])}
    assert mix["CE"]["n_before"] == 2 and mix["CE"]["share_after"] == 1.0 and mix["C"]["n_after"] == 0


def test_every_stage_finds_its_prompt_files_in_one_folder(tmp_path):
    from paraqa_utils import explicit_merge, judge, prompts

    assert S_generate.prompt_path("cpqa_v1.txt") == prompts.DIR / "cpqa_v1.txt"
    assert judge.rubric_path("rubric_v1") == prompts.DIR / "rubric_v1.txt"
    assert explicit_merge.TEMPLATES_FILE.parent == prompts.DIR
    own = tmp_path / "my_prompt.txt"
    own.write_text("Ask about the speaker.")
    assert prompts.path(own) == own  # a user's own file by path
    with pytest.raises(FileNotFoundError, match=r"'cpqa_v9.txt' not found .*have: .*cpqa_v1.txt"):
        prompts.path("cpqa_v9.txt")
    with pytest.raises(ValueError, match="unknown rubric"):
        judge.rubric_path("rubric_v9")
