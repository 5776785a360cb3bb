"""wav2vec2 with a regression head over mean-pooled hidden states: the layout of the MSP-Podcast dimensional
checkpoint the paper uses for valence (audeering/wav2vec2-large-robust-12-ft-emotion-msp-dim).

Our own implementation of that layout: the config's `architectures` names `Wav2Vec2ForSpeechClassification`, the
tensors are `wav2vec2.*` and `classifier.{dense,out_proj}.{weight,bias}` (dense -> tanh -> out_proj on the mean
of the last hidden states), and the output order is the config's `id2label` (arousal, dominance, valence there).
`AutoModelForAudioClassification` would build a different head; this class loads the checkpoint's own.
"""
from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from transformers import Wav2Vec2Model, Wav2Vec2PreTrainedModel

ARCHITECTURE = "Wav2Vec2ForSpeechClassification"
HEAD_TENSORS = ("classifier.dense.weight", "classifier.dense.bias", "classifier.out_proj.weight",
                "classifier.out_proj.bias")


class RegressionHead(nn.Module):
    def __init__(self, hidden: int, n_out: int, dropout: float):
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_proj(self.dropout(torch.tanh(self.dense(self.dropout(x)))))


class Wav2Vec2Regression(Wav2Vec2PreTrainedModel):
    """`model(input_values).logits`: one value per `id2label` entry, from the mean over time of wav2vec2's states."""

    def __init__(self, config: Any):
        super().__init__(config)
        self.wav2vec2 = Wav2Vec2Model(config)
        self.classifier = RegressionHead(config.hidden_size, config.num_labels, float(getattr(config, "final_dropout", 0.0)))
        self.post_init()

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None, **_: Any) -> Any:
        states = self.wav2vec2(input_values, attention_mask=attention_mask).last_hidden_state
        pooled = states.mean(dim=1)
        return SimpleNamespace(logits=self.classifier(pooled), pooled=pooled)


def is_regression_layout(config: Any) -> bool:
    return ARCHITECTURE in (getattr(config, "architectures", None) or [])


def load(src: str) -> tuple[Wav2Vec2Regression, list[str]]:
    """The model and the checkpoint tensors it needed but did not find (the caller refuses a non-empty list)."""
    model, info = Wav2Vec2Regression.from_pretrained(src, output_loading_info=True)
    missing = sorted(k for k in info.get("missing_keys", []) if k != "wav2vec2.masked_spec_embed")
    return model, missing
