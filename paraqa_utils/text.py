"""Shared text helpers: the label vocabulary, tokens, label-word mentions, word error rate, the one sentence embedder."""
from __future__ import annotations

import re
from typing import Callable, Sequence

import numpy as np

from paraqa_utils import prompts

# The paper's nine categories (PAPER.md §1); the embedded corpus renders six of them.
EMOTIONS = ("angry", "disgusted", "fearful", "happy", "neutral", "other", "sad", "surprised", "unknown")
# Categories that say nothing a question could be about (PAPER.md §2: CPQA needs a usable emotion).
UNUSABLE_EMOTIONS = (None, "", "unknown", "other")
GENDERS = ("female", "male")
DIMENSIONS = ("valence", "arousal", "dominance")
# Spellings found in common checkpoints and corpora (IEMOCAP, RAVDESS, CREMA-D, superb, MSP-Podcast).
LABEL_ALIASES = {
    "ang": "angry", "anger": "angry", "angry": "angry", "mad": "angry",
    "dis": "disgusted", "disgust": "disgusted", "disgusted": "disgusted",
    "fea": "fearful", "fear": "fearful", "fearful": "fearful", "afraid": "fearful",
    "hap": "happy", "happy": "happy", "happiness": "happy", "joy": "happy", "exc": "happy",
    "neu": "neutral", "neutral": "neutral",
    "sad": "sad", "sadness": "sad",
    "sur": "surprised", "surprise": "surprised", "surprised": "surprised",
    "oth": "other", "other": "other", "xxx": "unknown", "unk": "unknown", "unknown": "unknown",
    "female": "female", "f": "female", "woman": "female", "male": "male", "m": "male", "man": "male",
    "valence": "valence", "val": "valence", "v": "valence", "arousal": "arousal", "aro": "arousal",
    "a": "arousal", "activation": "arousal", "dominance": "dominance", "dom": "dominance", "d": "dominance",
}
NEGATIONS = {"not", "no", "never", "without", "hardly", "nor", "neither", "barely"}
TOKEN = re.compile(r"[a-z0-9]+(?:[-'][a-z0-9]+)*")
Embed = Callable[[Sequence[str]], np.ndarray]  # texts -> L2-normalised rows
# Words that carry no content of their own (our list): what is left of a reference is what an answer must say
# (the offline judge), and what a content answer must share with its evidence (02's quality check).
FUNCTION_WORDS = set("""a an the and or but if then so of to in on at by for with about from into over after before
than as is are was were be been being am do does did done have has had having it its it's this that these those
there here they them their he him his she her hers you your we our us i me my mine speaker speakers voice says say
said saying speaks speak spoke talking talks talk mentions mention mentioned tells tell told what which who whom
whose when where why how while not no yes very really just also too quite some any all can could would should will
shall may might must one sounds sound seems seem feels feel feeling felt person someone clip audio""".split())


def segment_words(ann: dict, segments: Sequence[dict] | None = None) -> list[list[str]]:
    """The words said in each segment (of `segments`, default the clip's own): a word belongs to the segment its
    midpoint falls in; blank words are dropped."""
    words = ann.get("words") or []
    return [[str(w["w"]).strip() for w in words
             if s["start_s"] <= (w["start_s"] + w["end_s"]) / 2 < s["end_s"] and str(w["w"]).strip()]
            for s in (ann.get("segments") or [] if segments is None else segments)]


def dominant_label(segments: Sequence[dict], key: str) -> str | None:
    """The `key` label (emotion, gender) covering most of the clip's duration over its segments (ties: first seen);
    what a test item's label is, and what the annotator says of the clip."""
    dur: dict[str, float] = {}
    for s in segments:
        if s.get(key) is not None:
            dur[s[key]] = dur.get(s[key], 0.0) + float(s["end_s"]) - float(s["start_s"])
    return max(dur, key=dur.__getitem__) if dur else None


def tokens(text: str) -> list[str]:
    return TOKEN.findall(text.lower())


def stem(word: str) -> str:
    """A crude stem (plural, -ed, -ing) so "keys"/"key", "moved"/"move" match; no dictionary needed."""
    for suffix in ("ing", "ed", "es", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            return word[: -len(suffix)]
    return word


def content_words(text: str, drop: set[str] = frozenset()) -> set[str]:
    return {stem(t) for t in tokens(text or "") if t not in FUNCTION_WORDS} - set(drop)


def word_lines(name: str) -> list[str]:
    """The non-comment lines of one of our word-list files (prompts/), or of a user's file by path."""
    return [ln.strip() for ln in prompts.path(name).read_text().splitlines()
            if ln.strip() and not ln.lstrip().startswith("#")]


def label_lexicon(name: str) -> dict[str, dict[str, set[str]]]:
    """{'emotion': {word: {labels}}, 'gender': {word: {labels}}} from `<facet>.<label>: w, w` lines."""
    lex: dict[str, dict[str, set[str]]] = {"emotion": {}, "gender": {}}
    for ln in word_lines(name):
        head, _, words = ln.partition(":")
        facet, _, label = head.strip().partition(".")
        for w in (x.strip().lower() for x in words.split(",") if x.strip()):
            lex.setdefault(facet, {}).setdefault(w, set()).add(label)
    return lex


def mentions(text: str, lexicon: dict[str, set[str]], spoken: set[str]) -> list[tuple[str, set[str]]]:
    """Label words used in `text` as the speaker's state: not negated nearby, not merely words the speaker said."""
    toks = [t[:-2] if t.endswith("'s") else t for t in tokens(text)]  # "a woman's voice" names a woman
    out = []
    for i, t in enumerate(toks):
        if t in lexicon and t not in spoken:
            before = toks[max(0, i - 3):i]
            if not any(b in NEGATIONS or b.endswith("n't") for b in before):
                out.append((t, lexicon[t]))
    return out


def normalise(text: str) -> list[str]:
    """Lower-case words without punctuation (apostrophes kept): what WER compares."""
    return re.sub(r"[^\w' ]+", " ", (text or "").lower().replace("-", " ")).split()


def edit_distance(ref: Sequence[str], hyp: Sequence[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions)."""
    prev = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        cur = [i] + [0] * len(hyp)
        for j, h in enumerate(hyp, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float | None:
    """Corpus word error rate: total edits over total reference words (None without reference words)."""
    n = edits = 0
    for r, h in zip(refs, hyps):
        rw = normalise(r)
        n += len(rw)
        edits += edit_distance(rw, normalise(h))
    return edits / n if n else None


def minilm_embedder(spec: str = "", batch_size: int = 64) -> Embed:
    """all-MiniLM-L6-v2 (the embedded asset, or a path / hub id) with mean pooling, rows L2-normalised."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    from paraqa_utils.assets import resolve_model

    loaded: list = []  # the model loads on first use: a stage with nothing to compare never pays for it

    def embed(texts: Sequence[str]) -> np.ndarray:
        if not loaded:
            path = resolve_model("embedder", spec)
            loaded.extend([AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()])
        tok, model = loaded
        out = []
        with torch.inference_mode():
            for i in range(0, len(texts), batch_size):
                enc = tok(list(texts[i:i + batch_size]), padding=True, truncation=True, max_length=128,
                          return_tensors="pt")
                hidden = model(**enc).last_hidden_state
                mask = enc["attention_mask"].unsqueeze(-1).float()
                out.append(torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9), dim=-1))
        return torch.cat(out).numpy() if out else np.zeros((0, 384), dtype=np.float32)
    return embed
