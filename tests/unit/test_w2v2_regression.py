"""The wav2vec2 regression-head layout (MSP-Podcast dimensional checkpoint): a tiny random checkpoint saved with
that config and those tensor names, written by hand (not by our class), loads through HfAudioModel."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from paraqa_utils.annotate import recognisers, w2v2_regression

ORDER = ["arousal", "dominance", "valence"]  # the checkpoint's id2label order


def save_layout(path, head_names=("classifier.dense", "classifier.out_proj"), bias=(0.2, 0.5, 0.8), zero_out=True):
    """config.json (architectures Wav2Vec2ForSpeechClassification), model.safetensors, preprocessor_config.json."""
    from safetensors.torch import save_file
    from transformers import Wav2Vec2Config, Wav2Vec2FeatureExtractor, Wav2Vec2Model

    conf = Wav2Vec2Config(vocab_size=8, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                          intermediate_size=16, conv_dim=(16,) * 4, conv_kernel=(10, 3, 3, 3), conv_stride=(5, 4, 4, 4),
                          num_conv_pos_embeddings=8, num_conv_pos_embedding_groups=2, final_dropout=0.1,
                          num_labels=3, id2label=dict(enumerate(ORDER)), label2id={v: k for k, v in enumerate(ORDER)},
                          architectures=[w2v2_regression.ARCHITECTURE])
    torch.manual_seed(0)
    body = Wav2Vec2Model(conf)
    tensors = {f"wav2vec2.{k}": v.contiguous() for k, v in body.state_dict().items()}
    g = torch.Generator().manual_seed(1)
    dense, out = head_names
    tensors[f"{dense}.weight"] = torch.randn(16, 16, generator=g) * 0.3
    tensors[f"{dense}.bias"] = torch.randn(16, generator=g) * 0.1
    tensors[f"{out}.weight"] = torch.zeros(3, 16) if zero_out else torch.randn(3, 16, generator=g) * 0.05
    tensors[f"{out}.bias"] = torch.tensor(bias)
    path.mkdir(parents=True)
    save_file(tensors, str(path / "model.safetensors"), metadata={"format": "pt"})
    conf.save_pretrained(path)
    Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True,
                             return_attention_mask=True).save_pretrained(path)
    return body, tensors


def test_the_checkpoints_outputs_land_on_valence_arousal_dominance_by_id2label(tmp_path):
    save_layout(tmp_path / "dim")
    m = recognisers.HfAudioModel(str(tmp_path / "dim"), "dimensional")
    assert type(m.model).__name__ == "Wav2Vec2Regression" and m.labels == ORDER
    rows, confs = m.predict([np.random.default_rng(0).normal(0, 0.1, 16000).astype(np.float32)])
    # out_proj is zero, so the outputs are its bias (arousal 0.2, dominance 0.5, valence 0.8), reordered to V/A/D
    assert rows[0] == pytest.approx([0.8, 0.2, 0.5], abs=1e-6) and confs == [None]


def test_the_forward_is_dense_tanh_out_proj_on_mean_pooled_states(tmp_path):
    body, t = save_layout(tmp_path / "dim", zero_out=False)
    m = recognisers.HfAudioModel(str(tmp_path / "dim"), "dimensional")
    x = np.random.default_rng(1).normal(0, 0.1, 8000).astype(np.float32)
    inputs = m.extractor(x, sampling_rate=16000, return_tensors="pt")
    with torch.no_grad():
        got = m.model(inputs["input_values"]).logits[0]
        pooled = body.eval()(inputs["input_values"]).last_hidden_state.mean(dim=1)[0]
        want = torch.tanh(pooled @ t["classifier.dense.weight"].T + t["classifier.dense.bias"]) @ \
            t["classifier.out_proj.weight"].T + t["classifier.out_proj.bias"]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(want, t["classifier.out_proj.bias"])  # the head's weights take part


def test_a_checkpoint_whose_head_names_differ_is_refused_naming_the_missing_tensors(tmp_path):
    save_layout(tmp_path / "odd", head_names=("head.fc", "head.out"))
    with pytest.raises(recognisers.RecogniserError, match=r"classifier\.dense\.bias.*classifier\.out_proj"):
        recognisers.HfAudioModel(str(tmp_path / "odd"), "dimensional")


def test_outputs_that_are_not_vad_need_a_label_map(tmp_path):
    save_layout(tmp_path / "dim")
    conf = json.loads((tmp_path / "dim" / "config.json").read_text())
    conf["id2label"] = {"0": "act", "1": "dom", "2": "val"}
    (tmp_path / "dim" / "config.json").write_text(json.dumps(conf))
    with pytest.raises(recognisers.LabelMapError, match="act"):
        recognisers.HfAudioModel(str(tmp_path / "dim"), "dimensional")
    ok = recognisers.HfAudioModel(str(tmp_path / "dim"), "dimensional", {"act": "arousal", "dom": "dominance",
                                                                          "val": "valence"})
    assert ok.labels == ORDER
