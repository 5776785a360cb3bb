"""The 04_finetune notebook's glue: read 03's files, plan one config per condition, merge predictions, metrics."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

from paraqa_utils import runs
from paraqa_utils.finetune.condition import run_condition
from paraqa_utils.finetune.launch import Launch
from paraqa_utils.finetune.workers import run_subprocess
from paraqa_utils.finetune.training import NonFiniteLoss
from paraqa_utils.finetune.config import ZERO_SHOT, ConfigError, FinetuneConfig
from paraqa_utils.finetune import base
from paraqa_utils.finetune.base import BaseInfo

UPSTREAM = "03_explicit_merge"
# What metrics.json keeps per condition (06_analysis and the smoke test read these).
SUMMARY_KEYS = ("failed", "steps", "n_train_examples", "final_loss", "mean_loss", "first_loss", "seconds_per_step",
                "examples_per_s", "tokens_per_s", "train_seconds", "n_predictions", "predict_seconds",
                "encoder_cache_hits", "encoder_cache_misses", "encoder_cache_hit_rate", "base", "train_n_missing_audio",
                "train_n_truncated", "train_n_skipped_too_long", "test_n_missing_audio", "test_n_truncated",
                "n_trainable_params", "seconds", "world_size", "launch")


def check_upstream(stage: runs.Stage) -> None:
    """A stage that would run without doing its work fails the run: 03 must be done and have written
    conditions.json (a placeholder 03, or one that wrote no conditions, leaves 04 nothing to train)."""
    rec_path = stage.run_dir / UPSTREAM / runs.STAGE_FILE
    rec = runs.read_json(rec_path) if rec_path.exists() else {}
    if not rec.get("implemented", True) or "conditions.json" not in rec.get("outputs", {}):
        raise ConfigError(f"{UPSTREAM} in {stage.run_dir} recorded no conditions.json (status "
                          f"{rec.get('status', 'not run')!r}, implemented {rec.get('implemented')}): nothing to train; "
                          f"run it first: python -m paraqa_utils.pipeline --resume {stage.run_dir.name} --only {UPSTREAM}")


def upstream_test_files(stage: runs.Stage) -> dict[str, str]:
    """Every test_<set>.jsonl that 03 recorded (cpqa_ref, cpqa_llm, emotion, gender, cpqa_human...), hash-checked."""
    outputs = runs.read_json(stage.run_dir / UPSTREAM / runs.STAGE_FILE).get("outputs", {})
    names = sorted(n for n in outputs if n.startswith("test_") and n.endswith(".jsonl") and "/" not in n)
    return {n[len("test_"):-len(".jsonl")]: str(stage.input(f"{UPSTREAM}/{n}")) for n in names}


def plan(stage: runs.Stage, base: FinetuneConfig, conditions: str = "all",
         zero_shot: bool = True) -> dict[str, FinetuneConfig]:
    """One config per condition (from 03's conditions.json), plus the untrained zero_shot floor first."""
    check_upstream(stage)
    available = runs.read_json(stage.input(f"{UPSTREAM}/conditions.json"))
    wanted = list(available) if conditions.strip() == "all" else [c.strip() for c in conditions.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in available]
    if unknown:
        raise ConfigError(f"conditions {unknown} are not in {UPSTREAM}/conditions.json (it has {list(available)})")
    tests = upstream_test_files(stage)
    common = dict(test_files=tests, run_dir=str(stage.run_dir), out_dir=str(stage.dir))
    out: dict[str, FinetuneConfig] = {}
    if zero_shot:
        out[ZERO_SHOT] = dataclasses.replace(base, condition=ZERO_SHOT, train_file="", explicit=False, **common)
    for c in wanted:
        spec = available[c]
        out[c] = dataclasses.replace(base, condition=c, explicit=bool(spec["explicit"]), **common,
                                     train_file=str(stage.input(f"{UPSTREAM}/{spec['train_file']}")))
    return out


def prepare_base(stage: runs.Stage, settings: FinetuneConfig) -> BaseInfo:
    """The aligned base every condition starts from (built once per machine, reused; see finetune.base)."""
    return base.prepare(stage, settings)


def start_from(configs: dict[str, FinetuneConfig], aligned: BaseInfo) -> dict[str, FinetuneConfig]:
    """Every planned condition starts from the base's weights; zero_shot is the base as built."""
    return {c: dataclasses.replace(cfg, base_path=aligned.path) for c, cfg in configs.items()}


def base_table(aligned: BaseInfo) -> pd.DataFrame:
    """One row: where the base lives, its key, how it was made, its leakage check and final figures."""
    m = aligned.manifest
    train, leak = m.get("train") or {}, m.get("leakage") or {}
    return pd.DataFrame([{"base": aligned.record()["path"] or "(none)", "key": aligned.key[:12],
                          "built now": aligned.built, "examples": m.get("n_examples"), "steps": train.get("steps"),
                          "first loss": train.get("first_loss"), "final loss": train.get("final_loss"),
                          "probe loss": (m.get("probe") or {}).get("loss"),
                          "head train acc": (m.get("heads") or {}).get("train_accuracy"),
                          "held-out clips/speakers/sentences": (leak.get("n_held_out_clips"),
                                                                leak.get("n_held_out_speakers"),
                                                                leak.get("n_held_out_sentences")) if leak else None,
                          "notes": "; ".join(aligned.notes)}])


def plan_table(configs: dict[str, FinetuneConfig]) -> pd.DataFrame:
    return pd.DataFrame([{"condition": c, "train_file": Path(cfg.train_file).name or "(none: untrained)",
                          "explicit labels in prompts": cfg.explicit, "test sets": ", ".join(cfg.test_files)}
                         for c, cfg in configs.items()])


def loss_curves(stage: runs.Stage, configs: dict[str, FinetuneConfig]) -> pd.DataFrame:
    """All conditions' train_log.jsonl rows, with a condition column."""
    rows = [{"condition": c, **r} for c in configs if (stage.dir / c / "train_log.jsonl").exists()
            for r in runs.read_jsonl(stage.dir / c / "train_log.jsonl")]
    return pd.DataFrame(rows, columns=["condition", "step", "loss", "lr", "seconds"] if not rows else None)


def plot_loss_curves(curves: pd.DataFrame, path: Path) -> Any:
    """fig_loss.png: training loss per optimizer step, one line per condition."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    fig, ax = plt.subplots(figsize=(7, 4))
    if len(curves):
        sns.lineplot(data=curves, x="step", y="loss", hue="condition", marker="o", ax=ax)
    ax.set(xlabel="optimizer step", ylabel="answer-token cross-entropy", title="04_finetune: training loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return fig


def merge_predictions(stage: runs.Stage, configs: dict[str, FinetuneConfig], extra: Any = ()) -> pd.DataFrame:
    """All conditions' answers in one predictions.jsonl (what 05_judge reads), zero_shot first, then the
    external models named in `extra`."""
    preds = [r for c in [*configs, *extra] if (stage.dir / c / "predictions.jsonl").exists()
             for r in runs.read_jsonl(stage.dir / c / "predictions.jsonl")]
    runs.write_jsonl(stage.dir / "predictions.jsonl", preds)
    return pd.DataFrame(preds)


def finish(stage: runs.Stage, configs: dict[str, FinetuneConfig], summaries: dict[str, dict[str, Any]],
           launch: Launch | None = None, external: dict[str, Any] | None = None,
           aligned: BaseInfo | None = None) -> pd.DataFrame:
    """Write metrics.json (per-condition figures) and mark the stage done; returns the per-condition table."""
    if not configs:
        raise ConfigError("no condition was planned (conditions empty and zero_shot false): nothing to do")
    if not (stage.dir / "predictions.jsonl").exists():
        merge_predictions(stage, configs, external or {})
    preds = list(runs.read_jsonl(stage.dir / "predictions.jsonl"))
    finished = [s for s in summaries.values() if "failed" not in s]
    if not finished:
        raise NonFiniteLoss("every condition failed: " + "; ".join(s["failed"] for s in summaries.values()))
    first = finished[0]
    stage.record_model("speech_encoder", first["whisper_model"])
    stage.record_model("speech_llm", first["llm_model"], train_mode=first["train_mode"])
    per_cond = {c: {k: s.get(k) for k in SUMMARY_KEYS} for c, s in summaries.items()}
    counts = pd.Series([p["condition"] for p in preds]).value_counts().to_dict() if preds else {}
    stage.write_metrics(
        implemented=True, conditions=per_cond, n_conditions=len(configs), n_predictions=len(preds),
        predictions_per_condition=counts, zero_shot=ZERO_SHOT in configs,
        test_sets=sorted({p["test_set"] for p in preds}), train_mode=first["train_mode"],
        device=first["device"], dtype=first["dtype"], whisper_model=first["whisper_model"],
        llm_model=first["llm_model"], launch=(launch or Launch("inprocess")).describe(),
        external_models=external or {}, base=aligned.record() if aligned and aligned.path else None,
        config={k: v for k, v in first["config"].items()
                                              if k not in ("condition", "train_file", "explicit", "test_files")})
    stage.finish()
    return pd.DataFrame(per_cond).T


def run_plan(configs: dict[str, FinetuneConfig], launch: Launch | None = None) -> dict[str, dict[str, Any]]:
    """Train (none for zero_shot) and predict every planned condition in turn: in this process, or (torchrun,
    accelerate) in worker processes that stream their output here; any other worker failure fails the stage.

    A condition whose loss turns NaN/inf stops there, with the step and example ids in its `failed` entry; the
    others still run, and the stage records the failure as a finding (06's verdict reports it).
    """
    launch = launch or Launch("inprocess")
    out: dict[str, dict[str, Any]] = {}
    if launch.device == "cuda" and configs:
        from paraqa_utils.finetune.memory import check_fits

        check_fits(launch.apply(next(iter(configs.values()))), launch)
    for condition, cfg in configs.items():
        cfg = launch.apply(cfg)
        try:
            out[condition] = run_condition(cfg) if launch.launcher == "inprocess" else run_subprocess(cfg, launch)
        except NonFiniteLoss as exc:
            out[condition] = {"failed": f"{type(exc).__name__}: {exc}", "condition": condition}
    return out


def summary_table(summaries: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per condition: steps, losses, speed, predictions, encoder-cache hit rate, seconds."""
    cols = ["steps", "final_loss", "mean_loss", "seconds_per_step", "examples_per_s", "n_predictions",
            "encoder_cache_hit_rate", "seconds"]
    return pd.DataFrame(summaries).T.reindex(columns=cols)


def prediction_counts(preds: pd.DataFrame) -> pd.DataFrame:
    """Answers per condition and test set (an empty table when nothing was predicted)."""
    if not len(preds):
        return pd.DataFrame()
    return preds.groupby(["condition", "test_set"]).size().unstack(fill_value=0)


def prediction_examples(preds: pd.DataFrame, n: int = 2) -> pd.DataFrame:
    """The first n answers of each condition, with the prompt they answered."""
    cols = ["condition", "test_set", "prompt", "answer", "n_tokens"]
    return preds.groupby("condition").head(n)[cols] if len(preds) else pd.DataFrame(columns=cols)
