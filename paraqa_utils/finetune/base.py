"""04's base phase: an aligned base Speech-LLM that every condition starts from, as the paper's start from MERaLiON.

Built once per machine into `<cache>/bases/<key>/` (key = sha256 of its inputs and settings: models, read-outs,
knobs, and the train-split examples with their audio's content hashes) and reused by every run with the same key.
The run's `04_finetune/base/` folder shows it: manifest.json (key, inputs, figures, leakage check), the examples it
learnt from, its training curve and figure. `zero_shot` answers with the base as built.

What the base learns from: train-split clips only (the leakage check refuses any clip, speaker or sentence of the dev
or test split), with targets a base model would know: the clip's transcript and its corpus labels (the annotator's
where the corpus has none). Tasks, in our own wording: transcription, a description of who speaks how and what
("A woman, sounding sad, says: ..."), gender and emotion questions.
"""
from __future__ import annotations
from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from paraqa_utils import audio, runs
from paraqa_utils.finetune import base_data, model, readout
from paraqa_utils.finetune.base_store import (FORMAT, MANIFEST, WEIGHTS, BaseError, differing_keys, inputs, intact, key_of,
                                             probe_loss, probe_rows, read_manifest, shown_path, base_tensors)
from paraqa_utils.finetune.config import FinetuneConfig


@dataclasses.dataclass
class BaseInfo:
    path: str  # the folder conditions load (empty: no base)
    key: str
    manifest: dict[str, Any]
    built: bool  # built in this call (else reused)
    notes: list[str]

    def record(self) -> dict[str, Any]:
        m = self.manifest
        return {"path": shown_path(self.path), "key": self.key, "built_now": self.built, "notes": self.notes,
                "probe_loss": (m.get("probe") or {}).get("loss"), "figures": m.get("figures"),
                "leakage": m.get("leakage"), "source": m.get("source", "built")}


def prepare(stage: runs.Stage, cfg: FinetuneConfig) -> BaseInfo:
    """Resolve `cfg.base`: none -> no base; a folder -> checked and used; auto -> reuse the cached base of this key
    or build it. Writes the run's 04_finetune/base/ folder either way (except for none)."""
    if cfg.base.strip().lower() in ("none", ""):
        return BaseInfo("", "", {}, False, ["base: none: every condition starts from the untrained stack"])
    if cfg.released():
        return BaseInfo("", "", {}, False, [f"speech_llm {cfg.speech_llm}: a released audio-LLM hears already; "
                                            "every condition starts from its own weights (no base phase)"])
    clips = {c["clip_id"]: c for c in runs.read_jsonl(stage.input("00_corpus/clips.jsonl"))}
    ann_path = stage.run_dir / "01_annotate" / "annotations.jsonl"
    anns = {a["clip_id"]: a for a in runs.read_jsonl(stage.input("01_annotate/annotations.jsonl"))} if ann_path.exists() else {}
    rows = base_data.examples(clips, anns, cfg.base_max_clips)
    leak = base_data.leakage(rows, clips)
    if not leak["clean"]:
        raise BaseError(f"the base's examples touch the dev/test split: {leak}; refusing to build it")
    if not rows:
        raise BaseError("no train-split clip gives the base an example (no transcripts or labels)")
    classes = base_data.label_classes(clips, anns) if "labels" in readout.parse_readouts(cfg.readouts) else {}
    if "labels" in readout.parse_readouts(cfg.readouts) and not classes:
        raise BaseError("readouts has labels, but the train split has no gender or emotion labels (corpus or 01)")
    run_dir = stage.run_dir
    hashes = {c: audio.content_hash(audio.resolve_audio(run_dir, clips[c]["audio_path"])) for c in {r["clip_id"] for r in rows}}
    ids = {"whisper_model": model.model_identity("whisper", cfg.whisper_model),
           "llm_model": model.model_identity("llm", cfg.llm_model)}
    inp = inputs(cfg, ids, rows, hashes, classes)
    key = key_of(inp)
    show = stage.dir / "base"
    show.mkdir(parents=True, exist_ok=True)
    runs.write_jsonl(show / "base_train.jsonl", rows)
    notes: list[str] = []
    if cfg.base.strip().lower() != "auto":
        folder = Path(cfg.base).expanduser()
        if not (folder / WEIGHTS).exists():
            raise BaseError(f"base={cfg.base}: no {WEIGHTS} there (a base folder holds {WEIGHTS} and {MANIFEST})")
        man = read_manifest(folder)
        if man.get("inputs"):
            diff = differing_keys(man["inputs"], inp)
            if diff:
                raise BaseError(f"base={cfg.base} was built from other settings or another corpus: "
                                + "; ".join(f"{k}: base has {man['inputs'].get(k)!r}, this run {inp.get(k)!r}"
                                            for k in diff[:4]) + " (base: auto builds the base of this run)")
        else:
            notes.append(f"base={cfg.base} has no ParaQA manifest: only its tensor layout is checked")
        man = {**man, "source": "user", "key": man.get("key") or key}
        runs.write_json(show / MANIFEST, {**man, "path": shown_path(str(folder))})
        return BaseInfo(str(folder), man["key"], man, False, notes)
    root = runs.cache_dir() / "bases"
    folder = root / key
    if folder.exists():
        why = intact(folder)
        if why is None:
            man = read_manifest(folder)
            _show(show, folder, man)
            return BaseInfo(str(folder), key, man, False, [f"base {key[:12]} reused from the cache"])
        notes.append(f"cached base {key[:12]} was rebuilt: {why}")
        shutil.rmtree(folder)
    man = build(stage, cfg, rows, clips, anns, inp, key, root / f"{key}.partial", leak)
    (root / f"{key}.partial").replace(folder)
    _show(show, folder, man)
    return BaseInfo(str(folder), key, man, True, notes + [f"base {key[:12]} built in {man['seconds']:.0f} s"])


def _show(show: Path, folder: Path, man: dict[str, Any]) -> None:
    """The run's view of the base: its manifest (with where it lives) and its training curve and figure."""
    runs.write_json(show / MANIFEST, {**man, "path": shown_path(str(folder))})
    for name in ("train_log.jsonl", "fig_base_loss.png"):
        if (folder / name).exists():
            shutil.copyfile(folder / name, show / name)


def build(stage: runs.Stage, cfg: FinetuneConfig, rows: list[dict], clips: dict, anns: dict, inp: dict[str, Any],
          key: str, work: Path, leak: dict[str, Any]) -> dict[str, Any]:
    """Fit the label read-out, then train adapter (+ LoRA) on the base's examples; a killed build resumes from its
    checkpoint in `work`. Returns the manifest (also written to work/)."""
    from safetensors.torch import save_file

    from paraqa_utils.finetune import training
    from paraqa_utils.finetune.speech_data import encode_records, prompt_format

    t0 = time.perf_counter()
    work.mkdir(parents=True, exist_ok=True)
    bcfg = dataclasses.replace(cfg, condition="base", train_file="", base_path="", n_steps=cfg.base_steps,
                               lr=cfg.base_lr, resume=True, resume_from="", run_dir=str(stage.run_dir),
                               out_dir=str(stage.dir))
    if cfg.torch_threads > 0:
        torch.set_num_threads(cfg.torch_threads)
    net, cache, reads, device = model.setup(bcfg, label_classes=inp["label_classes"])
    heads = {}
    if reads.labels is not None:
        train_clips = sorted({r["clip_id"] for r in rows})
        heads = base_data.fit_label_heads(net, cache, clips, anns, stage.run_dir, train_clips, cfg.seed)
    counts: dict[str, Any] = {}
    model.prepare_readouts(reads, cache, rows, stage.run_dir)
    fmt = prompt_format(net.tokenizer, cfg)
    samples = encode_records(rows, fmt, stage.run_dir, cfg.stack_k, False, True, counts, reads)
    if not samples:
        raise BaseError(f"none of the base's {len(rows)} examples is usable ({counts})")
    settings = training.TrainSettings(**{f.name: getattr(bcfg, f.name) for f in dataclasses.fields(training.TrainSettings)})
    log = work / "train_log.jsonl"
    figures = training.train(net, samples, cache, settings, work / "ckpt", log,
                             {"condition": "base", "key": key}, bcfg.to_dict(), device, None, None,
                             progress=cfg.progress)
    probe = [s for s in samples if s.uid in {r["example_id"] for r in probe_rows(rows)}]
    loss = probe_loss(net, probe, cache)
    tensors = base_tensors(net)
    save_file(tensors, str(work / WEIGHTS))
    _plot_loss(log, work / "fig_base_loss.png")
    shutil.rmtree(work / "ckpt", ignore_errors=True)
    man = {"format": FORMAT, "key": key, "inputs": inp, "label_classes": inp["label_classes"],
           "readouts": cfg.readouts, "weights_sha256": runs.sha256_file(work / WEIGHTS),
           "probe": {"example_ids": [s.uid for s in probe], "loss": round(loss, 6)},
           "leakage": leak, "heads": heads, "train": {k: figures.get(k) for k in
                                                     ("steps", "first_loss", "final_loss", "train_seconds",
                                                      "seconds_per_step", "tokens_per_s", "examples_per_s")},
           "n_examples": len(samples), "tasks": _task_counts(rows), "encode": counts,
           "transcripts_decoded": reads.transcripts.n_decoded if reads.transcripts else 0,
           "figures": ["fig_base_loss.png"], "built_utc": runs.utc_now(),
           "seconds": round(time.perf_counter() - t0, 1)}
    runs.write_json(work / MANIFEST, man)
    return man


def _task_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["task"]] = out.get(r["task"], 0) + 1
    return out


def _plot_loss(log: Path, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = list(runs.read_jsonl(log)) if log.exists() else []
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in curve], [r["loss"] for r in curve], marker="o", ms=3)
    ax.set(xlabel="optimizer step", ylabel="answer-token cross-entropy", title="04 base: alignment loss")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
