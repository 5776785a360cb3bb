"""Where the paralinguistic information goes: linear probes on a trained Speech-LLM's representations of each clip.

    python -m paraqa_utils.evaluate.probe --run outputs/runs/<run>            # zero_shot (the base) + every condition
    python -m paraqa_utils.evaluate.probe --run R --model mine=path/to/04_finetune/baseline --max-train-clips 120

For every model: gender accuracy and emotion UA of a logistic-regression probe fitted on the train split's clips and
scored on the test split's (held-out speakers), from
- `encoder`: the frozen Whisper encoder's top layer (mean and standard deviation over frames); `encoder_mid`: its
  middle layer, when the label read-out taps it;
- `adapter`: the adapter's outputs (pooled the same way);
- `llm_mid`, `llm_last`: the LLM's hidden states at the audio span's positions (adapter outputs and utterance
  tokens), in its middle and last layer, for one fixed prompt.
A fall from one row to the next is information the next stage does not pass on. Labels are the corpus's (the
annotator's for clips without them): gender on one-gender clips, emotion as the clip's dominant label.
Writes <run>/04_finetune/probe.csv (or --out) and prints the table.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from paraqa_utils import audio, runs, stats
from paraqa_utils.finetune.base_data import labelled_segments
from paraqa_utils.text import dominant_label

PROMPT = "Describe this recording."


def clip_labels(run: Path) -> list[dict[str, Any]]:
    """Train and test clips with their gender (one-gender clips, else None) and dominant emotion."""
    clips = list(runs.read_jsonl(run / "00_corpus" / "clips.jsonl"))
    ann_path = run / "01_annotate" / "annotations.jsonl"
    anns = {a["clip_id"]: a for a in runs.read_jsonl(ann_path)} if ann_path.exists() else {}
    out = []
    for c in clips:
        if c.get("split") not in ("train", "test"):
            continue
        segs = labelled_segments(c, anns.get(c["clip_id"]))  # the labels the base learnt from
        genders = {s.get("gender") for s in segs}
        out.append({"clip_id": c["clip_id"], "split": c["split"], "audio_path": c["audio_path"],
                    "gender": dominant_label(segs, "gender") if len(genders) == 1 else None,
                    "emotion": dominant_label(segs, "emotion")})
    return out


def _pool(x: torch.Tensor) -> np.ndarray:
    x = x.float()
    return torch.cat([x.mean(0), x.std(0, unbiased=False)]).cpu().numpy()


@torch.no_grad()
def features(model: Any, cache: Any, reads: Any, clips: list[dict[str, Any]], run: Path,
             system_prompt: str = "template") -> dict[str, np.ndarray]:
    """representation -> (n_clips, dim) pooled features, one row per clip in order (prompts as the model's
    config renders them: `system_prompt`)."""
    from paraqa_utils.finetune.speech_data import PromptFormat, collate, user_content
    from paraqa_utils.finetune.speech_llm import n_audio_tokens

    model.eval()
    fmt = PromptFormat(model.tokenizer, 4096, system_prompt)
    pairs = [(audio.content_hash(audio.resolve_audio(run, c["audio_path"])), audio.resolve_audio(run, c["audio_path"]))
             for c in clips]
    reads.prepare(pairs, cache.states_for)
    d = model.audio_encoder.dim
    rows: dict[str, list[np.ndarray]] = {}
    n_layers = None
    for (key, path), st in zip(pairs, (s for i in range(0, len(pairs), 32) for s in cache.states_for(pairs[i:i + 32]))):
        got = {"encoder": _pool(st[:, :d])}
        if st.shape[1] > d:
            got["encoder_mid"] = _pool(st[:, d:])
        got["adapter"] = _pool(model.adapter(st[:, :d].to(model.adapter.proj[0].weight)))
        n_audio = n_audio_tokens(audio.n_samples(path), model.adapter.stack_k) + reads.n_tokens
        enc = fmt.encode(key, path, key, n_audio, user_content(PROMPT, None), None, None, reads.transcript_ids(key))
        t = {k: v.to(model.adapter.proj[0].weight.device) for k, v in collate([enc], model.tokenizer.pad_token_id).items()}
        with model.autocast():
            out = model.llm(inputs_embeds=model.embed(t["input_ids"], t["audio_mask"], [st]),
                            attention_mask=t["attention_mask"], output_hidden_states=True, use_cache=False)
        hs = out.hidden_states
        n_layers = len(hs) - 1
        span = t["audio_mask"][0]
        got["llm_mid"] = _pool(hs[n_layers // 2][0][span])
        got["llm_last"] = _pool(hs[-1][0][span])
        for k, v in got.items():
            rows.setdefault(k, []).append(v)
    return {k: np.stack(v) for k, v in rows.items()}


def probe_scores(x: np.ndarray, clips: list[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Fit on the train clips, score on the test clips: gender accuracy, emotion UA (and their item counts)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out: dict[str, Any] = {}
    for facet, metric in (("gender", "accuracy"), ("emotion", "ua")):
        tr = [i for i, c in enumerate(clips) if c["split"] == "train" and c[facet]]
        te = [i for i, c in enumerate(clips) if c["split"] == "test" and c[facet]]
        if len({clips[i][facet] for i in tr}) < 2 or not te:
            out[f"{facet}_{metric}"], out[f"n_{facet}"] = None, len(te)
            continue
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.1, max_iter=2000, class_weight="balanced",
                                                                 random_state=seed))
        clf.fit(x[tr], [clips[i][facet] for i in tr])
        pred, gold = list(clf.predict(x[te])), [clips[i][facet] for i in te]
        score = (float(np.mean([p == g for p, g in zip(pred, gold)])) if metric == "accuracy"
                 else stats.classification_scores(gold, pred)["ua"])
        out[f"{facet}_{metric}"], out[f"n_{facet}"] = round(score, 3), len(te)
    return out


def condition_folders(run: Path) -> dict[str, Path]:
    """zero_shot (the base as built) first, then every trained condition folder of the run's 04."""
    stage = run / "04_finetune"
    found = {p.name: p for p in sorted(stage.iterdir()) if (p / "adapter.safetensors").exists()} if stage.exists() else {}
    return dict(sorted(found.items(), key=lambda kv: kv[0] != "zero_shot"))


def probe_table(run: Path, models: dict[str, Path], max_train_clips: int = 200, seed: int = 0) -> pd.DataFrame:
    from paraqa_utils.evaluate.condition_model import ConditionModel, load

    clips = clip_labels(run)
    train = [c for c in clips if c["split"] == "train"]
    if len(train) > max_train_clips:
        keep = set(np.random.default_rng(seed).choice(len(train), max_train_clips, replace=False).tolist())
        train = [c for i, c in enumerate(train) if i in keep]
    clips = train + [c for c in clips if c["split"] == "test"]
    rows = []
    for name, folder in models.items():
        cfg, model, cache, reads, _ = load(ConditionModel(name, Path(folder)), run / "04_finetune")
        for rep, x in features(model, cache, reads, clips, run, cfg.system_prompt).items():
            rows.append({"model": name, "representation": rep, **probe_scores(x, clips, seed)})
    return pd.DataFrame(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", required=True, help="a run folder with 00_corpus and a finished 04_finetune")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=FOLDER",
                    help="a condition folder (04_finetune/<condition>) to probe instead of the run's own")
    ap.add_argument("--max-train-clips", type=int, default=200, help="train clips the probes are fitted on")
    ap.add_argument("--out", default="", help="CSV path (default <run>/04_finetune/probe.csv)")
    args = ap.parse_args(argv)
    run = Path(args.run)
    if not (run / "00_corpus" / "clips.jsonl").exists():
        print(f"probe: {run} has no 00_corpus/clips.jsonl (a run folder is needed: its clips carry the labels)",
              file=sys.stderr)
        return 2
    models = dict(m.split("=", 1) for m in args.model) if args.model else condition_folders(run)
    if not models:
        print(f"probe: no condition folder with adapter.safetensors in {run / '04_finetune'}", file=sys.stderr)
        return 2
    table = probe_table(run, {k: Path(v) for k, v in models.items()}, args.max_train_clips)
    out = Path(args.out) if args.out else run / "04_finetune" / "probe.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(table.to_string(index=False))
    print(f"\nwritten: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
