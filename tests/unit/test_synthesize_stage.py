"""Stage 02 end to end: notebook 02 itself, run by papermill against the fault-injecting server: outputs, a kill
half-way then resume, and a missing upstream."""
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from paraqa_utils import llm, runs
from paraqa_utils import synthesize as S
from paraqa_utils.stages import KERNEL_NAME, REPO_ROOT
from tests.unit.test_llm_fakes import FakeLLMServer, answered_per_prompt
from tests.unit.test_synthesize import bow_embed, filter_cfg, make_annotation, synth_cfg

NOTEBOOK = REPO_ROOT / "notebooks" / "02_synthesize.ipynb"

TOPICS = ["apples", "budget", "concert", "dentist", "elevator", "festival", "garden", "harbour"]
EXTRA = ["orchard crates", "spreadsheet totals", "ticket queue", "drill noise", "stuck floors", "rain tents",
         "tomato beds", "ferry times"]
TEMPLATES = {  # three different questions per type, so one clip's pairs never repeat each other
    "C": [("What does the speaker say about the {t}?", "That the {t} plan changed because of the {x}."),
          ("Which day is named for the {t}?", "Friday, for the {t} and the {x}."),
          ("What is off, according to what we hear?", "The {t}, along with the {x}.")],
    "CE": [("How does the speaker seem to feel while talking about the {t}?", "Rather low: the {t} and {x} fell through."),
           ("Why might her tone drop when the {t} comes up?", "Because the {t} with the {x} is cancelled."),
           ("What does her delivery suggest about the {t} news?", "Disappointment over the {t} and {x}.")],
    "CG": [("What does the woman mention regarding the {t}?", "She mentions that the {t} and {x} moved."),
           ("Whose voice explains the {t} change?", "A female voice explains the {t} and {x}."),
           ("What news does the female speaker give about the {t}?", "That the {t} with {x} is postponed.")],
    "E": [("Which feeling comes through in the voice when the {t} comes up?", "A subdued, sad feeling about the {t} and {x}."),
          ("Does the speaker sound cheerful about the {t}?", "No, gloomy about the {t} and {x}."),
          ("What mood does the voice carry about the {t}?", "Sad about the {t} and the {x}.")],
    "D": [("Is the voice lively or subdued when discussing the {t}?", "Subdued and slow about the {t} and {x}."),
          ("How energetic does the speaker sound about the {t}?", "Low energy on the {t} and {x}."),
          ("How forceful is the delivery about the {t}?", "Tentative, when describing the {t} and {x}.")],
    "G": [("Is it a woman or a man who speaks about the {t}?", "A woman talks about the {t} and {x}."),
          ("Does a female or male voice mention the {t}?", "A female voice mentions the {t} and {x}."),
          ("Who is speaking about the {t}: a man or a woman?", "A woman, about the {t} and {x}.")],
}


def qa_reply(body):
    """Plausible structured replies that follow the plan; 'dentist' clips cite the transcript (a planted reject)."""
    user = body["messages"][1]["content"]
    plan = re.findall(r"^\d+\. (\w+), (simple|multi_step)$", user, re.M)
    i = next(i for i, t in enumerate(TOPICS) if t in user)
    pairs = []
    for k, (qtype, reasoning) in enumerate(plan):
        q, a = TEMPLATES[qtype][sum(t == qtype for t, _ in plan[:k]) % 3]
        a = a.format(t=TOPICS[i], x=EXTRA[i]) + (" According to the transcript, yes." if TOPICS[i] == "dentist" else "")
        pairs.append({"question_type": qtype, "reasoning": reasoning, "question": q.format(t=TOPICS[i]),
                      "answer": a, "evidence": [1]})
    return json.dumps({"qa_pairs": pairs})


def annotations(n=8):
    return [make_annotation(f"clip{i:02d}", [(f"The {TOPICS[i]} moved to Friday", "sad", "female", 0.2),
                                             (f"so the {TOPICS[i]} is off", "sad", "female", 0.25)],
                            split="test" if i % 4 == 3 else "train") for i in range(n)]


def make_run(tmp_path, name, anns):
    run = tmp_path / name
    up = runs.Stage(run, "01_annotate")
    runs.write_jsonl(up.dir / "annotations.jsonl", anns)
    up.write_metrics(n_kept=len(anns))
    up.finish()
    return run


def stage_main(run_dir, url, **parameters):
    """Notebook 02 itself, executed by papermill at tiny size against `url`; returns the ledger line."""
    import papermill as pm

    run_dir = Path(run_dir)
    (run_dir / "notebooks").mkdir(exist_ok=True)
    pm.execute_notebook(str(NOTEBOOK), str(run_dir / "notebooks" / NOTEBOOK.name), kernel_name=KERNEL_NAME,
                        cwd=str(REPO_ROOT), progress_bar=False,
                        parameters={"run_dir": str(run_dir), "llm_base_url": url, "llm_model": "fake-model",
                                    "llm_api_key_env": "", "llm_concurrency": 2, "n_qa_cpqa_per_clip": 3,
                                    "n_qa_pqa_star_per_clip": 2, **parameters})
    ledger = json.loads((run_dir / "02_synthesize" / "metrics.json").read_text())["llm_ledger"]
    return f"calls {ledger['calls']} hits {ledger['cache_hits']}"


def stage_process(run, url):
    code = "import sys; from tests.unit.test_synthesize_stage import stage_main; print(stage_main(*sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, str(run), url], cwd=REPO_ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def descendants(pid):
    """Process ids below `pid` (papermill's kernel), read from /proc before the parent is killed."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids = [int(x) for x in (task / "children").read_text().split()]
                out += kids
                todo += kids
    return out


def qa_files(run):
    return {k: (run / "02_synthesize" / f"qa_{k}.jsonl").read_text() for k in S.QUESTION_TYPES}


def test_stage_outputs_funnel_and_metrics(tmp_path):
    run = make_run(tmp_path, "r", annotations())
    with FakeLLMServer(reply=qa_reply, faults={"harbour": ["500", "malformed"]}, max_lifetime_s=300) as srv:
        out = stage_main(run, srv.base_url)
        assert out == "calls 18 hits 0"  # 16 jobs, one 500 retried, one malformed reply re-asked with feedback
    st = run / "02_synthesize"
    cp = [json.loads(x) for x in (st / "qa_cpqa.jsonl").read_text().splitlines()]
    ps = [json.loads(x) for x in (st / "qa_pqa_star.jsonl").read_text().splitlines()]
    rej = [json.loads(x) for x in (st / "rejects.jsonl").read_text().splitlines()]
    m = json.loads((st / "metrics.json").read_text())
    assert {q["kind"] for q in cp} == {"cpqa"} and {q["kind"] for q in ps} == {"pqa_star"}
    assert not any(q["clip_id"] == "clip03" for q in cp + ps), "the dentist clip cites the transcript"
    assert {r["filter"] for r in rej if r["clip_id"] == "clip03"} == {"references"}
    assert len(cp) == 7 * 3 and len(ps) == 7 * 2 and len({q["qa_id"] for q in cp + ps}) == 35
    assert {q["split"] for q in cp} == {"train", "test"} and all(q["prompt_file"] == "cpqa_v1.txt" for q in cp)
    assert m["survival"]["cpqa"] == {"requested": 24, "returned": 24, "kept": 21, "kept_of_requested": 0.875,
                                     "kept_of_returned": 0.875}
    assert m["removed_by_filter"] == {"references": 5} and m["llm_ledger"]["retries"] == 1
    assert m["llm_ledger"]["invalid_retries"] == 1 and m["n_calls_failed"] == 0
    assert sum(r["n_after"] for r in m["type_mix"] if r["kind"] == "cpqa") == 21
    assert sum(m["planned_types"].values()) == 8 * 5
    rec = json.loads((st / "stage.json").read_text())
    assert rec["status"] == "done" and {"qa_cpqa.jsonl", "qa_pqa_star.jsonl", "rejects.jsonl"} <= set(rec["outputs"])


def test_killed_half_way_resume_loses_nothing_duplicates_nothing_repeats_no_call(tmp_path):
    anns = annotations()
    with FakeLLMServer(reply=qa_reply, max_lifetime_s=300) as ref_srv:  # the uninterrupted reference
        stage_main(make_run(tmp_path, "ref", anns), ref_srv.base_url)
    run = make_run(tmp_path, "killed", anns)
    cache = run / "02_synthesize" / "_cache" / "llm" / llm.CACHE_FILE
    with FakeLLMServer(reply=qa_reply, latency_s=0.02, max_lifetime_s=300) as srv:
        srv.hold_after = 7  # answer 7 calls, then leave the rest hanging: the stage is mid-way when killed
        proc = stage_process(run, srv.base_url)
        deadline = time.monotonic() + 180  # the kernel starts and imports first
        while time.monotonic() < deadline and not (cache.exists() and len(cache.read_text().splitlines()) >= 7
                                                    and srv.in_flight > 0):
            time.sleep(0.05)
        kernel = descendants(proc.pid)
        os.kill(proc.pid, signal.SIGKILL)  # papermill, then its kernel: the whole stage dies mid-way
        for pid in kernel:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc.wait(10)
        assert len(cache.read_text().splitlines()) == 7 and srv.n_answered == 7
        assert not (run / "02_synthesize" / "qa_cpqa.jsonl").exists(), "outputs appear only when complete"
        # a request the killed run sent last may still sit in the server's latency sleep: let it reach the hold
        # (and hang there) before releasing, or the server answers it to a dead client and counts it twice
        time.sleep(20 * 0.02)
        srv.hold_after = None
        proc = stage_process(run, srv.base_url)
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        assert out.strip().splitlines()[-1] == "calls 9 hits 7", "the resumed run only makes the calls the killed one never got back"
        assert srv.n_answered == 16 and max(answered_per_prompt(srv).values()) == 1, "no call was made twice"
    assert qa_files(run) == qa_files(tmp_path / "ref"), "same QA as an uninterrupted run: none lost, none doubled"
    ids = [json.loads(x)["qa_id"] for t in qa_files(run).values() for x in t.splitlines()]
    assert len(ids) == len(set(ids)) == 35


def test_notebook_runs_against_an_endpoint_and_missing_upstream_fails_clearly(tmp_path):
    import papermill as pm

    run = make_run(tmp_path, "nb", annotations(3))
    with FakeLLMServer(reply=qa_reply, max_lifetime_s=120) as srv:
        pm.execute_notebook(str(REPO_ROOT / "notebooks/02_synthesize.ipynb"), str(tmp_path / "out.ipynb"),
                            kernel_name="paraqa", cwd=str(REPO_ROOT), progress_bar=False,
                            parameters={"run_dir": str(run), "llm_base_url": srv.base_url, "llm_model": "fake-model",
                                        "llm_api_key_env": "", "max_clips": 2, "n_qa_cpqa_per_clip": 2,
                                        "llm_price_usd_per_1m_tokens": {"fake-model": [1.0, 4.0]}})
        assert srv.n_requests == 4
    m = json.loads((run / "02_synthesize" / "metrics.json").read_text())
    assert m["n_clips"] == 2 and m["n_qa"] == {"cpqa": 4, "pqa_star": 4} and m["llm_ledger"]["cost_usd"] > 0
    rec = json.loads((run / "02_synthesize" / "stage.json").read_text())
    assert rec["status"] == "done" and rec["models"]["generator"]["embedded"] is False
    assert set(rec["prompts"]) == {"cpqa_v1.txt", "pqa_star_v1.txt", "forbidden_references_v1.txt",
                                   "label_words_v1.txt"}
    assert rec["inputs"]["01_annotate/annotations.jsonl"] == runs.sha256_file(run / "01_annotate/annotations.jsonl")
    empty = tmp_path / "no_upstream"
    empty.mkdir()
    with pytest.raises(pm.PapermillExecutionError, match="01_annotate has not run"):
        pm.execute_notebook(str(REPO_ROOT / "notebooks/02_synthesize.ipynb"), str(tmp_path / "out2.ipynb"),
                            kernel_name="paraqa", cwd=str(REPO_ROOT), progress_bar=False,
                            parameters={"run_dir": str(empty)})


@pytest.mark.server
def test_embedded_llama_cpp_server_gives_parseable_structured_qa(tmp_path):
    """The real embedded server: the schema travels as llama.cpp's json_object+schema and replies parse as JSON."""
    pytest.importorskip("llama_cpp")
    from paraqa_utils.llm import server as llm_server
    from paraqa_utils.synthesize import filters

    anns = annotations(1)
    cfg = synth_cfg(kinds=["cpqa"], n_qa_cpqa_per_clip=2, max_tokens=400)
    prompts = {k: S.load_prompt(cfg.prompt_files[k]) for k in cfg.kinds}
    with llm_server.llm_endpoint("", "", tmp_path, n_threads=1, n_ctx=2048) as ep:
        client = llm.LLMClient([ep], cache_dir=tmp_path / "cache", timeout_s=240, response_format="auto",
                               max_invalid_retries=0, progress=False)
        qas, rejects, counts = S.generate(client, anns, cfg, prompts)
        assert client.formats == ["json_object_schema"] and client.ledger.calls == 1
        assert client.ledger.completion_tokens > 0 and client.ledger.failures + counts["n_calls_ok"] == 1
        results = client.complete(S.build_request(a, k, prompts[k], cfg) for k in cfg.kinds for a in anns)
        assert all(r.cached for r in results) and client.ledger.calls == 1
    assert all(isinstance(r.data, dict) and isinstance(r.data.get("qa_pairs"), list) for r in results), \
        [r.text[:200] for r in results]
    assert all(set(q) >= {"qa_id", "question", "answer", "cache_key", "prompt_sha256"} for q in qas)
    kept, f_rej, funnel = filters.run_filters(qas, {a["clip_id"]: a for a in anns}, filter_cfg(),
                                                 bow_embed)
    assert len(kept) + len(f_rej) == len(qas)
