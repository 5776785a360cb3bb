"""bench/gpu_check.py's model-FLOPs count (what its MFU divides by) agrees with torch's own FLOP counter."""
import importlib.util
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from paraqa_utils.audio import SAMPLE_RATE_HZ

GPU_CHECK = Path(__file__).resolve().parents[2] / "bench" / "gpu_check.py"


@pytest.fixture(scope="module")
def gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", GPU_CHECK)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("train_lora", [True, False])
def test_model_flops_match_torchs_flop_counter(gpu_check, one_torch_thread, train_lora):
    cpu = torch.device("cpu")
    # eager encoder attention: torch's counter does not see the fused CPU attention kernel
    model, enc_cfg, llm_cfg = gpu_check.build(True, cpu, torch.float32, 16, False, encoder_attn="eager")
    if not train_lora:  # the paper's setting: adapter only
        for name, p in model.named_parameters():
            if "lora_" in name:
                p.requires_grad_(False)
    bs, n_audio, t_text, n_answer = 2, 20, 60, 12
    tensors, waves = gpu_check.batch(bs, llm_cfg.vocab_size, n_audio, t_text, n_answer, cpu)
    enc = model.audio_encoder
    feats = enc.feature_extractor(waves, sampling_rate=SAMPLE_RATE_HZ, padding=False,
                                  return_tensors="pt").input_features  # the log-mel front end is not model FLOPs
    counter = FlopCounterMode(display=False)
    with counter:
        states = list(enc._encode_features(feats))
        loss, n = model(audio_states=states, **tensors)
        (loss / n).backward()
    measured = counter.get_total_flops()
    counted = gpu_check.model_flops(model, enc_cfg, llm_cfg, bs, t_text, n_audio, n_answer)
    # what remains is biases and norm weights, which the 2*N*T rule counts as if they were matmul weights
    assert counted == pytest.approx(measured, rel=0.01), (counted, measured)
    without_attention = counted - bs * 4 * enc_cfg.encoder_layers * (n_audio * 15) ** 2 * enc_cfg.d_model
    assert abs(without_attention - measured) > 0.05 * measured  # the attention terms matter at these shapes


@pytest.mark.parametrize("shape", ["qwen2-audio-7b", "meralion-2-10b"])
def test_released_shapes_train_through_04s_parts_in_the_check(gpu_check, one_torch_thread, tmp_path, shape):
    """--speech-llm at tiny width: the released class built from config, taken apart as 04 does, one LoRA step."""
    import json

    out = tmp_path / "gpu_check.json"
    assert gpu_check.main(["--tiny", "--speech-llm", shape, "--batch-sizes", "1", "--steps", "1", "--warmup", "0",
                           "--json", str(out)]) == 0
    res = json.loads(out.read_text())
    (row,) = res["rows"]
    assert res["speech_llm"] == shape and res["audio_tokens"] == (750 if shape.startswith("qwen") else 100)
    assert row["final_loss"] > 0 and row["model_tflops_per_step"] > 0 and row["step_s"] > 0
