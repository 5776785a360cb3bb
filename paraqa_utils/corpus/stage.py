"""Stage 00's steps as the notebook calls them: build or load the corpus, count it, plot it, show examples."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from paraqa_utils import runs
from paraqa_utils.corpus import loaders, tts
from paraqa_utils.corpus.manifest import pick_examples
from paraqa_utils.corpus.synthetic import SCRIPTS_FILE, CorpusConfig, build_synthetic


def build(stage: runs.Stage, cfg: CorpusConfig, progress: bool = True) -> tuple[list[dict], list[dict], float]:
    """Synthesise the embedded corpus (recording the TTS engines, voices and scripts as the stage's model) or load
    the real corpus `cfg.source`; returns (clips, rejects, wall seconds)."""
    t0 = time.perf_counter()
    if cfg.synthetic:
        stage.record_model("tts", "espeak-ng+flite", versions=tts.engine_versions(), voices=str(tts.VOICES_FILE.name),
                           voices_sha256=runs.sha256_file(tts.VOICES_FILE), scripts=SCRIPTS_FILE.name,
                           scripts_sha256=runs.sha256_file(SCRIPTS_FILE))
        clips, rejects = build_synthetic(stage.dir, cfg, progress=progress)
    else:
        clips, rejects = loaders.load(cfg.source, cfg.corpus_path, stage.dir, seed=cfg.seed, n_clips=cfg.n_clips,
                                      sample_rate_hz=cfg.sample_rate_hz, progress=progress, dev_share=cfg.dev_share,
                                      test_share=cfg.test_share, dim_min=cfg.manifest_dim_min,
                                      dim_max=cfg.manifest_dim_max)
    return clips, rejects, round(time.perf_counter() - t0, 2)


def count_table(segments):
    """Segments per (split, gender) and emotion, with totals (tab_counts.csv)."""
    import pandas as pd

    return pd.crosstab([segments["split"], segments["gender"].fillna("?")], segments["emotion"].fillna("none"),
                       margins=True)


def clips_per_split(clips: list[dict]) -> dict[str, int]:
    import pandas as pd

    return pd.Series([c["split"] for c in clips]).value_counts().to_dict()


def plot_f0_rms(features, path: Path | None = None):
    """Median F0 against level per labelled segment, coloured by emotion (fig_f0_rms.png)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    plt.figure(figsize=(6.5, 4.5))
    ax = sns.scatterplot(data=features.dropna(subset=["emotion"]), x="f0_median_hz", y="rms_db", hue="emotion",
                         style="gender", s=18, alpha=0.7)
    ax.set(title="F0 vs level per segment", xlabel="median F0 (Hz)", ylabel="level (dBFS)")
    if path:
        ax.figure.savefig(path, dpi=120, bbox_inches="tight")
    return ax.figure


def plot_valence_arousal(segments, path: Path | None = None):
    """The valence/arousal labels of every segment that has both (fig_valence_arousal.png)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    plt.figure(figsize=(5, 4.5))
    ax = sns.scatterplot(data=segments.dropna(subset=["valence", "arousal"]), x="valence", y="arousal",
                         hue="emotion", s=18, alpha=0.7)
    ax.set(xlim=(0, 1), ylim=(0, 1), title="valence / arousal labels (0..1)")
    if path:
        ax.figure.savefig(path, dpi=120, bbox_inches="tight")
    return ax.figure


def show_examples(run_dir: Path, clips: list[dict[str, Any]], n: int = 2) -> list[dict[str, Any]]:
    """Display `n` example clips (see pick_examples): id, split, duration, their segments and a player."""
    import pandas as pd
    from IPython.display import Audio, display

    examples = pick_examples(clips, n=n)
    for clip in examples:
        print(clip["clip_id"], clip["split"], f"{clip['duration_s']} s")
        display(pd.DataFrame(clip["segments"]).drop(columns=["tts"], errors="ignore"))
        display(Audio(filename=str(Path(run_dir) / clip["audio_path"])))
    return examples
