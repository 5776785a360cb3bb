"""A tiny random joint-SER checkpoint that ships its own model code (config `auto_map`), as MERaLiON-SER-v1 does:
Whisper log-mel input features, one forward giving `logits` over seven emotions (capitalised names in id2label) and
`dims` (valence, arousal, dominance in [0, 1]). Tests and bench only: its weights are noise by design, except the
`dims` head, which is zero-weighted so its outputs are sigmoid(bias): known values to check the V/A/D order by.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

CARD_EMOTIONS = ("Neutral", "Happy", "Sad", "Angry", "Fearful", "Disgusted", "Surprised")

_CONFIG_PY = '''from transformers import PretrainedConfig


class TinyJointSerConfig(PretrainedConfig):
    model_type = "tiny_joint_ser"

    def __init__(self, n_mels=80, hidden=16, **kwargs):
        self.n_mels = n_mels
        self.hidden = hidden
        super().__init__(**kwargs)
'''

_MODEL_PY = '''import torch
from torch import nn
from transformers import PreTrainedModel

from .configuration_tiny_joint_ser import TinyJointSerConfig

CALLS = {"forward": 0}  # tests count forward passes through this


class TinyJointSerModel(PreTrainedModel):
    config_class = TinyJointSerConfig
    main_input_name = "input_features"

    def __init__(self, config):
        super().__init__(config)
        self.encoder = nn.Conv1d(config.n_mels, config.hidden, 3, padding=1)
        self.emotion_head = nn.Linear(config.hidden, config.num_labels)
        self.dims_head = nn.Linear(config.hidden, 3)
        self.post_init()

    def forward(self, input_features, attention_mask=None, **kwargs):
        CALLS["forward"] += 1
        h = torch.relu(self.encoder(input_features)).mean(dim=-1)
        return {"logits": self.emotion_head(h), "dims": torch.sigmoid(self.dims_head(h))}
'''


def save_tiny_joint_ser(path: Path, dims_bias: tuple[float, float, float] = (1.0, -1.0, 0.0), seed: int = 0,
                        drop_head: bool = False) -> Path:
    """Write config.json (with auto_map), the two code files, model.safetensors and a Whisper preprocessor config.
    drop_head leaves out the `dims_head` tensors (a checkpoint whose head would load at random)."""
    from safetensors.torch import save_file
    from transformers import WhisperFeatureExtractor

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / "configuration_tiny_joint_ser.py").write_text(_CONFIG_PY)
    (path / "modeling_tiny_joint_ser.py").write_text(_MODEL_PY)
    config = dict(model_type="tiny_joint_ser", architectures=["TinyJointSerModel"], n_mels=80, hidden=16,
                  auto_map={"AutoConfig": "configuration_tiny_joint_ser.TinyJointSerConfig",
                            "AutoModelForAudioClassification": "modeling_tiny_joint_ser.TinyJointSerModel"},
                  id2label={str(i): n for i, n in enumerate(CARD_EMOTIONS)},
                  label2id={n: i for i, n in enumerate(CARD_EMOTIONS)})
    (path / "config.json").write_text(json.dumps(config, indent=2))
    g = torch.Generator().manual_seed(seed)
    tensors = {"encoder.weight": torch.randn(16, 80, 3, generator=g) * 0.1, "encoder.bias": torch.zeros(16),
               "emotion_head.weight": torch.randn(len(CARD_EMOTIONS), 16, generator=g),
               "emotion_head.bias": torch.randn(len(CARD_EMOTIONS), generator=g)}
    if not drop_head:
        tensors.update({"dims_head.weight": torch.zeros(3, 16), "dims_head.bias": torch.tensor(dims_bias)})
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    WhisperFeatureExtractor(feature_size=80).save_pretrained(path)
    return path
