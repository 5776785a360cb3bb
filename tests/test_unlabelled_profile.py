"""params/unlabelled.yaml: 00-01 on real speech that carries no labels, annotated by the recogniser a labelled run
(the session's smoke run) saved; and the refusal, naming the parameter, of a backend that needs labels."""
import json
import os
import subprocess
import sys

import pytest

from paraqa_utils import runs
from paraqa_utils.stages import REPO_ROOT

pytestmark = pytest.mark.smoke


def pipeline(root, *sets, run_id):
    env = {**os.environ, "PARAQA_RUNS": str(root)}
    cmd = [sys.executable, "-m", "paraqa_utils.pipeline", "--profile", "unlabelled", "--only",
           "00_corpus,01_annotate", "--run-id", run_id, *[a for s in sets for a in ("--set", s)]]
    return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)


@pytest.fixture(scope="module")
def unlabelled(smoke_run, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("unlabelled")
    made = subprocess.run([sys.executable, "-m", "paraqa_utils.corpus", "manifest", "--real-speech", "--cache",
                           str(tmp / "cache"), "--out", str(tmp / "manifest.csv")], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    rec = smoke_run[0] / "01_annotate" / "recogniser_egemaps.joblib"
    sets = [f"00_corpus.corpus_path={tmp / 'manifest.csv'}",
            *[f"01_annotate.{t}_backends=acoustic@{rec}" for t in ("emotion", "gender", "dimensional")]]
    proc = pipeline(tmp / "runs", *sets, run_id="unlabelled")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return tmp, tmp / "runs" / "unlabelled", rec, sets


def test_unlabelled_real_speech_is_annotated_by_the_saved_recogniser(unlabelled):
    _, run, rec, _ = unlabelled
    m0 = runs.read_json(run / "00_corpus" / "metrics.json")
    assert m0["n_clips"] == 3 and m0["n_rejects"] == 0 and m0["n_with_emotion_labels"] == 0
    m = runs.read_json(run / "01_annotate" / "metrics.json")
    assert m["n_windows_with_truth"] == {"emotion": 0, "gender": 0} and m["uar_test"] is None
    # every clip is accounted for: kept, or dropped by a filter with its reason (never lost to ASR)
    assert m["n_kept_clips"] >= 1 and sum(m["drop_reasons"].values()) == 3 - m["n_kept_clips"]
    assert "asr returned no words" not in m["drop_reasons"]
    pred = m["predicted"]  # the only summary an unlabelled corpus has: what the annotators said
    assert pred["n_windows"] == m["n_kept_windows"] > 0
    assert sum(pred["gender"].values()) == sum(pred["emotion"].values()) == pred["n_windows"]
    assert all(0.0 <= v <= 1.0 for v in pred["dimensional_mean"].values())
    models = runs.read_json(run / "01_annotate" / "stage.json")["models"]
    assert models[f"emotion:acoustic@{rec}"]["sha256"] == runs.sha256_file(rec)
    anns = [json.loads(line) for line in open(run / "01_annotate" / "annotations.jsonl")]
    kept = [s for a in anns if a["kept"] for s in a["segments"] if s["kept"]]
    assert len(kept) == pred["n_windows"] and all(s["emotion"] and s["gender"] for s in kept)
    # real speech, transcribed: the pyannote sample's dialogue and an ARCTIC prompt come through Whisper
    text = " ".join(a["annotated_transcript"] or "" for a in anns).lower()
    assert "gregson" in text and "chicago" in text


def test_a_backend_that_needs_labels_is_refused_naming_the_parameter(unlabelled):
    tmp, _, _, sets = unlabelled
    proc = pipeline(tmp / "runs", *sets, "01_annotate.emotion_backends=acoustic", run_id="needs_labels")
    assert proc.returncode != 0
    out = proc.stdout + proc.stderr
    assert "emotion_backends='acoustic'" in out and "needs emotion labels" in out, out[-2000:]
    entry = runs.read_json(tmp / "runs" / "needs_labels" / "manifest.json")["stages"]["01_annotate"]
    assert entry["status"] == "failed" and "emotion_backends='acoustic'" in entry["error"]
