"""Stage 04 (notebooks/04_finetune): the Speech-LLM, its training loop and predictions."""
from paraqa_utils.finetune.config import DTYPES, TRAIN_MODES, ZERO_SHOT, ConfigError, FinetuneConfig, load_config, make_config, save_config  # noqa: F401
from paraqa_utils.finetune.speech_data import EncoderCache, PromptFormat, collate, encode_records  # noqa: F401
from paraqa_utils.finetune.condition import USAGE, build_model, fingerprint, save_weights, predict, run_condition, main  # noqa: F401
