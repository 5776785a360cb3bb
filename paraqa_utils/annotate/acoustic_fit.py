"""Stage 01's acoustic recogniser fitted on the corpus's own labels: feature matrices over windows, training on the
train split (dev picks C), out-of-fold labels for the train windows, saved next to the annotations."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from paraqa_utils import runs
from paraqa_utils.annotate import features, recognisers


def feature_matrix(prep: Any, order: Sequence[tuple[str, int]], spec: str) -> np.ndarray:
    kinds = features.parse_kinds(spec)
    rows = [np.concatenate([prep.clips[cid]["feats"][k][j] for k in kinds]) for cid, j in order]
    return np.vstack(rows) if rows else np.zeros((0, 1), np.float32)


def train_recogniser(stage: runs.Stage, prep: Any, gt: list[dict], order: Sequence, spec: str,
                     seed: int) -> recognisers.AcousticRecogniser:
    """Fit on the train split (dev picks C), save next to the annotations, refuse when no labels exist."""
    x = feature_matrix(prep, order, spec)
    idx = {s: [i for i, r in enumerate(gt) if r["split"] == s] for s in ("train", "dev")}
    if not idx["train"]:
        raise recognisers.RecogniserError("the acoustic recogniser needs a train split; the corpus has none")
    ys = {s: {t: [gt[i][t] for i in idx[s]] for t in ("emotion", "gender", "dimensional")} for s in idx}
    rec = recognisers.AcousticRecogniser(spec, seed).fit(x[idx["train"]], ys["train"],
                                                         x[idx["dev"]] if idx["dev"] else None, ys["dev"])
    rec.train_idx = idx["train"]
    rec.oof = rec.out_of_fold(x[idx["train"]], ys["train"], [order[i][0] for i in idx["train"]])
    rec.info["train_predictions"] = "out-of-fold (5 folds grouped by clip)"
    path = stage.dir / f"recogniser_{spec.replace('+', '_')}.joblib"
    rec.save(path)
    rec.info["file"] = path.name
    stage.record_model(f"acoustic:{spec}", f"acoustic-recogniser-{spec}", file=path.name,
                       n_train_windows=len(idx["train"]))
    return rec


def needs_labels(cfg: Any, gt: Sequence[dict]) -> None:
    """Refuse, naming the parameter, a backend that needs corpus labels the corpus does not have: `labels` reads
    them, `acoustic` trains on those of the train split. An unlabelled corpus takes hf: or ext: backends."""
    for task in ("emotion", "gender", "dimensional"):
        for b in cfg.backends[task]:
            if b != "labels" and (not b.startswith("acoustic") or b.startswith("acoustic@")):
                continue
            rows = [r for r in gt if b == "labels" or r["split"] == "train"]
            if not any(r[task] is not None for r in rows):
                where = "" if b == "labels" else " on the train split (the acoustic recogniser trains on them)"
                raise recognisers.RecogniserError(
                    f"{task}_backends={getattr(cfg, f'{task}_backends')!r}: '{b}' needs {task} labels{where}, and "
                    f"no window of this corpus has one; for unlabelled audio use hf:<checkpoint>, ext:<annotator> "
                    f"or acoustic@<recogniser trained on a labelled run> backends for {task}")
