"""Will the Speech-LLM fit? Weight memory per GPU, counted from the checkpoints' configs (no weights loaded),
against the GPUs' free memory, before any worker starts: a clear error with the numbers instead of an OOM later."""
from __future__ import annotations

import math

from paraqa_utils.finetune.config import FinetuneConfig
from paraqa_utils.finetune.launch import Launch, LaunchError

HEADROOM = 0.8  # weights may take at most this share of a GPU's free memory: activations, LoRA, optimizer
BYTES = {"bfloat16": 2, "float16": 2, "float32": 4, "auto": 2}  # auto is bf16 on GPUs


class ModelTooLarge(LaunchError):
    """The weights alone would not fit the GPUs as configured; the message gives the numbers and the way out."""


def param_count(model_id: str, kind: str) -> int | None:
    """Parameters of a hub id or folder, built on the meta device from its config; None for the embedded default
    (small) or a config that cannot be read here."""
    if not model_id:
        return None
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

    try:
        conf = AutoConfig.from_pretrained(model_id)
    except (OSError, ValueError):
        return None
    with init_empty_weights():
        model = (AutoModelForCausalLM if kind == "llm" else AutoModel).from_config(conf)
    part = model.get_encoder() if kind == "encoder" and hasattr(model, "get_encoder") else model
    n = sum(p.numel() for p in part.parameters())
    out, inp = part.get_output_embeddings(), part.get_input_embeddings()
    tied = getattr(conf.get_text_config(), "tie_word_embeddings", False)
    if kind == "llm" and tied and out is not None and out.weight is not inp.weight:
        n -= out.weight.numel()  # the meta model leaves them untied; the loaded one stores them once
    return n


def released_param_count(spec: str, trust_remote_code: bool = False) -> tuple[int, int] | None:
    """(language model, encoder + projector) parameters of a released audio-LLM (speech_llm: hf:...), built on
    the meta device from its config; None when its config cannot be read or its class is not one 04 trains."""
    import transformers
    from accelerate import init_empty_weights
    from transformers import AutoModel

    from paraqa_utils.finetune import released

    try:
        arch, fam, conf = released.family_of(spec, trust_remote_code)
    except released.ReleasedModelError:
        return None
    cls = getattr(transformers, arch, None) or AutoModel
    with init_empty_weights():
        model = cls.from_config(conf, trust_remote_code=trust_remote_code) if cls is AutoModel else cls._from_config(conf)
    seen: set[int] = set()

    def count(*modules: torch.nn.Module) -> int:  # tied weights (Gemma's head) stored once
        n = 0
        for m in modules:
            for p in m.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    n += p.numel()
        return n

    if getattr(conf.get_text_config(), "tie_word_embeddings", False):  # the meta model leaves them untied
        head = released.part(model, fam.lm_head) if fam.lm_head else released.part(model, fam.language_model).lm_head
        seen.add(id(head.weight))
    lm = count(*(released.part(model, path) for path in (fam.language_model, fam.lm_head) if path))
    return lm, count(model)


def weight_gib_per_gpu(llm_params: int, encoder_params: int, bytes_per_param: int, world: int, fsdp: bool) -> float:
    """FSDP shards the LLM over the processes; the frozen encoder stays whole on every GPU."""
    llm = llm_params * bytes_per_param / (world if fsdp and world > 1 else 1)
    return (llm + encoder_params * bytes_per_param) / 2**30


def problem(llm_params: int, encoder_params: int, bytes_per_param: int, world: int, fsdp: bool,
            free_gib: float) -> str | None:
    """The message when the weights need more than HEADROOM of the smallest GPU's free memory, else None."""
    need = weight_gib_per_gpu(llm_params, encoder_params, bytes_per_param, world, fsdp)
    if need <= HEADROOM * free_gib:
        return None
    enc = encoder_params * bytes_per_param / 2**30
    room = HEADROOM * free_gib - enc
    shards = math.ceil(llm_params * bytes_per_param / 2**30 / room) if room > 0 else None
    fix = (f"set fsdp=true with n_processes >= {shards} (the LLM sharded {shards} ways; or a ZeRO-3 "
           "deepspeed_config)" if shards
           else "the encoder alone does not fit: use a smaller encoder or a larger GPU")
    return (f"the weights need {need:.1f} GiB per GPU ({llm_params / 1e9:.2f} B LLM + {encoder_params / 1e9:.2f} B "
            f"encoder parameters x {bytes_per_param} bytes{', LLM sharded ' + str(world) + ' ways' if fsdp and world > 1 else ''}"
            f"), more than {HEADROOM:.0%} of the {free_gib:.1f} GiB free on the smallest GPU: {fix}")


def check_fits(cfg: FinetuneConfig, launch: Launch) -> None:
    """Refuse before launching when the configured models cannot fit the visible GPUs."""
    import torch

    if not torch.cuda.is_available():
        return
    if cfg.released():
        llm, enc = released_param_count(cfg.speech_llm, cfg.trust_remote_code) or (None, None)
    else:
        llm, enc = param_count(cfg.llm_model, "llm"), param_count(cfg.whisper_model, "encoder")
    if llm is None:
        return
    free = min(torch.cuda.mem_get_info(i)[0] for i in range(torch.cuda.device_count())) / 2**30
    from paraqa_utils.finetune import zero

    shards = cfg.fsdp or (bool(cfg.deepspeed_config) and zero.stage_of(zero.read(cfg.deepspeed_config)) == 3)
    msg = problem(llm, enc or 0, BYTES.get(cfg.dtype, 2), launch.world, shards, free)
    if msg:
        raise ModelTooLarge(f"{cfg.condition}: {msg}")
