"""Processor of a MERaLiON-AudioLLM-layout checkpoint (ours, for offline tests): it reproduces the public checkpoint's
processor behaviour. Each clip is cut into 30 s chunks (at least one, at most time_duration_limit // 30), each chunk
becomes a 3000-frame Whisper log-mel, and the one speech placeholder in its text becomes fixed_speech_embeds_length
placeholders per chunk. Shipped next to processor_config.json as remote code."""
import numpy as np
from transformers import BatchFeature, ProcessorMixin


class MERaLiONProcessor(ProcessorMixin):
    """feature_extractor: a WhisperFeatureExtractor; tokenizer: the decoder's tokenizer, with the placeholder token
    at speech_token_index among its added tokens."""

    attributes = ["feature_extractor", "tokenizer"]

    def __init__(self, feature_extractor=None, tokenizer=None, fixed_speech_embeds_length=100,
                 speech_token_index=255999, time_duration_limit=30, whisper_chunk_size=30, do_normalize=True,
                 chat_template=None):
        self.fixed_speech_embeds_length = fixed_speech_embeds_length
        self.speech_token_index = speech_token_index
        self.time_duration_limit = time_duration_limit
        self.whisper_chunk_size = whisper_chunk_size
        self.do_normalize = do_normalize
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template)
        self.speech_token = self.tokenizer.added_tokens_decoder[speech_token_index].content
        self.feature_chunk_size = whisper_chunk_size * self.feature_extractor.sampling_rate

    def chunks(self, audio):
        """A clip's 30 s pieces, the last one shorter; at least one, at most time_duration_limit // 30."""
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        limit = max(1, self.time_duration_limit // self.whisper_chunk_size)
        size = self.feature_chunk_size
        pieces = [audio[i:i + size] for i in range(0, len(audio), size)][:limit]
        return pieces or [audio]

    def __call__(self, text=None, audios=None, sampling_rate=None, audio=None, padding=True, return_tensors="pt",
                 **kwargs):
        """text: one prompt or a list, each with one speech placeholder; audios (or audio): one clip per prompt."""
        if text is None:
            raise ValueError("MERaLiONProcessor needs `text`, one speech placeholder in each prompt")
        texts = [text] if isinstance(text, str) else list(text)
        clips = audios if audios is not None else audio
        if clips is None:
            return BatchFeature(dict(self.tokenizer(texts, padding=padding, add_special_tokens=False,
                                                    return_tensors=return_tensors)))
        if isinstance(clips, np.ndarray) and clips.ndim == 1:
            clips = [clips]
        if len(clips) != len(texts):
            raise ValueError(f"{len(texts)} prompts but {len(clips)} clips: one clip per prompt")
        rate = sampling_rate or self.feature_extractor.sampling_rate
        if rate != self.feature_extractor.sampling_rate:
            raise ValueError(f"audio at {rate} Hz; this processor takes {self.feature_extractor.sampling_rate} Hz")
        pieces, expanded = [], []
        for prompt, clip in zip(texts, clips):
            if prompt.count(self.speech_token) != 1:
                raise ValueError(f"each prompt needs exactly one {self.speech_token}; got {prompt!r}")
            parts = self.chunks(clip)
            pieces += parts
            expanded.append(prompt.replace(self.speech_token,
                                           self.speech_token * (self.fixed_speech_embeds_length * len(parts))))
        features = self.feature_extractor(pieces, sampling_rate=rate, padding="max_length",
                                          return_attention_mask=True, do_normalize=self.do_normalize,
                                          return_tensors=return_tensors)
        features["feature_attention_mask"] = features.pop("attention_mask")
        tokens = self.tokenizer(expanded, padding=padding, add_special_tokens=False, return_tensors=return_tensors)
        return BatchFeature({**tokens, **features})

    def batch_decode(self, *args, **kwargs):
        return self.tokenizer.batch_decode(*args, **kwargs)

    def decode(self, *args, **kwargs):
        return self.tokenizer.decode(*args, **kwargs)

    @property
    def model_input_names(self):
        return list(dict.fromkeys(self.tokenizer.model_input_names + ["input_features", "feature_attention_mask"]))
