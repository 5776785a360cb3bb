"""The learned offline judge (`offline/learned_v2`, the offline default): a small head on features.py's vector.

Trained by `make judge-model` (`python -m paraqa_utils.judge.learned train`) on the dev graded sets and on
perturb.py's answers made from their bases, never on a held-out set. The head is an ensemble of small MLPs whose
mean, 0-5, is the score; rows carry the name and the version (the hash of the weights and what made them).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from paraqa_utils import runs
from paraqa_utils.judge import features, graded, perturb

NAME = "offline/learned_v2"
RUBRIC = "learned_v2"
MAKE_TARGET = "make judge-model"
TRAIN_FILES = (*graded.DEV_FILES, graded.DEV_V2_FILE, graded.DEV_V3_FILE)
NEVER_TRAIN = (graded.HELDOUT_FILE, graded.BLIND_FILE, graded.BLIND_V4_FILE)
SOURCES = ("features.py", "perturb.py", "quantities.py", "learned.py", "offline.py")
PERTURBED_WEIGHT = 0.5  # a perturbation counts half a hand-graded item
HEAD = {"hidden": 16, "members": 5, "epochs": 150, "lr": 0.01, "weight_decay": 0.001, "seed": 0}


class LearnedJudgeError(RuntimeError):
    """The model file is missing, stale or unreadable; the message names the make target that builds it."""


def model_dir() -> Path:
    return runs.cache_dir() / "judge" / "learned_v2"


def training_sha() -> str:
    """What the model is made of: the training sets, our word list and the code that reads and trains."""
    here = Path(__file__).parent
    from paraqa_utils import prompts, text
    blobs = [Path(p).read_bytes() for p in TRAIN_FILES] + [(here / s).read_bytes() for s in SOURCES]
    blobs += [prompts.path(features.WORDS_FILE).read_bytes(), Path(text.__file__).read_bytes()]
    return hashlib.sha256(b"\0".join(blobs) + json.dumps(HEAD, sort_keys=True).encode()).hexdigest()


def _fit(X: np.ndarray, y: np.ndarray, w: np.ndarray, seed: int) -> list[dict[str, np.ndarray]]:
    import torch

    torch.manual_seed(seed)
    xt, yt, wt = (torch.tensor(a, dtype=torch.float32) for a in (X, y / 5.0, w))
    members = []
    for m in range(HEAD["members"]):
        g = torch.Generator().manual_seed(seed * 100 + m)
        w1 = torch.nn.Parameter(torch.randn(X.shape[1], HEAD["hidden"], generator=g) / np.sqrt(X.shape[1]))
        b1 = torch.nn.Parameter(torch.zeros(HEAD["hidden"]))
        w2 = torch.nn.Parameter(torch.randn(HEAD["hidden"], 1, generator=g) / np.sqrt(HEAD["hidden"]))
        b2 = torch.nn.Parameter(torch.zeros(1))
        opt = torch.optim.AdamW([w1, b1, w2, b2], lr=HEAD["lr"], weight_decay=HEAD["weight_decay"])
        for _ in range(HEAD["epochs"]):
            opt.zero_grad()
            pred = torch.sigmoid(torch.tanh(xt @ w1 + b1) @ w2 + b2).squeeze(1)
            loss = (wt * (pred - yt) ** 2).sum() / wt.sum()
            loss.backward()
            opt.step()
        members.append({k: v.detach().numpy().copy() for k, v in (("w1", w1), ("b1", b1), ("w2", w2), ("b2", b2))})
    return members


def _predict(members: Sequence[dict[str, np.ndarray]], X: np.ndarray) -> np.ndarray:
    outs = [1 / (1 + np.exp(-(np.tanh(X @ m["w1"] + m["b1"]) @ m["w2"] + m["b2"]))) for m in members]
    return 5.0 * np.mean(outs, axis=0)[:, 0]


def training_items() -> list[dict[str, Any]]:
    """The dev sets' items (weight 1) and the perturbations of their bases (PERTURBED_WEIGHT)."""
    for p in TRAIN_FILES:
        if Path(p).resolve() in {Path(h).resolve() for h in NEVER_TRAIN}:
            raise LearnedJudgeError(f"{p} is a held-out set: the learned judge never trains on it")
    real = [{**it, "base": it["reference"], "weight": 1.0} for p in TRAIN_FILES for it in graded.load_graded(p)]
    bases = list({it["reference"]: {k: it[k] for k in ("question", "reference", "question_type")}
                  for it in real}.values())
    made = [{**it, "weight": PERTURBED_WEIGHT} for it in perturb.perturbations(bases, seed=HEAD["seed"])]
    return real + made


class Head:
    """Feature scaling and the ensemble's weights, as saved in model_dir()."""

    def __init__(self, mean: np.ndarray, std: np.ndarray, members: list[dict[str, np.ndarray]], meta: dict[str, Any]):
        self.mean, self.std, self.members, self.meta = mean, std, members, meta

    def __call__(self, X: np.ndarray) -> np.ndarray:
        return np.clip(_predict(self.members, (X - self.mean) / self.std), 0.0, 5.0)

    @property
    def version(self) -> str:
        return self.meta["version"]

    def save(self, folder: Path) -> None:
        from safetensors.numpy import save_file

        tensors = {"mean": self.mean, "std": self.std}
        tensors |= {f"m{i}.{k}": v for i, m in enumerate(self.members) for k, v in m.items()}
        folder.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=folder.parent, prefix=".learned."))
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}, work / "head.safetensors")
        digest = hashlib.sha256((work / "head.safetensors").read_bytes()).hexdigest()
        self.meta["version"] = f"{RUBRIC}@{digest[:12]}"
        (work / "meta.json").write_text(json.dumps(self.meta, indent=1))
        if folder.exists():
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()
        work.chmod(0o755)
        os.replace(work, folder)

    @classmethod
    def load(cls, folder: Path | None = None) -> "Head":
        folder = Path(folder or model_dir())
        meta_f, weights = folder / "meta.json", folder / "head.safetensors"
        if not meta_f.exists() or not weights.exists():
            raise LearnedJudgeError(f"the learned judge's model is missing ({folder}): build it with `{MAKE_TARGET}`")
        from safetensors.numpy import load_file
        try:
            meta, t = json.loads(meta_f.read_text()), load_file(str(weights))
        except Exception as exc:  # noqa: BLE001 - a damaged file, whatever the reader says
            raise LearnedJudgeError(f"cannot read the learned judge's model in {folder} ({exc}): rebuild it with "
                                    f"`{MAKE_TARGET}`") from None
        if meta.get("features") != features.NAMES:
            raise LearnedJudgeError(f"the learned judge's model in {folder} was trained on other features: rebuild "
                                    f"it with `{MAKE_TARGET}`")
        n = meta["head"]["members"]
        members = [{k: t[f"m{i}.{k}"] for k in ("w1", "b1", "w2", "b2")} for i in range(n)]
        return cls(t["mean"], t["std"], members, meta)


def fit_head(X: np.ndarray, y: np.ndarray, w: np.ndarray, meta: dict[str, Any]) -> Head:
    mean, std = X.mean(0), X.std(0) + 1e-6
    return Head(mean, std, _fit((X - mean) / std, y, w, HEAD["seed"]), meta)


def grouped_cv(X: np.ndarray, y: np.ndarray, w: np.ndarray, groups: Sequence[str], real: np.ndarray,
               folds: int = 5) -> float:
    """Spearman of out-of-fold predictions on the hand-graded items, folds by base (no base in both sides)."""
    from scipy.stats import spearmanr

    names = sorted(set(groups))
    rng = np.random.default_rng(HEAD["seed"])
    fold_of = {g: i % folds for i, g in enumerate(rng.permutation(names))}
    f = np.array([fold_of[g] for g in groups])
    pred = np.zeros(len(y))
    for k in range(folds):
        tr, te = f != k, f == k
        pred[te] = fit_head(X[tr], y[tr], w[tr], {})(X[te])
    return float(spearmanr(pred[real], y[real]).statistic)


def train(out: Path | None = None, cv: bool = False) -> Head:
    items = training_items()
    fz = features.Featurizer(features.minilm_encoder(""))
    X = fz.features(items)
    y = np.array([it["grade"] for it in items], dtype=np.float32)
    w = np.array([it["weight"] for it in items], dtype=np.float32)
    meta = {"name": NAME, "features": features.NAMES, "head": HEAD, "training_sha256": training_sha(),
            "train_files": [Path(p).name for p in TRAIN_FILES], "n_hand_graded": int((w == 1).sum()),
            "n_perturbed": int((w != 1).sum()), "perturbed_weight": PERTURBED_WEIGHT}
    if cv:
        real = w == 1
        meta["grouped_cv_spearman"] = round(grouped_cv(X, y, w, [it["base"] for it in items], real), 4)
    head = fit_head(X, y, w, meta)
    head.save(Path(out or model_dir()))
    return head


class LearnedScorer:
    """score(items) -> 0-5 floats, with the embedded MiniLM (or `encoder`) and the saved head."""

    def __init__(self, encoder=None, head: Head | None = None):
        self.head = head or Head.load()
        self.featurizer = features.Featurizer(encoder or features.minilm_encoder(""))

    @property
    def version(self) -> str:
        return self.head.version

    @staticmethod
    def code_sha() -> str:
        """The hash of today's training sets and code (the model's own is in its meta.json)."""
        return training_sha()

    def score(self, items: Sequence[dict[str, Any]]) -> np.ndarray:
        if not items:
            return np.zeros(0)
        return self.head(self.featurizer.features(items))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m paraqa_utils.judge.learned", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the head on the dev sets and their perturbations; save it")
    t.add_argument("--out", type=Path, default=None, help=f"folder (default {model_dir()})")
    t.add_argument("--cv", action="store_true", help="also measure a 5-fold grouped cross-validation on the dev sets")
    a = ap.parse_args(argv)
    head = train(a.out, a.cv)
    m = head.meta
    print(f"{NAME} {head.version}: {m['n_hand_graded']} hand-graded + {m['n_perturbed']} perturbed items"
          + (f"; grouped CV Spearman {m['grouped_cv_spearman']:.3f}" if "grouped_cv_spearman" in m else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
