"""Stage 00's embedded corpus: synthetic emotional speech, planned from the seed and rendered in parallel."""
from __future__ import annotations

import csv
import hashlib
import json
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import soundfile as sf
from paraqa_utils.progress import tqdm

from paraqa_utils import runs
from paraqa_utils.params import check_types
from paraqa_utils.corpus import tts
from paraqa_utils.corpus.manifest import SPLITS, CorpusError

SCRIPTS_FILE = tts.DATA_DIR / "scripts_v1.tsv"
N_UTTERANCE_WEIGHTS = (0.25, 0.35, 0.25, 0.15)  # clips of 1..4 utterances [decided]


@dataclass(frozen=True)
class CorpusConfig:
    """Every knob of stage 00, each a parameter of 00_corpus.ipynb of the same name and with no default here:
    its one default is the notebook's parameters cell (build it with `stage.config(CorpusConfig, globals())`
    or `params.stage_config(CorpusConfig, "00_corpus", {...})`)."""
    source: str  # synthetic, or a real corpus (see loaders.LOADERS)
    corpus_path: str
    n_clips: int
    seed: int
    n_workers: int
    sample_rate_hz: int
    min_clip_s: float
    max_clip_s: float
    max_utterances_per_clip: int
    two_speaker_share: float
    emotion_change_share: float
    congruent_share: float
    incongruent_share: float
    prosody_jitter: float
    vad_jitter_sd: float
    clip_gain_sd_db: float
    pause_min_s: float
    pause_max_s: float
    dev_share: float
    test_share: float
    manifest_dim_min: float
    manifest_dim_max: float
    max_reject_share: float
    n_measure_clips: int

    def __post_init__(self) -> None:
        problems = check_types(self)
        if problems:  # the value checks below assume the right types
            raise CorpusError("invalid corpus settings: " + "; ".join(problems))
        if not self.synthetic:  # a real corpus: its loader checks what it needs (n_clips 0 = all clips)
            return
        shares = ("two_speaker_share", "emotion_change_share", "congruent_share", "incongruent_share",
                  "dev_share", "test_share")
        checks = [(self.n_clips >= 3, f"n_clips={self.n_clips}: need at least 3 (one per split)"),
                  (1 <= self.max_utterances_per_clip <= 4, "max_utterances_per_clip must be 1..4"),
                  (0 < self.min_clip_s < self.max_clip_s, "need 0 < min_clip_s < max_clip_s"),
                  (0 <= self.pause_min_s <= self.pause_max_s, "need 0 <= pause_min_s <= pause_max_s"),
                  (all(0 <= getattr(self, n) <= 1 for n in shares), f"{', '.join(shares)} must lie within 0..1"),
                  (self.congruent_share + self.incongruent_share <= 1, "congruent + incongruent share > 1"),
                  (self.dev_share + self.test_share < 1, "dev + test share must leave room for train"),
                  (self.n_workers >= 1 and min(self.prosody_jitter, self.vad_jitter_sd, self.clip_gain_sd_db) >= 0,
                   "need n_workers >= 1 and prosody_jitter, vad_jitter_sd, clip_gain_sd_db >= 0")]
        problems = [msg for ok, msg in checks if not ok]
        if problems:
            raise CorpusError("invalid corpus settings: " + "; ".join(problems))

    @property
    def synthetic(self) -> bool:
        """The embedded corpus (synthesised here), as opposed to a real one loaded from disk."""
        return self.source == "synthetic"

    def clips_to_measure(self, clips: list[dict]) -> list[dict]:
        """The clips whose acoustics are measured: the first n_measure_clips, or all when it is 0."""
        return clips[:self.n_measure_clips] if self.n_measure_clips > 0 else clips


def load_scripts(path: Path = SCRIPTS_FILE) -> pd.DataFrame:
    """The sentence bank: sentence_id, text_emotion (none = words carry no emotion), text."""
    with open(path) as f:
        return pd.DataFrame(csv.DictReader((ln for ln in f if not ln.startswith("#")), delimiter="\t"))


def split_scripts(scripts: pd.DataFrame, seed: int, dev_share: float, test_share: float) -> dict[str, str]:
    """sentence_id -> split, stratified by text_emotion so every split gets emotional sentences of each kind."""
    rng = np.random.default_rng([seed, 17])
    out: dict[str, str] = {}
    for _, group in scripts.groupby("text_emotion", sort=True):
        ids = list(rng.permutation(group["sentence_id"].to_numpy()))
        n_dev, n_test = max(1, round(len(ids) * dev_share)), max(1, round(len(ids) * test_share))
        for i, sid in enumerate(ids):
            out[str(sid)] = "dev" if i < n_dev else "test" if i < n_dev + n_test else "train"
    return out


def _pick_sentence(pools: dict[str, pd.DataFrame], emotion: str, cfg: CorpusConfig,
                   rng: np.random.Generator) -> tuple[pd.Series, str]:
    u = rng.random()
    if u < cfg.congruent_share and emotion != "neutral":
        pool, congruence = pools[emotion], "congruent"
    elif u < cfg.congruent_share + cfg.incongruent_share:
        others = [e for e in tts.EMOTIONS if e not in ("neutral", emotion)]
        pool, congruence = pools[str(rng.choice(others))], "incongruent"
    else:
        pool, congruence = pools["none"], "ambiguous"
    return pool.iloc[int(rng.integers(len(pool)))], congruence


def _plan_clip(clip_id: str, split: str, first: str, voices: list[tts.Voice], pools: dict[str, pd.DataFrame],
               cfg: CorpusConfig, rng: np.random.Generator) -> dict[str, Any]:
    weights = np.array(N_UTTERANCE_WEIGHTS[: cfg.max_utterances_per_clip])
    n_utt = int(rng.choice(len(weights), p=weights / weights.sum())) + 1
    n_spk = 2 if n_utt > 1 and rng.random() < cfg.two_speaker_share else 1
    speakers = [voices[j] for j in rng.choice(len(voices), size=n_spk, replace=False)]
    order = [0]  # who speaks each utterance: turns alternate more often than not
    for _ in range(n_utt - 1):
        order.append(1 - order[-1] if n_spk == 2 and rng.random() < 0.7 else order[-1])
    if n_spk == 2 and 1 not in order:
        order[-1] = 1
    current: dict[int, str] = {0: first}  # each speaker's emotion, which may change between utterances
    utterances = []
    for k, s in enumerate(order):
        if s not in current:
            current[s] = str(rng.choice(tts.EMOTIONS))
        elif k > 0 and rng.random() < cfg.emotion_change_share:
            current[s] = str(rng.choice([e for e in tts.EMOTIONS if e != current[s]]))
        row, congruence = _pick_sentence(pools, current[s], cfg, rng)
        pros, vad = tts.draw_prosody(current[s], rng, len(row["text"].split()), cfg.prosody_jitter, cfg.vad_jitter_sd)
        utterances.append(dict(
            voice_id=speakers[s].voice_id, emotion=current[s], valence=round(vad[0], 4), arousal=round(vad[1], 4),
            dominance=round(vad[2], 4), sentence_id=str(row["sentence_id"]), text=str(row["text"]),
            text_emotion=str(row["text_emotion"]), congruence=congruence, prosody=tts.prosody_dict(pros),
            gap_after_s=round(float(rng.uniform(cfg.pause_min_s, cfg.pause_max_s)), 3)))
    # A whole-clip gain stands for microphone distance and recording level: absolute loudness alone must
    # not give the emotion away, while level differences inside a clip still do.
    return dict(clip_id=clip_id, split=split, noise_seed=int(rng.integers(2**31)), utterances=utterances,
                lead_s=round(float(rng.uniform(0.1, 0.4)), 3), tail_s=round(float(rng.uniform(0.1, 0.4)), 3),
                gain_db=round(float(rng.normal(0, cfg.clip_gain_sd_db)), 2))


def plan_corpus(cfg: CorpusConfig, voices: list[tts.Voice] | None = None,
                scripts: pd.DataFrame | None = None) -> list[dict[str, Any]]:
    """Every random choice of the corpus, made up front from the seed: rendering is then a pure function."""
    voices = voices or tts.load_voices()
    scripts = load_scripts() if scripts is None else scripts
    rng = np.random.default_rng(cfg.seed)
    in_split = scripts["sentence_id"].map(split_scripts(scripts, cfg.seed, cfg.dev_share, cfg.test_share))
    pools = {s: dict(list(scripts[in_split == s].groupby("text_emotion"))) for s in SPLITS}
    n_dev, n_test = max(1, round(cfg.n_clips * cfg.dev_share)), max(1, round(cfg.n_clips * cfg.test_share))
    splits = rng.permutation(["dev"] * n_dev + ["test"] * n_test + ["train"] * (cfg.n_clips - n_dev - n_test))
    # A clip's first emotion cycles through the classes so that even a smoke-size corpus is balanced.
    counters = {s: int(rng.integers(len(tts.EMOTIONS))) for s in SPLITS}
    plans = []
    for i, split in enumerate(map(str, splits)):
        first = tts.EMOTIONS[counters[split] % len(tts.EMOTIONS)]
        counters[split] += 1
        plans.append(_plan_clip(f"c{i:05d}", split, first, [v for v in voices if v.split == split], pools[split],
                                cfg, rng))
    return plans


def _plan_sha(plan: dict[str, Any], cfg: CorpusConfig) -> str:
    key = dict(plan=plan, sr=cfg.sample_rate_hz, min=cfg.min_clip_s, max=cfg.max_clip_s)
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()


def render_clip(plan: dict[str, Any], stage_dir: Path, cfg: CorpusConfig) -> dict[str, Any]:
    """Synthesise one clip (the unit of work and of failure) and return its manifest record; cached by plan hash."""
    stage_dir = Path(stage_dir)
    wav = stage_dir / "audio" / f"{plan['clip_id']}.wav"
    cached = stage_dir / "_cache" / "synth" / f"{plan['clip_id']}.json"
    sha = _plan_sha(plan, cfg)
    if wav.exists() and cached.exists():
        hit = json.loads(cached.read_text())
        if hit.get("plan_sha") == sha:
            return hit["record"]
    sr = cfg.sample_rate_hz
    voices = {v.voice_id: v for v in tts.load_voices()}
    rng = np.random.default_rng(plan["noise_seed"])
    pieces, segments, t = [np.zeros(int(plan["lead_s"] * sr), np.float32)], [], plan["lead_s"]
    for k, u in enumerate(plan["utterances"]):
        v = voices[u["voice_id"]]
        y = tts.synthesize(u["text"], v, tts.Prosody(**u["prosody"]), sr, phase=float(rng.uniform(0, 2 * np.pi)))
        dur = len(y) / sr
        gap = int(plan["utterances"][k - 1]["gap_after_s"] * sr) / sr if k > 0 else 0.0
        # A clip never exceeds max_clip_s: later utterances are dropped (the first is always kept).
        if k > 0 and t + gap + dur + plan["tail_s"] > cfg.max_clip_s:
            break
        pieces.append(np.zeros(int(round(gap * sr)), np.float32))
        t += gap
        pieces.append(y)
        segments.append(dict(start_s=round(t, 3), end_s=round(t + dur, 3), speaker=v.voice_id, gender=v.gender,
                             emotion=u["emotion"], valence=u["valence"], arousal=u["arousal"],
                             dominance=u["dominance"], text=u["text"], congruence=u["congruence"],
                             sentence_id=u["sentence_id"], text_emotion=u["text_emotion"],
                             tts=dict(engine=v.engine, voice=v.voice, **u["prosody"])))
        t += len(y) / sr
    tail = max(plan["tail_s"], cfg.min_clip_s - t)  # short clips are padded with trailing silence
    audio = np.concatenate(pieces + [np.zeros(int(tail * sr), np.float32)]) * 10 ** (plan["gain_db"] / 20)
    audio = tts.soft_limit(audio + rng.normal(0, 10 ** (-65 / 20), len(audio)))  # a faint noise floor
    wav.parent.mkdir(parents=True, exist_ok=True)
    sf.write(wav, audio, sr, subtype="PCM_16")
    rec = dict(clip_id=plan["clip_id"], audio_path=f"{stage_dir.name}/audio/{wav.name}",
               duration_s=round(len(audio) / sr, 3), sample_rate_hz=sr, split=plan["split"], source="synthetic",
               has_emotion_labels=True, n_speakers=len({s["speaker"] for s in segments}), segments=segments)
    runs.write_json(cached, dict(plan_sha=sha, record=rec))
    return rec


def _render_safe(args: tuple[dict[str, Any], Path, CorpusConfig]) -> dict[str, Any]:
    plan, stage_dir, cfg = args
    try:
        return render_clip(plan, stage_dir, cfg)
    except tts.TTSEngineMissing:
        raise
    except Exception as exc:  # one broken clip is a recorded reject, not a failed stage
        return dict(clip_id=plan["clip_id"], reject=f"synthesis failed: {type(exc).__name__}: {exc}")


def build_synthetic(stage_dir: Path, cfg: CorpusConfig, progress: bool = True) -> tuple[list[dict], list[dict]]:
    """Plan and render the whole corpus with cfg.n_workers processes; returns (clips, rejects)."""
    voices = tts.load_voices()
    for engine in sorted({v.engine for v in voices}) + (["sox"] if any(v.engine == "flite" and v.base_pitch <= 0
                                                                       for v in voices) else []):
        tts.require_engine(engine)  # fail before any work, naming the apt package
    plans = plan_corpus(cfg, voices)
    jobs = [(p, Path(stage_dir), cfg) for p in plans]
    bar = dict(total=len(jobs), desc="synthesising clips", unit="clip", disable=not progress)
    if cfg.n_workers == 1:
        results = [_render_safe(j) for j in tqdm(jobs, **bar)]
    else:
        with ProcessPoolExecutor(cfg.n_workers) as pool:
            results = list(tqdm(pool.map(_render_safe, jobs, chunksize=1), **bar))
    clips = [r for r in results if "reject" not in r]
    rejects = [dict(source="synthetic", item=r["clip_id"], reason=r["reject"]) for r in results if "reject" in r]
    return clips, rejects


