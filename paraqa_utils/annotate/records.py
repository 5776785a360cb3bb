"""Stage 01: voice activity, windows, word-timed transcripts, emotion/V-A-D/gender labels, condensation, metrics."""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from paraqa_utils.annotate import quality as metrics_lib
from paraqa_utils import runs
from paraqa_utils.audio import resolve_audio
from paraqa_utils.params import check_types
from paraqa_utils.annotate import asr
from paraqa_utils.annotate import condense
from paraqa_utils.annotate import external
from paraqa_utils.annotate import recognisers
from paraqa_utils.annotate.steps import Prepared
from paraqa_utils.text import DIMENSIONS


@dataclass
class AnnotateConfig:
    """Every knob of stage 01, each a parameter of 01_annotate.ipynb of the same name and with no default here:
    its one default is the notebook's parameters cell (`stage.config(AnnotateConfig, globals())`)."""
    seed: int
    n_workers: int
    device: str
    min_rms_dbfs: float
    vad_threshold: float
    vad_min_speech_ms: int
    vad_min_silence_ms: int
    window_s: float
    context_s: float
    asr_backend: str
    asr_model: str
    asr_language: str
    asr_beam_size: int
    asr_pack_s: float
    asr_gap_s: float
    asr_align_model: str  # "" = the ASR's own word times; else a CTC checkpoint that re-times the words
    emotion_backends: str
    gender_backends: str
    dimensional_backends: str
    acoustic_features: str
    label_map: str
    trust_remote_code: bool  # hf: checkpoints that ship their own model code (MERaLiON-SER-v1) run only when True
    external_annotators: dict  # name -> {"command": ..., "timeout_s": ..., "retries": ...} for ext:<name> backends
    consistency_filter: bool
    valence_positive_above: float
    valence_negative_below: float
    occurrence_min_share: float
    balance_max_ratio: float
    transcript_verbalise: str
    backends: dict[str, list[str]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        from paraqa_utils.annotate.features import parse_kinds

        problems = check_types(self)
        if problems:  # the value checks below assume the right types
            raise ValueError("annotation settings:\n  - " + "\n  - ".join(problems))
        if self.asr_backend not in asr.ASR_BACKENDS:
            raise ValueError(f"asr_backend '{self.asr_backend}' unknown; use one of {asr.ASR_BACKENDS}")
        self.backends = {t: recognisers.parse_backends(getattr(self, f"{t}_backends"), t)
                         for t in ("emotion", "gender", "dimensional")}
        for b in [b for bs in self.backends.values() for b in bs if b.startswith("acoustic@")]:
            if not Path(b[len("acoustic@"):]).expanduser().is_file():
                raise ValueError(f"backend '{b}': no such recogniser file (a labelled run's "
                                 "01_annotate/recogniser_<features>.joblib)")
        for spec in [b for bs in self.backends.values() for b in bs if b.startswith("acoustic") and "@" not in b]:
            parse_kinds(spec.split(":", 1)[1] if ":" in spec else self.acoustic_features)
        recognisers.parse_label_map(self.label_map)
        for b in [b for bs in self.backends.values() for b in bs if b.startswith("ext:")]:
            if b[4:] not in self.external_annotators:
                raise ValueError(f"backend '{b}' names no entry of external_annotators (it has "
                                 f"{sorted(self.external_annotators) or 'none'})")
            external.command_of(b[4:], self.external_annotators[b[4:]])
        if not 0 <= self.valence_negative_below <= self.valence_positive_above <= 1:
            raise ValueError("need 0 <= valence_negative_below <= valence_positive_above <= 1")
        if self.window_s <= 0 or self.context_s < 0 or self.n_workers < 1 or not 0 <= self.occurrence_min_share <= 1:
            raise ValueError("window_s > 0, context_s >= 0, n_workers >= 1, 0 <= occurrence_min_share <= 1")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ValueError(f"device '{self.device}': use cpu or cuda[:N]")
        if self.transcript_verbalise not in VERBALISE:
            raise ValueError(f"transcript_verbalise must be one of {VERBALISE}")

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "backends"}


def load_clips(stage: runs.Stage) -> list[dict[str, Any]]:
    """The corpus manifest (hash-checked), each clip with `audio_file`: its audio resolved to a real path."""
    clips = list(runs.read_jsonl(stage.input("00_corpus/clips.jsonl")))
    for c in clips:
        c["audio_file"] = str(resolve_audio(stage.run_dir, c["audio_path"]))
    return clips


def clip_summary(clips: Sequence[dict]):
    """Clips and seconds of audio per split (what the stage reads)."""
    import pandas as pd

    return pd.DataFrame(clips).groupby("split").agg(n_clips=("clip_id", "size"), audio_s=("duration_s", "sum"))


def recogniser_table(labels: dict[str, Any]):
    """One row per trained recogniser (what label_windows reports about it)."""
    import pandas as pd

    return pd.DataFrame(labels["recognisers"]).T


# --- records ---------------------------------------------------------------------------------------------------
def assign_words(words: list[dict], segments: list[dict]) -> None:
    """Each word inherits the window its midpoint falls in (the nearest window when it falls in none)."""
    for w in words:
        mid = (w["start_s"] + w["end_s"]) / 2
        w["seg"] = min(range(len(segments)), key=lambda i: max(segments[i]["start_s"] - mid,
                                                                mid - segments[i]["end_s"], 0.0)) if segments else None


def build_records(clips: Sequence[dict], prep: Prepared, words: dict[str, list[dict]], labels: dict[str, Any],
                  cfg: AnnotateConfig, asr_errors: dict[str, str] | None = None) -> tuple[list[dict], list[dict]]:
    """One annotation record per clip, condensation applied; plus the rejects (every dropped clip and window)."""
    records, rejects, asr_errors = [], [], asr_errors or {}
    # an external annotator that failed on a clip after its retries: recorded; its windows abstained from the vote
    rejects += [{"clip_id": cid, "level": "annotator", "start_s": None, "end_s": None, "reason": why}
                for fails in labels.get("annotator_failures", {}).values() for cid, why in fails.items()]
    for clip in clips:
        cid = clip["clip_id"]
        p = prep.clips[cid]
        rec = {"clip_id": cid, "split": clip.get("split"), "audio_path": clip["audio_path"],
               "duration_s": p.get("duration_s") or clip.get("duration_s"), "words": [], "segments": [],
               "dominant_emotion": None, "dominant_share": None, "gender": None, "kept": False,
               "drop_reason": p.get("reason"), "backends": labels["backends"], "annotated_transcript": ""}
        records.append(rec)
        if p["status"] != "ok":
            rejects.append({"clip_id": cid, "level": "clip", "start_s": None, "end_s": None, "reason": p["reason"]})
            continue
        segs = []
        for k, w in enumerate(p["windows"]):
            g = labels["index"][(cid, k)]
            vad = labels["dimensional"]["final"][0][g]
            segs.append({"start_s": w.start_s, "end_s": w.end_s,
                         "emotion": labels["emotion"]["final"][0][g], "emotion_conf": labels["emotion"]["final"][1][g],
                         **{d: (None if vad is None else round(vad[j], 4)) for j, d in enumerate(DIMENSIONS)},
                         "gender": labels["gender"]["final"][0][g], "gender_conf": labels["gender"]["final"][1][g],
                         "backend": labels["backends"]["emotion"], "kept": True, "drop_reason": None})
        rec["segments"] = segs
        rec["words"] = [dict(w) for w in words.get(cid, [])]
        assign_words(rec["words"], segs)
        reason = asr_errors.get(cid) or (None if rec["words"] else (
            "no reference transcript" if cfg.asr_backend == "reference" else "asr returned no words"))
        if cfg.consistency_filter:
            condense.apply_consistency(segs, cfg.valence_positive_above, cfg.valence_negative_below)
        emo, share, occ_reason = condense.occurrence_check(segs, cfg.occurrence_min_share)
        rec["dominant_emotion"], rec["dominant_share"] = emo or condense.dominant(segs)[0], round(share, 4)
        rec["gender"] = _majority_gender(segs)
        rec["drop_reason"] = reason or occ_reason
        rec["kept"] = rec["drop_reason"] is None
        rejects += [{"clip_id": cid, "level": "window", "start_s": s["start_s"], "end_s": s["end_s"],
                     "reason": s["drop_reason"]} for s in segs if not s["kept"]]
    for i in condense.balance(records, cfg.balance_max_ratio, cfg.seed):
        records[i]["kept"] = False
        records[i]["drop_reason"] = f"class balancing (max {cfg.balance_max_ratio:g}x the rarest emotion)"
    for rec in records:
        if rec["segments"] and not rec["kept"]:
            rejects.append({"clip_id": rec["clip_id"], "level": "clip", "start_s": None, "end_s": None,
                            "reason": rec["drop_reason"]})
        rec["annotated_transcript"] = serialise_transcript(rec, verbalise=cfg.transcript_verbalise)
    return records, rejects


def _majority_gender(segments: Sequence[dict]) -> str | None:
    dur: Counter = Counter()
    for s in segments:
        if s.get("gender"):
            dur[s["gender"]] += s["end_s"] - s["start_s"]
    return max(dur, key=dur.get) if dur else None


# --- the annotated transcript ----------------------------------------------------------------------------------
VERBALISE = ("numbers", "words", "none")


def level_word(value: float) -> str:
    """0..1 -> low / mid / high (thirds of the scale)."""
    return "low" if value < 1 / 3 else "high" if value > 2 / 3 else "mid"


def format_labels(seg: dict[str, Any], verbalise: str = "numbers", with_emotion: bool = True) -> str:
    """'female; sad, valence 0.21 arousal 0.30 dominance 0.35' (or '... valence low ...', or no V/A/D)."""
    parts = [seg["gender"]] if seg.get("gender") else []
    if with_emotion and seg.get("emotion"):
        dims = [(d, seg.get(d)) for d in DIMENSIONS if seg.get(d) is not None]
        if verbalise == "none" or not dims:
            parts.append(seg["emotion"])
        else:
            fmt = (lambda v: f"{v:.2f}") if verbalise == "numbers" else level_word
            parts.append(f"{seg['emotion']}, " + " ".join(f"{d} {fmt(v)}" for d, v in dims))
    return "; ".join(parts)


def serialise_transcript(record: dict[str, Any], verbalise: str = "numbers", only_kept: bool = True,
                         merge: bool = True) -> str:
    """The compact annotated transcript: one line per run of windows with the same labels.

    `[0.0-2.1 s] (female; sad, valence 0.21 arousal 0.30 dominance 0.35) The meeting moved to Friday.`
    With `only_kept`, windows the consistency filter dropped keep their words but lose their emotion labels
    (those labels were judged unreliable); `merge=False` gives one line per window.
    """
    segs = record.get("segments") or []
    words_by_seg: dict[int, list[str]] = {}
    for w in record.get("words") or []:
        words_by_seg.setdefault(w.get("seg"), []).append(w["w"])
    groups: list[list[int]] = []
    for i, s in enumerate(segs):
        key = _label_key(s, verbalise, only_kept)
        if merge and groups and _label_key(segs[groups[-1][-1]], verbalise, only_kept) == key:
            groups[-1].append(i)
        else:
            groups.append([i])
    lines = []
    for g in groups:
        first, last = segs[g[0]], segs[g[-1]]
        view = {**first, **{d: _mean([segs[i].get(d) for i in g]) for d in DIMENSIONS}}
        label = format_labels(view, verbalise, with_emotion=first.get("kept", True) or not only_kept)
        text = " ".join(t for i in g for t in words_by_seg.get(i, [])) or "…"
        lines.append(f"[{first['start_s']:.1f}-{last['end_s']:.1f} s] ({label}) {text}" if label
                     else f"[{first['start_s']:.1f}-{last['end_s']:.1f} s] {text}")
    return "\n".join(lines)


def _label_key(s: dict, verbalise: str, only_kept: bool) -> tuple:
    shown = s.get("kept", True) or not only_kept
    dims = tuple(level_word(s[d]) for d in DIMENSIONS if s.get(d) is not None) if verbalise == "words" else ()
    # Numbers differ window to window: merge on category and gender (the line shows their mean).
    return s.get("gender"), s.get("emotion") if shown else None, shown, dims if shown else ()


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


# --- outputs ---------------------------------------------------------------------------------------------------
def prep_summary(prep: Prepared):
    """Clips per status / reason, with windows per kept clip (what the segmentation step did)."""
    import pandas as pd

    df = pd.DataFrame([{"status": p["status"], "reason": p["reason"] or "", "n_windows": len(p["windows"]),
                        "duration_s": p["duration_s"]} for p in prep.clips.values()])
    return df.groupby(["status", "reason"]).agg(n_clips=("n_windows", "size"), n_windows=("n_windows", "sum"),
                                                audio_s=("duration_s", "sum"))


def example_text(records: Sequence[dict]) -> str:
    """The first kept record (else the first one) as `clip emotion gender` and its annotated transcript."""
    example = next((r for r in records if r["kept"]), records[0])
    return f"{example['clip_id']} {example['dominant_emotion']} {example['gender']}\n{example['annotated_transcript']}"


def write_outputs(stage: runs.Stage, records: Sequence[dict], rejects: Sequence[dict],
                  metrics: dict[str, Any]) -> dict[str, Any]:
    """annotations.jsonl, rejects.jsonl, tab_condensation.csv and metrics.json in the stage folder."""
    runs.write_jsonl(stage.dir / "annotations.jsonl", records)
    runs.write_jsonl(stage.dir / "rejects.jsonl", rejects)
    metrics_lib.condensation_table(records).to_csv(stage.dir / "tab_condensation.csv")
    return stage.write_metrics(**metrics)
