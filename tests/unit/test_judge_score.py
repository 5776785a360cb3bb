"""`python -m paraqa_utils.judge score`: refusals, the offline judge, the LLM path on a loopback fake (resume, keys)."""
import json

import pytest

from paraqa_utils import text
from paraqa_utils.judge import score
from paraqa_utils.judge.__main__ import main
from tests.unit.test_llm_fakes import FakeLLMServer

SECRET = "sk-test-do-not-write-1234567890"
Q = "Where did the speaker say she left her keys?"
REF = "She left her keys in the car."


def grader(body):
    """Rates 5 when the answer repeats the reference, 1 otherwise (rubric_v1's layout)."""
    content = body["messages"][0]["content"]
    ref = content.split("Reference answer: ")[1].split("\n")[0]
    ans = content.split("Assistant's answer: ")[1].split("\n")[0]
    return json.dumps({"explanation": "compared", "rating": 5 if ans == ref else 1})


def write(path, records):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def item(i, answer=REF, **kw):
    return {"id": f"q{i}", "question": Q, "reference": REF, "answer": answer, **kw}


@pytest.fixture(scope="module")
def embed():
    return text.minilm_embedder("")


def test_offline_judge_ranks_right_over_wrong_and_refuses_what_it_cannot_score(tmp_path, embed):
    items = write(tmp_path / "items.jsonl", [
        item(1, "She says she left the keys in her car."),
        item(2, "She left them on the kitchen table."),
        item(3, reference=""),                                   # no reference
        '{"id": "q4", "question": "broken',                      # malformed
        {"id": "q5", "question": Q, "reference": REF},            # no answer
        item(6, "x"), item(6, "y"),                              # duplicate id: both refused
        item(7, "", question_type="CE"),                          # an empty answer is scored, as no answer
        item(8, "fine"), item(8, reference="")])                  # a refused copy makes the other one ambiguous
    out = tmp_path / "scores.jsonl"
    s = score.score_file(items, out, "offline", embed=embed)
    rows = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"q1", "q2", "q7"} and s["n_scored"] == 3 and s["parse_rate"] == 1.0
    assert rows["q1"]["score"] > rows["q2"]["score"] and rows["q7"]["score"] == 0
    assert rows["q1"]["judge"] == "offline/learned_v2" and rows["q1"]["item_sha256"]  # the default
    assert rows["q1"]["judge_model"].startswith("learned_v2@") and s["version"] == rows["q1"]["judge_model"]
    rejects = {r["where"].rsplit(":", 1)[1]: r for r in map(json.loads, (tmp_path / "scores.rejects.jsonl").open())}
    assert set(rejects) == {"3", "4", "5", "6", "7", "9", "10"} and s["n_rejected"] == 7
    assert rejects["3"]["id"] == "q3" and "no reference" in rejects["3"]["reason"]
    assert rejects["4"]["where"] == f"{items}:4" and "not valid JSON" in rejects["4"]["reason"]
    assert "missing answer" in rejects["5"]["reason"] and "duplicate id" in rejects["7"]["reason"]
    assert "duplicate id" in rejects["9"]["reason"] and "no reference" in rejects["10"]["reason"]
    assert any("mean score" in line for line in score.summary_lines(s))


def test_the_old_scorer_stays_reachable_by_name_and_a_missing_model_names_its_make_target(tmp_path, embed, monkeypatch):
    from paraqa_utils.judge.__main__ import main

    items = write(tmp_path / "items.jsonl", [item(1, "She says she left the keys in her car."),
                                             item(2, "She left them on the kitchen table.")])
    s = score.score_file(items, tmp_path / "old.jsonl", "offline", embed=embed, scorer="facets_v2")
    rows = [json.loads(x) for x in (tmp_path / "old.jsonl").read_text().splitlines()]
    assert s["judge"] == "offline/facets_v2" and {r["rubric"] for r in rows} == {"facets_v2"}
    assert rows[0]["score"] > rows[1]["score"] and rows[0]["judge_model"].startswith("facets_v2@")
    with pytest.raises(score.ScoreError, match="holds scores of another judge"):  # the file is facets_v2's
        score.score_file(items, tmp_path / "old.jsonl", "offline", embed=embed)
    with pytest.raises(score.ScoreError, match="--scorer 'facets_v9'"):
        score.score_file(items, tmp_path / "x.jsonl", "offline", embed=embed, scorer="facets_v9")
    monkeypatch.setenv("PARAQA_CACHE", str(tmp_path / "empty-cache"))  # no model built there
    assert main(["score", "--items", str(items), "--out", str(tmp_path / "new.jsonl"), "--judge", "offline"]) == 2
    assert not (tmp_path / "new.jsonl").exists()


def test_a_missing_model_is_an_error_naming_make_judge_model(tmp_path, monkeypatch, capsys):
    from paraqa_utils.judge.__main__ import main

    items = write(tmp_path / "items.jsonl", [item(1, "She left them in the car.")])
    monkeypatch.setenv("PARAQA_CACHE", str(tmp_path / "empty-cache"))
    assert main(["score", "--items", str(items), "--out", str(tmp_path / "o.jsonl"), "--judge", "offline"]) == 2
    err = capsys.readouterr().err
    assert "model is missing" in err and "make judge-model" in err


def llm_score(srv, items, out, **kw):
    return score.score_file(items, out, "openai", base_url=srv.base_url, model="fake-model",
                            api_key_env="FAKE_JUDGE_KEY", knobs={"max_retries": 0, **kw.pop("knobs", {})}, **kw)


def test_llm_judge_resumes_after_a_kill_without_asking_again(tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_JUDGE_KEY", SECRET)
    items = write(tmp_path / "items.jsonl", [item(i, REF if i % 2 else "He is happy.") for i in range(4)])
    out = tmp_path / "out.jsonl"
    with FakeLLMServer(grader) as srv:
        s = llm_score(srv, items, out)
        assert srv.n_answered == 4 and f"Bearer {SECRET}" in srv.authorizations
    assert s["n_scored"] == 4 and s["mean_score"] == 3.0 and s["ledger"]["calls"] == 4 and s["n_failed"] == 0
    with FakeLLMServer(grader) as srv:  # the same command again: nothing to ask, not even the cache
        s = llm_score(srv, items, out)
        assert srv.n_requests == 0 and s["n_reused"] == 4
    lines = out.read_text().splitlines()
    out.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])  # killed while writing the third row
    for f in (tmp_path / "out.jsonl.cache" / "llm").iterdir():
        f.unlink()  # and no cache either: the out file alone says what is done
    with FakeLLMServer(grader) as srv:
        s = llm_score(srv, items, out)
        assert srv.n_requests == 2 and s["n_reused"] == 2
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == ["q0", "q1", "q2", "q3"]
    write(items, [item(i, REF if i % 2 else "He is happy.") for i in range(3)] + [item(3, "Changed.")])
    with FakeLLMServer(grader) as srv:  # an item whose answer changed is stale: scored again, once
        llm_score(srv, items, out)
        assert srv.n_requests == 1
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["score"] for r in rows if r["id"] == "q3"] == [1]
    written = "".join(p.read_text(errors="replace") for p in tmp_path.rglob("*") if p.is_file())
    assert SECRET not in written


def test_repeats_and_an_endpoint_failure_leave_the_item_for_the_rerun(tmp_path):
    items = write(tmp_path / "items.jsonl", [item(0), item(1, "Wrong answer.")])
    out = tmp_path / "out.jsonl"
    with FakeLLMServer(grader, faults={"Wrong answer.": ["400", "400"]}) as srv:
        s = llm_score(srv, items, out, knobs={"n_judge_runs": 2})
    assert s["n_failed"] == 1 and {json.loads(r)["id"] for r in out.open()} == {"q0"}
    with FakeLLMServer(grader) as srv:
        s = llm_score(srv, items, out, knobs={"n_judge_runs": 2})
        assert srv.n_requests == 2  # the two repeats of q1; q0's are in the out file
    assert s["n_failed"] == 0 and s["n_rows"] == 4 and s["mean_score"] == 3.0


def test_cli_prints_the_summary_and_refuses_bad_options(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("FAKE_JUDGE_KEY", SECRET)
    items = write(tmp_path / "items.jsonl", [item(0), item(1, reference="   ")])
    out = tmp_path / "o.jsonl"
    with FakeLLMServer(grader) as srv:
        args = ["score", "--items", str(items), "--out", str(out), "--judge", "openai", "--base-url", srv.base_url,
                "--model", "fake-model", "--api-key-env", "FAKE_JUDGE_KEY", "--rubric", "rubric_para_v1"]
        assert main(args) == 0
    got = capsys.readouterr()
    assert "scored 1 item(s)" in got.out and "rejected 1" in got.out and "ledger: 1 requests" in got.out
    assert f"{items}:2" in got.err and "no reference" in got.err and SECRET not in got.out + got.err
    assert json.loads(out.read_text())["rubric"] == "rubric_para_v1"
    assert main(["score", "--items", str(items), "--out", str(out), "--judge", "openai", "--base-url",
                 "http://127.0.0.1:9/v1", "--model", "m", "--api-key-env", SECRET]) == 2
    assert SECRET not in capsys.readouterr().err  # a key pasted as the variable's name is not echoed
    before = {p.name: p.read_bytes() for p in tmp_path.glob("o.*jsonl")}
    assert main(["score", "--items", str(items), "--out", str(out), "--judge", "offline"]) == 2
    assert "another judge" in capsys.readouterr().err  # the openai judge's scores are not overwritten
    assert {p.name: p.read_bytes() for p in tmp_path.glob("o.*jsonl")} == before  # nor its rejects
    monkeypatch.delenv("FAKE_JUDGE_KEY")
    assert main(["score", "--items", str(items), "--out", str(tmp_path / "k.jsonl"), "--judge", "openai",
                 "--base-url", "https://judge.example.com/v1", "--model", "m", "--api-key-env", "FAKE_JUDGE_KEY"]) == 2
    assert "FAKE_JUDGE_KEY" in capsys.readouterr().err and not (tmp_path / "k.jsonl").exists()
    out.write_text("not json\n" + out.read_text())
    assert main(args) == 2 and "not JSON" in capsys.readouterr().err  # a damaged out file is not guessed at
    assert main(["score", "--items", str(tmp_path / "none.jsonl"), "--out", str(out), "--judge", "embedded"]) == 2
    assert main(["score", "--items", str(items), "--out", str(out), "--judge", "openai"]) == 2
