"""Builders: make a fresh (randomly initialised, fixed-seed) model of a family from configs.

The tests build tiny models with these same functions production training uses:

    model = tiny_slam("llama")            # 4-layer decoder, width 32
    model = tiny_slam("qwen2")            # Qwen2 decoder with sliding-window layer_types
    model = tiny_qwen2_audio()
"""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

from .audio import FeatureSettings
from .encoder import EncoderConfig, SpeechEncoder
from .families.slam import SlamSpeechLLM
from .modeldir import FORMAT_VERSION
from .projector import ProjectorConfig, build_projector
from .tokenizer import TASK_TOKENS, train_bpe_tokenizer

SLAM_PROMPTS = {"transcribe": "<|en|>{audio}<|transcribe|>", "translate": "<|en|>{audio}<|translate|><|{lang}|>"}
LANGUAGES = {"fr": "French", "de": "German"}

TINY_CORPUS = [
    "the small dog sees the red ball", "le petit chien voit la balle rouge",
    "der kleine Hund sieht den roten Ball", "does the teacher read a new book?",
    "est-ce que le professeur lit un nouveau livre ?", "liest der Lehrer ein neues Buch?",
    "we did not eat the green apples", "nous n'avons pas mangé les pommes vertes",
    "wir haben die grünen Äpfel nicht gegessen", "three cats will sleep in the garden",
    "trois chats dormiront dans le jardin", "drei Katzen werden im Garten schlafen",
]


def decoder_config(arch: str, vocab_size: int, tokenizer, *, layers: int, hidden: int, heads: int,
                   kv_heads: int, intermediate: int, max_positions: int = 2048, **extra):
    common = dict(vocab_size=vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                  num_attention_heads=heads, num_key_value_heads=kv_heads, intermediate_size=intermediate,
                  max_position_embeddings=max_positions, bos_token_id=tokenizer.bos_token_id,
                  eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
                  tie_word_embeddings=False, **extra)
    if arch == "llama":
        return LlamaConfig(**common)
    if arch == "qwen2":
        return Qwen2Config(**common)
    raise ValueError(f"unknown decoder arch {arch!r}: choose llama or qwen2")


def build_slam(tokenizer, dec_config, enc_config: EncoderConfig, *, projector: str = "ctc_embed",
               stack: int = 2, projector_hidden: int | None = None, prompts=None, languages=None,
               max_audio_seconds: float | None = None, max_new_tokens: int = 128, seed: int = 0,
               extra_spec: dict | None = None) -> SlamSpeechLLM:
    torch.manual_seed(seed)
    decoder = AutoModelForCausalLM.from_config(dec_config)
    encoder = SpeechEncoder(enc_config)
    pcfg = ProjectorConfig(kind=projector, in_dim=enc_config.d_model, out_dim=dec_config.hidden_size,
                           stack=1 if projector == "ctc_compress" else stack,  # its tokens are CTC runs
                           hidden_dim=projector_hidden or 4 * dec_config.hidden_size,
                           vocab_size=dec_config.vocab_size if projector.startswith("ctc_") else None)
    window = enc_config.max_source_positions / enc_config.frames_per_second
    spec = {
        "format_version": FORMAT_VERSION, "family": "slam",
        "prompts": dict(prompts or SLAM_PROMPTS), "languages": dict(languages or LANGUAGES),
        "source_language": "en", "features": FeatureSettings(n_mels=enc_config.n_mels).to_dict(),
        "projector": pcfg.to_dict(), "max_audio_seconds": min(window, max_audio_seconds or window),
        "max_new_tokens": max_new_tokens, **(extra_spec or {}),
    }
    return SlamSpeechLLM(spec, tokenizer, encoder, build_projector(pcfg), decoder)


def tiny_tokenizer(vocab_size: int = 320):
    return train_bpe_tokenizer(TINY_CORPUS, vocab_size, TASK_TOKENS)


def tiny_slam(decoder: str = "llama", *, projector: str = "ctc_embed", layers: int = 4, hidden: int = 32,
              heads: int = 4, kv_heads: int = 2, seed: int = 0) -> SlamSpeechLLM:
    """A tiny slam model (head_dim = hidden / heads; vLLM's CPU attention needs head_dim >= 32)."""
    tok = tiny_tokenizer()
    extra = {}
    if decoder == "qwen2":  # sliding window on the upper layers: exercises layer_types surgery
        extra = dict(use_sliding_window=True, sliding_window=8, max_window_layers=layers // 2)
    dec = decoder_config(decoder, len(tok), tok, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
                         intermediate=2 * hidden, **extra)
    enc = EncoderConfig(n_mels=80, d_model=32, layers=2, heads=2, ffn_dim=64, downsample=4,
                        max_source_positions=250)
    return build_slam(tok, dec, enc, projector=projector, projector_hidden=64, max_new_tokens=12, seed=seed)


def tiny_qwen2_audio(*, layers: int = 4, hidden: int = 32, heads: int = 4, kv_heads: int = 2,
                     sliding_window: bool = True, seed: int = 0):
    """A randomly initialised Qwen2-Audio (2 s window) with a locally trained tokenizer and processor.
    ``sliding_window``: on the upper half of the layers (exercises layer_types surgery; vLLM
    cannot serve a window on some layers only, and Qwen2-Audio-7B has none)."""
    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2AudioProcessor, \
        WhisperFeatureExtractor

    from .families.qwen2_audio import Qwen2AudioSpeechLLM

    audio_tokens = ["<|AUDIO|>", "<|audio_bos|>", "<|audio_eos|>"]
    tok = train_bpe_tokenizer(TINY_CORPUS + ["transcribe the audio", "translate the audio into"], 330,
                              audio_tokens + TASK_TOKENS)
    chunk = 2
    fe = WhisperFeatureExtractor(feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=chunk,
                                 n_fft=400)
    processor = Qwen2AudioProcessor(feature_extractor=fe, tokenizer=tok, chat_template="")
    text = decoder_config("qwen2", len(tok), tok, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
                          intermediate=2 * hidden,
                          **(dict(use_sliding_window=True, sliding_window=8, max_window_layers=layers // 2)
                             if sliding_window else {}))
    cfg = Qwen2AudioConfig(
        audio_config=dict(model_type="qwen2_audio_encoder", num_mel_bins=80, encoder_layers=2,
                          encoder_attention_heads=2, encoder_ffn_dim=64, d_model=32,
                          max_source_positions=chunk * 50),
        text_config=text.to_dict(), audio_token_index=tok.convert_tokens_to_ids("<|AUDIO|>"))
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(cfg)
    spec = {
        "format_version": FORMAT_VERSION, "family": "qwen2_audio",
        "prompts": {"transcribe": "<|audio_bos|>{audio}<|audio_eos|>transcribe the audio",
                    "translate": "<|audio_bos|>{audio}<|audio_eos|>translate the audio into <|{lang}|>"},
        "languages": dict(LANGUAGES), "source_language": "en", "max_audio_seconds": float(chunk),
        "max_new_tokens": 12,
    }
    return Qwen2AudioSpeechLLM(spec, processor, model)
