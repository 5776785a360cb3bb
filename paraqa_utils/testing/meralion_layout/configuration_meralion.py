"""Config of a MERaLiON-AudioLLM-layout checkpoint (ours, for offline tests): it reproduces the field names and
nesting of the public checkpoint's config.json (a Whisper `speech_config`, a Gemma2 `text_config`, the adapter's
scale factor and the speech placeholder id), not its code. Shipped next to config.json as remote code."""
from transformers import Gemma2Config, PretrainedConfig, WhisperConfig

# text_config values the public config repeats at its top level
MIRRORED_TEXT_FIELDS = ("hidden_size", "num_attention_heads", "num_hidden_layers", "num_key_value_heads", "head_dim",
                        "intermediate_size", "sliding_window")


def _as_config(value, config_class):
    if isinstance(value, PretrainedConfig):
        return value
    value = dict(value or {})
    value.pop("model_type", None)
    return config_class(**value)


class MERaLiONConfig(PretrainedConfig):
    """speech_config: the Whisper encoder's config; text_config: the Gemma2 decoder's; speech_mlp_scale_factor:
    encoder frames stacked per speech embedding (1500 / 15 = 100 per 30 s); speech_token_index: the placeholder id."""

    model_type = "meralion"
    sub_configs = {"speech_config": WhisperConfig, "text_config": Gemma2Config}

    def __init__(self, speech_config=None, text_config=None, speech_mlp_scale_factor=15, speech_token_index=255999,
                 speech_mlp_use_projection=True, **kwargs):
        self.speech_config = _as_config(speech_config, WhisperConfig)
        self.text_config = _as_config(text_config, Gemma2Config)
        self.speech_mlp_scale_factor = speech_mlp_scale_factor
        self.speech_token_index = speech_token_index
        self.speech_mlp_use_projection = speech_mlp_use_projection
        for name in MIRRORED_TEXT_FIELDS:
            kwargs.pop(name, None)  # always taken from text_config, so the two cannot disagree
            setattr(self, name, getattr(self.text_config, name))
        super().__init__(**kwargs)
