"""Stage 02's steps as the notebook calls them: prompts, the generator's client, the filters, tables to show."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

from paraqa_utils import runs, text
from paraqa_utils.llm import LLMClient
from paraqa_utils.llm.server import llm_endpoint
from paraqa_utils.params import check_types
from paraqa_utils.prompts import path as prompt_path
from paraqa_utils.synthesize.filters import FilterConfig, examples, run_filters
from paraqa_utils.synthesize.generation import SynthesizeConfig, build_requests, load_prompt
from paraqa_utils.synthesize.small import load_small_prompt


@dataclass
class LLMSettings:
    """The generator's endpoint and client: each field a parameter of 02_synthesize.ipynb, no default here."""
    llm_base_url: str  # empty: the embedded llama.cpp server on loopback; comma-separated URLs are replicas
    llm_model: str
    llm_api_key_env: str  # the name of the environment variable holding the key, never the key
    llm_concurrency: int
    llm_rpm: float
    llm_tpm: float
    llm_timeout_s: float
    llm_max_retries: int
    llm_max_invalid_retries: int
    llm_response_format: str
    llm_server_threads: int  # 0: the embedded server's default
    llm_cache_dir: str  # empty: the stage's _cache/llm
    llm_price_usd_per_1m_tokens: dict

    def __post_init__(self) -> None:
        problems = check_types(self)
        if problems:
            raise ValueError("LLM settings:\n  - " + "\n  - ".join(problems))


def generator_info(endpoint: Any, client: LLMClient) -> dict[str, Any]:
    """Provenance of the generator for stage.json: endpoint(s), limits, and the GGUF hash when embedded."""
    info = {k: v for k, v in client.describe().items() if k != "model"}
    info["embedded"] = bool(getattr(endpoint, "embedded", False))
    if info["embedded"]:
        from paraqa_utils.assets import SMOLLM2_GGUF
        info["sha256"] = next(iter(SMOLLM2_GGUF.sha256.values()))
    return info


@contextlib.contextmanager
def llm_client(stage: runs.Stage, settings: LLMSettings, progress: bool = True) -> Iterator[LLMClient]:
    """The generator's client for the block: the user's endpoint, or the embedded server while the block runs.
    Afterwards the generator (model, endpoint, limits) is recorded in the stage."""
    cache_dir = Path(settings.llm_cache_dir) if settings.llm_cache_dir else stage.cache / "llm"
    with llm_endpoint(settings.llm_base_url, settings.llm_model, stage.dir / "logs",
                      api_key_env=settings.llm_api_key_env, n_threads=settings.llm_server_threads or None) as endpoint:
        client = LLMClient(
            [endpoint], cache_dir=cache_dir, ledger_name=stage.name, concurrency=settings.llm_concurrency,
            rpm=settings.llm_rpm, tpm=settings.llm_tpm, timeout_s=settings.llm_timeout_s,
            max_retries=settings.llm_max_retries, max_invalid_retries=settings.llm_max_invalid_retries,
            price_table=settings.llm_price_usd_per_1m_tokens, response_format=settings.llm_response_format,
            progress=progress)
        yield client
    stage.record_model("generator", client.model, **generator_info(endpoint, client))


def load_prompts(stage: runs.Stage, cfg: SynthesizeConfig, filter_cfg: FilterConfig) -> dict[str, Any]:
    """The prompt of each kind asked for under the resolved profile; every prompt file the stage uses is recorded
    with its hash."""
    files = {kind: cfg.prompt_files[kind] for kind in cfg.kinds}
    for name in [*set(files.values()), filter_cfg.forbidden_references, filter_cfg.label_words]:
        stage.record_prompt(prompt_path(name))
    load = load_small_prompt if cfg.prompt_profile == "small" else load_prompt
    return {kind: load(name) for kind, name in files.items()}


def clip_preview(clips: Sequence[dict[str, Any]], n: int = 5):
    """The first clips asked about: split, dominant emotion, segments and words."""
    import pandas as pd

    return pd.DataFrame([{"clip_id": a["clip_id"], "split": a.get("split"), "dominant_emotion": a.get("dominant_emotion"),
                          "n_segments": len(a["segments"]), "n_words": len(a["words"])} for a in clips]).head(n)


def example_prompt(clips: Sequence[dict[str, Any]], cfg: SynthesizeConfig, prompts: dict[str, Any]) -> str:
    """The profile and the user message of the first clip's first request, as sent."""
    reqs = build_requests(clips[0], cfg.kinds[0], prompts[cfg.kinds[0]], cfg)[0] if clips else []
    if not reqs:
        return "no clips to ask about"
    return f"[prompt_profile: {cfg.prompt_profile}]\n" + reqs[0].messages[-1]["content"]


def filter_qas(stage: runs.Stage, qas: list[dict], clips: Sequence[dict], cfg: FilterConfig,
               embed: text.Embed | None = None) -> tuple[list[dict], list[dict], list[dict]]:
    """run_filters with the configured sentence encoder (recorded in the stage); (kept, rejects, funnel)."""
    out = run_filters(qas, {a["clip_id"]: a for a in clips}, cfg, embed or text.minilm_embedder(cfg.embedder))
    stage.record_model("embedder", cfg.embedder or "all-MiniLM-L6-v2 (embedded)")
    return out


def as_table(data: Any):
    """Rows (a list of dicts) as a DataFrame, a mapping as a Series: for display."""
    import pandas as pd

    return pd.Series(data) if isinstance(data, dict) else pd.DataFrame(list(data))


def examples_table(kept: Sequence[dict], n_per_type: int):
    """The first surviving QA of each kind and type, with room for whole questions and answers."""
    import pandas as pd

    pd.set_option("display.max_colwidth", 200)
    return pd.DataFrame(examples(kept, n_per_type))


def summary(n_written: dict[str, int], metrics: dict[str, Any]):
    """Lines written per file and the share of requested pairs kept, per kind."""
    return as_table({**n_written, "kept_of_requested": {k: v["kept_of_requested"]
                                                        for k, v in metrics["survival"].items()}})
