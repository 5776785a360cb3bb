"""The Speech-LLM of one config, ready to train or answer: frozen parts, adapter, read-outs, LoRA, the base's weights."""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import torch

from paraqa_utils import assets, audio, runs
from paraqa_utils.finetune import base_store, distributed, label_readout, readout, speech_llm
from paraqa_utils.finetune.config import ConfigError, FinetuneConfig
from paraqa_utils.finetune.speech_data import EncoderCache, encode_records, prompt_format


def _seed_all(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


READOUT_WEIGHTS = "readout.safetensors"  # the label read-out of a condition folder (heads + standardisation)
READOUT_CLASSES = "readout.json"


def model_identity(role: str, spec: str) -> str:
    """A model as a base's key names it: the embedded ones by name (their path is this machine's), others as given."""
    return f"embedded:{role}" if (spec or "").strip() in assets.EMBEDDED else spec


def build_model(cfg: FinetuneConfig, device: torch.device, dtype: torch.dtype,
                sharded: bool = False, label_classes: dict[str, list[str]] | None = None) -> speech_llm.SpeechLLM:
    """Frozen encoder + LLM (+ LoRA) + read-outs; the adapter is initialised from the seed, so every condition starts
    equal (then from the base's weights, when there is one: load_base).

    `sharded` (FSDP): the LLM stays in host memory; fully_shard then moves it to the GPUs one block at a time.
    `label_classes`: the label read-out's classes (the base's manifest has them; the base build passes them).
    """
    if cfg.released():  # a released audio-LLM: its own encoder, projector and language model (released.py)
        from paraqa_utils.finetune import released

        return released.build(cfg, torch.device("cpu") if sharded else device, dtype)
    labels = "labels" in readout.parse_readouts(cfg.readouts)
    # on a CPU the frozen encoder stays float32 whatever the LLM's dtype: it runs once per clip (cached), and its
    # states, transcripts and label heads are then the same on every CPU
    enc_dtype = torch.float32 if device.type == "cpu" else dtype
    encoder = speech_llm.load_audio_encoder(cfg.whisper_model, cfg.stack_k, device, enc_dtype, cfg.seed, tap=labels)
    lora = cfg.train_mode == "adapter+lora"
    llm, tok, llm_id = speech_llm.load_llm(cfg.llm_model, torch.device("cpu") if sharded else device, dtype,
                                           cfg.seed, reuse=not lora)
    _seed_all(cfg.seed)
    if lora:
        llm = speech_llm.apply_lora(llm, cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.target_modules())
    if cfg.gradient_checkpointing:
        llm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    elif getattr(llm, "is_activation_checkpointing", None) or (
            not hasattr(llm, "is_activation_checkpointing") and getattr(llm, "is_gradient_checkpointing", False)):
        llm.gradient_checkpointing_disable()  # a reused LLM keeps the previous condition's setting otherwise
    heads = None
    if labels:
        if label_classes is None:
            label_classes = (base_store.read_manifest(Path(cfg.base_path)).get("label_classes") if cfg.base_path else None)
        if not label_classes:
            raise ConfigError("readouts has labels, whose heads are fitted by the base phase: set base: auto "
                              "(or a base folder whose manifest names its label_classes), or drop labels from readouts")
        base_llm = llm.get_base_model() if hasattr(llm, "get_base_model") else llm
        words = {f: label_readout.word_embeddings(base_llm, tok, c) for f, c in label_classes.items()}
        heads = label_readout.LabelReadout(2 * encoder.dim, label_classes, words).to(device)
    model = speech_llm.SpeechLLM(encoder, llm, tok, cfg.stack_k, cfg.adapter_hidden, heads)
    model.adapter.to(device)  # float32 even when the frozen parts are bf16 (autocast handles the matmuls)
    model.llm_id = llm_id
    return model


def setup(cfg: FinetuneConfig, info: distributed.DistInfo = distributed.DistInfo(),
          label_classes: dict[str, list[str]] | None = None
          ) -> tuple[speech_llm.SpeechLLM, EncoderCache, readout.Readouts, torch.device]:
    """The model, its encoder cache and read-outs on this process's device."""
    device = distributed.device_for(info, speech_llm.resolve_device(cfg.device))
    dtype = speech_llm.resolve_dtype(cfg.dtype, device)
    if device.type == "cpu":
        # LoRA's B starts at zero and Adam's second moments of its gradients are tiny: denormal floats slow the
        # optimizer's and the backward's elementwise ops many times over on x86 (measured: 2.74 against 3.05 s/step)
        torch.set_flush_denormal(True)
    model = build_model(cfg, device, dtype, sharded=cfg.fsdp and info.world > 1, label_classes=label_classes)
    n_extra = model.label_readout.n_tokens if model.label_readout is not None else 0
    cache = EncoderCache(model.audio_encoder, Path(cfg.out_dir) / "_cache" / "encoder", cfg.use_encoder_cache,
                         n_extra_tokens=n_extra)
    names = readout.parse_readouts(cfg.readouts)
    transcripts = None
    if "transcript" in names:
        whisper = model.audio_encoder.whisper
        if whisper is None or not hasattr(whisper, "model"):
            raise readout.ReadoutError("readouts has transcript, but the Whisper checkpoint has no decoder")
        transcripts = readout.TranscriptCache(readout.WhisperTranscriber(whisper, model.audio_encoder.model_id),
                                              runs.cache_dir() / "transcripts")  # per machine: runs share clips
    return model, cache, readout.Readouts(names, model.tokenizer, transcripts, model.label_readout), device


def prepare_readouts(reads: readout.Readouts, cache: EncoderCache, records: list[dict[str, Any]],
                     run_dir: Path) -> None:
    """Transcribe (once, cached) every clip these records point to that has readable audio."""
    if reads.transcripts is None:
        return
    pairs = {}
    for rec in records:
        path = audio.resolve_audio(run_dir, rec["audio_path"])
        if path.is_file() and path not in pairs:
            pairs[path] = audio.content_hash(path)
    ok = []
    for path, key in pairs.items():
        try:
            audio.n_samples(path)
        except (RuntimeError, audio.AudioError):  # encode_records counts it as missing audio
            continue
        ok.append((key, path))
    reads.prepare(ok, cache.states_for)


def load_base(model: speech_llm.SpeechLLM, cfg: FinetuneConfig, cache: EncoderCache, reads: readout.Readouts
              ) -> dict[str, Any]:
    """Load the base's weights and measure its probe loss: the condition must start exactly where the base ended."""
    man = base_store.load_into(model, Path(cfg.base_path))
    out: dict[str, Any] = {"key": man.get("key"), "path": base_store.shown_path(cfg.base_path), "source": man.get("source", "built")}
    probe = man.get("probe") or {}
    rows_path = Path(cfg.out_dir) / "base" / "base_train.jsonl"
    if probe.get("example_ids") and rows_path.exists():
        want = set(probe["example_ids"])
        rows = [r for r in runs.read_jsonl(rows_path) if r["example_id"] in want]
        prepare_readouts(reads, cache, rows, Path(cfg.run_dir))
        fmt = prompt_format(model, cfg)
        samples = encode_records(rows, fmt, Path(cfg.run_dir), cfg.stack_k, False, True, {}, reads)
        if len(samples) == len(want):
            start = base_store.probe_loss(model, samples, cache)
            rel = abs(start - probe["loss"]) / max(abs(probe["loss"]), 1e-8)
            out.update(probe_loss_base=probe["loss"], probe_loss_start=round(start, 6), probe_rel_diff=rel)
            if rel > base_store.PROBE_TOLERANCE:
                raise base_store.BaseError(f"{cfg.condition} does not start from the base: its probe loss is {start:.6f}, "
                                     f"the base ended at {probe['loss']:.6f} (relative difference {rel:.2e})")
    return out
