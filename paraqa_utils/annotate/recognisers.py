"""Emotion, V/A/D and gender annotators: corpus labels, our trained acoustic recogniser, any HF checkpoint, votes."""
from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from paraqa_utils.text import DIMENSIONS, EMOTIONS, GENDERS, LABEL_ALIASES

TARGETS = {"emotion": EMOTIONS, "gender": GENDERS, "dimensional": DIMENSIONS}


class LabelMapError(ValueError):
    """Labels (of a checkpoint or a corpus) that do not map onto our label set; says which and how to map them."""


class RecogniserError(RuntimeError):
    """A recogniser that cannot be built or loaded (no training labels, missing model path, random head)."""


def parse_label_map(spec: str) -> dict[str, str]:
    """'calm:neutral, exc:happy' -> {'calm': 'neutral', 'exc': 'happy'} (keys lower-cased)."""
    out = {}
    for item in filter(None, (x.strip() for x in (spec or "").split(","))):
        if ":" not in item:
            raise LabelMapError(f"label_map item '{item}' must look like 'their_label:our_label'")
        k, v = (s.strip() for s in item.rsplit(":", 1))
        out[k.lower()] = v.lower()
    return out


def map_labels(labels: Sequence[str], task: str, label_map: dict[str, str] | None = None,
               source: str = "") -> list[str]:
    """Map foreign label names onto ours (user map first, then known aliases); unmapped names are an error."""
    allowed = TARGETS[task]
    label_map = label_map or {}
    out, bad = [], []
    for lab in labels:
        key = str(lab).strip().lower()
        ours = label_map.get(key) or LABEL_ALIASES.get(key) or LABEL_ALIASES.get(re.sub(r"[^a-z]", "", key))
        if ours not in allowed:
            bad.append(str(lab))
        out.append(ours)
    if bad:
        raise LabelMapError(
            f"{source or 'labels'}: {bad} do not map onto our {task} set {list(allowed)}; pass a mapping with "
            f"the label_map parameter, e.g. label_map = \"{bad[0].lower()}:{allowed[0]}\" (several joined by commas)")
    return out


def parse_backends(spec: str, task: str) -> list[str]:
    """'acoustic, hf:org/model' -> ['acoustic', 'hf:org/model']; labels | acoustic[:features] | hf:<id> | ext:<name>."""
    items = [x.strip() for x in (spec or "").split(",") if x.strip()]
    for it in items:
        if not (it in ("labels", "acoustic") or (it.startswith(("acoustic:", "hf:", "ext:")) and len(it.split(":", 1)[1]))
                or (it.startswith("acoustic@") and len(it) > len("acoustic@"))):
            raise ValueError(f"unknown {task} backend '{it}': use labels, acoustic, acoustic:<features> "
                             "(egemaps|whisper|egemaps+whisper), acoustic@<a saved recogniser_*.joblib>, "
                             "hf:<path or hub id> or ext:<external_annotators name>")
    if not items:
        raise ValueError(f"no {task} backend given")
    return items


# --- the acoustic recogniser ----------------------------------------------------------------------------------
class AcousticRecogniser:
    """Standardised features -> logistic regression (category, gender) and ridge regression (V/A/D).

    Trained on the corpus's train split only; C is picked on the dev split's unweighted accuracy when it has
    labels. class_weight='balanced' because the paper reports unweighted accuracy (mean per-class recall).
    """

    def __init__(self, features: str, seed: int = 0):
        self.features, self.seed = features, seed
        self.heads: dict[str, Any] = {}
        self.info: dict[str, Any] = {"features": features}
        self.train_idx: list[int] = []  # where the training windows sit in the stage's window order
        self.oof: dict[str, tuple[list, list]] = {}  # their out-of-fold predictions, per task

    def _classifier(self, c: float):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler
        return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000, class_weight="balanced",
                                                                  random_state=self.seed))

    def fit(self, x: np.ndarray, y: dict[str, list], x_dev: np.ndarray | None = None,
            y_dev: dict[str, list] | None = None, c_fixed: dict[str, float] | None = None) -> "AcousticRecogniser":
        """y: {'emotion': [...], 'gender': [...], 'dimensional': [[v, a, d] or None, ...]}; None = unlabelled."""
        from sklearn.linear_model import Ridge
        from sklearn.metrics import balanced_accuracy_score
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        for task in ("emotion", "gender"):
            keep = [i for i, v in enumerate(y.get(task, [])) if v is not None]
            labels = [y[task][i] for i in keep]
            if len(set(labels)) < 2:
                continue  # no head: asking for it later is a clear error, never a guess
            best = (None, -1.0, 1.0)
            dev_keep = [i for i, v in enumerate((y_dev or {}).get(task, [])) if v is not None]
            grid = ((c_fixed or {}).get(task),) if (c_fixed or {}).get(task) else (
                (0.1, 1.0, 10.0) if dev_keep and x_dev is not None else (1.0,))
            for c in grid:
                clf = self._classifier(c).fit(x[keep], labels)
                score = (balanced_accuracy_score([y_dev[task][i] for i in dev_keep], clf.predict(x_dev[dev_keep]))
                         if dev_keep and x_dev is not None else 0.0)
                if score > best[1]:
                    best = (clf, score, c)
            self.heads[task] = best[0]
            self.info[task] = {"n_train": len(keep), "classes": sorted(set(labels)), "C": best[2],
                               "dev_uar": best[1] if dev_keep else None}
        keep = [i for i, v in enumerate(y.get("dimensional", [])) if v is not None and None not in v]
        if len(keep) >= 2:
            self.heads["dimensional"] = make_pipeline(StandardScaler(), Ridge(alpha=10.0)).fit(
                x[keep], np.asarray([y["dimensional"][i] for i in keep], dtype=float))
            self.info["dimensional"] = {"n_train": len(keep)}
        return self

    def out_of_fold(self, x: np.ndarray, y: dict[str, list], groups: Sequence[str],
                    n_folds: int = 5) -> dict[str, tuple[list, list]]:
        """Predictions for the training items from models that never saw their clip (k folds grouped by clip).

        The paper's recognisers were trained on other corpora, so its labels on training clips are honest
        predictions; ours would be in-sample (optimistic) if the final model labelled its own training data.
        """
        from sklearn.model_selection import GroupKFold

        out = {t: ([None] * len(x), [None] * len(x)) for t in self.heads}
        if len(set(groups)) < 2:
            return {t: self.predict(t, x) for t in self.heads}
        c_fixed = {t: self.info[t]["C"] for t in ("emotion", "gender") if t in self.info}
        for fit_idx, held in GroupKFold(n_splits=min(n_folds, len(set(groups)))).split(x, groups=list(groups)):
            sub = AcousticRecogniser(self.features, self.seed).fit(
                x[fit_idx], {t: [v[i] for i in fit_idx] for t, v in y.items()}, c_fixed=c_fixed)
            for t in self.heads:  # a fold without two classes of a task falls back to the final model
                labs, confs = (sub if t in sub.heads else self).predict(t, x[held])
                for j, i in enumerate(held):
                    out[t][0][i], out[t][1][i] = labs[j], confs[j]
        return out

    def _head(self, task: str):
        if task not in self.heads:
            raise RecogniserError(f"the acoustic recogniser has no {task} model: the train split had fewer than "
                                  f"two distinct {task} labels; use the labels or hf backend for {task}")
        return self.heads[task]

    def predict(self, task: str, x: np.ndarray) -> tuple[list, list]:
        """Categorical tasks: (labels, confidences); 'dimensional': (rows of [v, a, d] in 0..1, None)."""
        head = self._head(task)
        if len(x) == 0:
            return [], []
        if task == "dimensional":
            return np.clip(head.predict(x), 0.0, 1.0).tolist(), [None] * len(x)
        proba = head.predict_proba(x)
        classes = head.classes_
        return [str(classes[i]) for i in proba.argmax(1)], proba.max(1).round(4).tolist()

    def save(self, path: Path) -> None:
        import joblib
        joblib.dump({"features": self.features, "seed": self.seed, "heads": self.heads, "info": self.info}, path)

    @classmethod
    def load(cls, path: Path) -> "AcousticRecogniser":
        import joblib
        d = joblib.load(path)
        self = cls(d["features"], d["seed"])
        self.heads, self.info = d["heads"], d["info"]
        return self


# --- any transformers checkpoint ------------------------------------------------------------------------------
class HfAudioModel:
    """A transformers audio-classification (or regression) checkpoint, its labels mapped onto ours."""

    def __init__(self, spec: str, task: str, label_map: dict[str, str] | None = None, cpu_threads: int = 1,
                 device: str = "cpu"):
        import torch
        from transformers import AutoConfig, AutoFeatureExtractor, AutoModelForAudioClassification

        from paraqa_utils.annotate import w2v2_regression

        p = Path(spec).expanduser()
        if spec.startswith(("/", "./", "../", "~")) and not p.exists():
            raise RecogniserError(f"{task} model path does not exist: {spec}")
        src = str(p.resolve()) if p.exists() else spec
        torch.set_num_threads(max(1, cpu_threads))
        try:
            self.extractor = AutoFeatureExtractor.from_pretrained(src)
            if w2v2_regression.is_regression_layout(AutoConfig.from_pretrained(src)):
                self.model, missing = w2v2_regression.load(src)  # wav2vec2 + its regression head (dimensional)
            else:
                self.model, info = AutoModelForAudioClassification.from_pretrained(src, output_loading_info=True)
                missing = sorted(info.get("missing_keys") or [])
        except Exception as exc:
            raise RecogniserError(f"could not load {task} checkpoint '{spec}': {type(exc).__name__}: {exc}") from None
        if missing:
            # A head created at random would label everything, confidently and wrongly.
            head = [k for k in missing if k.startswith(("classifier", "projector"))] or missing
            raise RecogniserError(f"checkpoint '{spec}' lacks the tensors {head[:6]}{' ...' if len(head) > 6 else ''}"
                                  f" ({len(missing)} missing in all): its head would be random; it is not an "
                                  "audio-classification or wav2vec2 regression-head checkpoint")
        self.model.to(device).eval()
        self.spec, self.task, self.device = spec, task, device
        names = [self.model.config.id2label[i] for i in range(self.model.config.num_labels)]
        self.labels = map_labels(names, task, label_map, source=f"checkpoint '{spec}'")
        if task == "dimensional" and sorted(set(self.labels)) != sorted(DIMENSIONS):
            raise LabelMapError(f"checkpoint '{spec}' outputs {names}; a dimensional model must give valence, "
                                "arousal and dominance (map its output names with label_map)")

    @property
    def sample_rate_hz(self) -> int:
        return int(getattr(self.extractor, "sampling_rate", 16000))

    def predict(self, excerpts: Sequence[np.ndarray]) -> tuple[list, list]:
        """One forward pass per excerpt (no padding across windows: many checkpoints ignore attention masks)."""
        import torch

        labels, confs = [], []
        for x in excerpts:
            inputs = self.extractor(x, sampling_rate=self.sample_rate_hz, return_tensors="pt").to(self.device)
            with torch.no_grad():
                logits = self.model(**inputs).logits[0].float().cpu().numpy()
            if self.task == "dimensional":
                vals = {lab: float(v) for lab, v in zip(self.labels, logits)}
                labels.append([min(1.0, max(0.0, vals[d])) for d in DIMENSIONS])
                confs.append(None)
                continue
            p = np.exp(logits - logits.max())
            p /= p.sum()
            ours: Counter = Counter()
            for lab, pi in zip(self.labels, p):
                ours[lab] += float(pi)  # several of their labels may map onto one of ours (exc, hap -> happy)
            best = max(ours, key=ours.get)
            labels.append(best)
            confs.append(round(ours[best], 4))
        return labels, confs


# --- voting ---------------------------------------------------------------------------------------------------
def vote(members: Sequence[tuple[Sequence, Sequence]]) -> tuple[list, list]:
    """Majority vote per item over (labels, confidences) members; ties go to the higher summed confidence.

    The ensemble's confidence is the summed confidence of the winning votes over the number of members, so a
    2-of-3 vote can never look as sure as a unanimous one. Members that abstain (None) are not counted.
    """
    if len(members) == 1:
        return list(members[0][0]), list(members[0][1])
    n = len(members[0][0])
    labels, confs = [], []
    for i in range(n):
        votes: Counter = Counter()
        mass: Counter = Counter()
        for labs, cs in members:
            if labs[i] is not None:
                votes[labs[i]] += 1
                mass[labs[i]] += 1.0 if cs[i] is None else float(cs[i])
        if not votes:
            labels.append(None)
            confs.append(None)
            continue
        best = max(votes, key=lambda k: (votes[k], mass[k]))
        labels.append(best)
        confs.append(round(mass[best] / len(members), 4))
    return labels, confs


def mean_dimensions(members: Sequence[Sequence]) -> list:
    """Average V/A/D rows over members (None where every member abstains)."""
    out = []
    for rows in zip(*members):
        vals = [r for r in rows if r is not None]
        out.append(np.mean(np.asarray(vals, dtype=float), axis=0).round(4).tolist() if vals else None)
    return out
