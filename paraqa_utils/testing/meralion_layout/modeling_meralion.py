"""Model of a MERaLiON-AudioLLM-layout checkpoint (ours, for offline tests): it reproduces the public checkpoint's
module tree, so its tensor names (`speech_encoder.*`, `ln_speech.*`, `speech_audio_adapter.*`, `text_decoder.*`),
and the way speech embeddings replace the placeholder tokens. Shipped next to config.json as remote code.

Path: input_features (n_chunks, n_mels, 3000) -> Whisper encoder (n_chunks, 1500, d_model) -> LayerNorm -> adapter
(n_chunks, 100, text hidden) -> flattened in chunk order into the rows where input_ids == speech_token_index ->
Gemma2 decoder on inputs_embeds. `generate` is GenerationMixin's own: it returns the prompt ids followed by the new
ones, and the audio is merged on the prefill step only (later steps read the cache)."""
import torch
from torch import nn
from transformers import Gemma2ForCausalLM, GenerationMixin, PreTrainedModel
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from .configuration_meralion import MERaLiONConfig


class MERaLiONSpeechAudioAdapter(nn.Module):
    """Stacks `scale` encoder frames into one vector, then an MLP (gated when use_projection) to the text width."""

    def __init__(self, d_model, text_hidden, scale, use_projection=True):
        super().__init__()
        self.scale = scale
        self.use_projection = use_projection
        width = d_model * 5
        self.mlp_adapter = nn.Sequential(nn.Linear(d_model * scale, width), nn.SiLU())
        if use_projection:
            self.gate_proj = nn.Linear(width, width)
            self.pool_proj = nn.Linear(width, width)
            self.act_fn = nn.SiLU()
        self.out_proj = nn.Linear(width, text_hidden)

    def forward(self, speech_embeds):
        batch, frames, channels = speech_embeds.shape
        x = speech_embeds.reshape(batch, frames // self.scale, channels * self.scale)
        x = self.mlp_adapter(x)
        if self.use_projection:
            x = self.act_fn(self.gate_proj(x)) * self.pool_proj(x)
        return self.out_proj(x)


class MERaLiONPreTrainedModel(PreTrainedModel):
    config_class = MERaLiONConfig
    base_model_prefix = ""
    supports_gradient_checkpointing = True
    _no_split_modules = ["WhisperEncoderLayer", "Gemma2DecoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True


class MERaLiONForConditionalGeneration(MERaLiONPreTrainedModel, GenerationMixin):
    """Whisper encoder + frame-stacking adapter + Gemma2 causal LM, as the public checkpoint names them."""

    def __init__(self, config):
        super().__init__(config)
        d_model = config.speech_config.d_model
        self.speech_encoder = WhisperEncoder(config.speech_config)
        self.ln_speech = nn.LayerNorm(d_model)
        self.speech_audio_adapter = MERaLiONSpeechAudioAdapter(
            d_model, config.text_config.hidden_size, config.speech_mlp_scale_factor,
            config.speech_mlp_use_projection)
        self.text_decoder = Gemma2ForCausalLM(config.text_config)
        self.post_init()

    def get_input_embeddings(self):
        return self.text_decoder.get_input_embeddings()

    def set_input_embeddings(self, value):
        self.text_decoder.set_input_embeddings(value)

    def get_output_embeddings(self):
        return self.text_decoder.get_output_embeddings()

    def set_output_embeddings(self, value):
        self.text_decoder.set_output_embeddings(value)

    def get_decoder(self):
        return self.text_decoder

    def encode_speech(self, input_features):
        """(n_chunks, n_mels, 3000) log-mel chunks -> (n_chunks * 100, text hidden) speech embeddings, chunk order."""
        encoder = self.speech_encoder
        states = encoder(input_features.to(encoder.conv1.weight.dtype)).last_hidden_state
        embeds = self.speech_audio_adapter(self.ln_speech(states))
        return embeds.reshape(-1, embeds.shape[-1])

    def merge_speech(self, input_ids, inputs_embeds, input_features):
        """inputs_embeds with the rows at the placeholder tokens replaced, in order, by the speech embeddings.

        The checkpoints were trained under transformers 4, whose Gemma-2 scaled every input embedding by
        sqrt(hidden), speech included; transformers 5 scales inside the embedding layer, so speech is scaled here."""
        scale = getattr(self.text_decoder.get_input_embeddings(), "scalar_embed_scale", 1.0)
        speech = (self.encode_speech(input_features) * scale).to(inputs_embeds.dtype)
        slots = input_ids == self.config.speech_token_index
        if int(slots.sum()) != speech.shape[0]:
            raise ValueError(f"{int(slots.sum())} speech placeholder tokens in input_ids, but the audio gives "
                             f"{speech.shape[0]} speech embeddings ({input_features.shape[0]} chunks)")
        mask = slots.unsqueeze(-1).expand_as(inputs_embeds).to(inputs_embeds.device)
        return inputs_embeds.masked_scatter(mask, speech.to(inputs_embeds.device))

    def forward(self, input_ids=None, attention_mask=None, input_features=None, feature_attention_mask=None,
                position_ids=None, inputs_embeds=None, labels=None, use_cache=None, **kwargs):
        """feature_attention_mask is accepted and unused: the encoder reads every 30 s chunk in full."""
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)
            if input_features is not None:
                inputs_embeds = self.merge_speech(input_ids, inputs_embeds, input_features)
        return self.text_decoder(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                 position_ids=position_ids, labels=labels, use_cache=use_cache, **kwargs)

    def prepare_inputs_for_generation(self, *args, input_features=None, feature_attention_mask=None, **kwargs):
        """The audio goes in with the prompt only (the prefill step, or every step when there is no cache)."""
        model_inputs = super().prepare_inputs_for_generation(*args, **kwargs)
        first = kwargs.get("is_first_iteration")
        if first is None:
            cache = kwargs.get("cache", kwargs.get("past_key_values"))
            first = cache is None or cache.get_seq_length() == 0
        if first or not kwargs.get("use_cache", True):
            model_inputs["input_features"] = input_features
            model_inputs["feature_attention_mask"] = feature_attention_mask
        return model_inputs
