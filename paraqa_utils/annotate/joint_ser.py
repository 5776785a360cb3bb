"""A checkpoint that ships its own model code (config `auto_map`) and answers emotion and V/A/D in one forward pass,
as MERaLiON-SER-v1 does (its card: seven emotions, and valence, arousal, dominance in [0, 1]; its code returns
`logits` and `dims`). Running another party's code is the user's explicit choice: 01's `trust_remote_code`.

One model serves both tasks: `emotion_backends` and `dimensional_backends` may name the same `hf:` checkpoint,
and each window is scored once (the labels of both tasks are cached together per clip).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from paraqa_utils.annotate.recognisers import RecogniserError, map_labels
from paraqa_utils.text import DIMENSIONS

# The order of `dims` on MERaLiON-SER-v1's card (valence, arousal, dominance); a config may state its own.
CARD_DIMS_ORDER = ("valence", "arousal", "dominance")
DIMS_ORDER_KEYS = ("dims_labels", "dim_labels", "dimension_labels")


def config_dict(src: str) -> dict[str, Any]:
    """The checkpoint's config.json as a dict, without running any of its code."""
    from transformers import PretrainedConfig

    try:
        return PretrainedConfig.get_config_dict(src)[0]
    except Exception as exc:
        raise RecogniserError(f"could not read the config of checkpoint '{src}': {type(exc).__name__}: {exc}") from None


def ships_code(config: dict[str, Any]) -> bool:
    return bool(config.get("auto_map"))


def refuse_untrusted(spec: str, config: dict[str, Any]) -> None:
    code = sorted({str(v).split(".")[0] + ".py" for v in config["auto_map"].values()})
    raise RecogniserError(
        f"checkpoint '{spec}' ships its own model code ({', '.join(code)}); 01 runs it only when you set "
        "trust_remote_code: true (read that code first: it runs with your permissions)")


class JointSER:
    """Loads a remote-code audio-classification checkpoint; predict() gives emotion and, when the model returns
    `dims`, V/A/D for the same windows."""

    def __init__(self, spec: str, src: str, config: dict[str, Any], label_map: dict[str, str] | None = None,
                 cpu_threads: int = 1, device: str = "cpu"):
        import torch
        from transformers import AutoFeatureExtractor, AutoModelForAudioClassification

        torch.set_num_threads(max(1, cpu_threads))
        try:
            self.extractor = AutoFeatureExtractor.from_pretrained(src, trust_remote_code=True)
            self.model, info = AutoModelForAudioClassification.from_pretrained(src, trust_remote_code=True,
                                                                               output_loading_info=True)
        except Exception as exc:
            raise RecogniserError(f"could not load checkpoint '{spec}' with its own code: "
                                  f"{type(exc).__name__}: {exc}") from None
        missing = sorted(info.get("missing_keys") or [])
        if missing:
            raise RecogniserError(f"checkpoint '{spec}' lacks the tensors {missing[:6]}"
                                  f"{' ...' if len(missing) > 6 else ''} ({len(missing)} missing in all): those "
                                  "layers would be random")
        self.model.to(device).eval()
        self.spec, self.device = spec, device
        names = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
        self.emotion_labels = map_labels(names, "emotion", label_map, source=f"checkpoint '{spec}'")
        order = next((config[k] for k in DIMS_ORDER_KEYS if config.get(k)), CARD_DIMS_ORDER)
        self.dims_order = [str(d).lower() for d in order]
        if sorted(self.dims_order) != sorted(DIMENSIONS):
            raise RecogniserError(f"checkpoint '{spec}' names its dims {list(order)}; expected valence, arousal and "
                                  "dominance in some order")
        self.has_dims: bool | None = None  # known after the first forward pass

    @property
    def sample_rate_hz(self) -> int:
        return int(getattr(self.extractor, "sampling_rate", 16000))

    def provenance(self) -> dict[str, Any]:
        return dict(emotion_labels=self.emotion_labels, dims_order=self.dims_order, remote_code=True,
                    model_class=type(self.model).__name__)

    def predict(self, excerpts: Sequence[np.ndarray]) -> dict[str, list]:
        """{"emotion": [labels], "emotion_conf": [p], "dimensional": [[v, a, d] | None]}, one forward per excerpt."""
        import torch

        out: dict[str, list] = {"emotion": [], "emotion_conf": [], "dimensional": []}
        for x in excerpts:
            inputs = self.extractor(x, sampling_rate=self.sample_rate_hz, return_tensors="pt")
            inputs = {k: v.to(self.device) for k, v in inputs.items() if k in ("input_features", "input_values",
                                                                                 "attention_mask")}
            with torch.no_grad():
                res = self.model(**inputs)
            logits = _field(res, "logits")[0].float().cpu().numpy()
            dims = _field(res, "dims")
            self.has_dims = dims is not None
            p = np.exp(logits - logits.max())
            p /= p.sum()
            ours: Counter = Counter()
            for lab, pi in zip(self.emotion_labels, p):
                ours[lab] += float(pi)
            best = max(ours, key=ours.get)
            out["emotion"].append(best)
            out["emotion_conf"].append(round(ours[best], 4))
            if dims is None:
                out["dimensional"].append(None)
                continue
            vals = dict(zip(self.dims_order, dims[0].float().cpu().numpy().tolist()))
            out["dimensional"].append([round(min(1.0, max(0.0, vals[d])), 4) for d in DIMENSIONS])
        return out


def _field(res: Any, name: str) -> Any:
    if isinstance(res, dict) or hasattr(res, "keys"):
        return res.get(name) if hasattr(res, "get") else (res[name] if name in res else None)
    return getattr(res, name, None)


def local_or_hub(spec: str) -> str:
    p = Path(spec).expanduser()
    if spec.startswith(("/", "./", "../", "~")) and not p.exists():
        raise RecogniserError(f"model path does not exist: {spec}")
    return str(p.resolve()) if p.exists() else spec
