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


# ---------------------------------------------------------------------------------------------
# Replicas of published checkpoints, scaled down: random weights, the real architecture classes, the
# published directory layout. ``slimspeech import`` is tested on these (no checkpoint can be downloaded).
#
#     srcs = slam_llm_replica(tmp / "src")     # {"encoder", "llm", "projector", "lora"} paths
#     import_slam(srcs["encoder"], srcs["llm"], srcs["projector"], tmp / "model", lora=srcs["lora"])


def tiny_hf_whisper_dir(path, *, n_mels: int = 80, d_model: int = 64, layers: int = 2, heads: int = 4,
                        seed: int = 0):
    """A Hugging Face Whisper dir laid out as openai/whisper-* publish it (WhisperForConditionalGeneration's
    config.json + model.safetensors + generation_config.json, preprocessor_config.json), scaled down: width
    ``d_model``, ``layers`` encoder and decoder layers, a 256-token vocabulary; max_source_positions 1500
    and the 30 s feature window as published (80 mel bins: large-v2 and smaller, 128: large-v3). -> path."""
    from pathlib import Path

    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperForConditionalGeneration

    path = Path(path)
    # the published special-token ids (50257...) need a 51865-token table; scaled down, they move into 256
    cfg = WhisperConfig(vocab_size=256, num_mel_bins=n_mels, d_model=d_model, encoder_layers=layers,
                        decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
                        encoder_ffn_dim=4 * d_model, decoder_ffn_dim=4 * d_model, max_source_positions=1500,
                        max_target_positions=448, pad_token_id=250, bos_token_id=250, eos_token_id=250,
                        decoder_start_token_id=251, begin_suppress_tokens=None, suppress_tokens=None)
    torch.manual_seed(seed)
    WhisperForConditionalGeneration(cfg).save_pretrained(path)
    WhisperFeatureExtractor(feature_size=n_mels, sampling_rate=16000, hop_length=160, chunk_length=30,
                            n_fft=400).save_pretrained(path)
    return path


def tiny_llm_dir(path, arch: str = "llama", *, layers: int = 4, hidden: int = 32, heads: int = 4, kv_heads: int = 2,
                 seed: int = 0):
    """A Hugging Face causal-LM dir with its tokenizer (as vicuna-7b-v1.5 / Qwen publish theirs), scaled down:
    ``arch`` llama or qwen2, a BPE tokenizer trained on the tiny corpus (tiny_tokenizer). -> path."""
    from pathlib import Path

    path = Path(path)
    tok = tiny_tokenizer()
    cfg = decoder_config(arch, len(tok), tok, layers=layers, hidden=hidden, heads=heads, kv_heads=kv_heads,
                         intermediate=2 * hidden)
    torch.manual_seed(seed)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def slam_projector_checkpoint(path, *, encoder_dim: int, llm_dim: int, k: int = 5, hidden: int = 128,
                              extra: dict | None = None, seed: int = 0):
    """A SLAM-LLM ``model.pt``: ``torch.save`` of the trainable parameters by their names in SLAM-LLM's model,
    here the linear projector (EncoderProjectorConcat: ``encoder_projector.linear1`` (hidden, k * encoder_dim),
    ``encoder_projector.linear2`` (llm_dim, hidden); published hidden: 2048); ``extra``: more tensors (e.g. the
    ``llm.*`` LoRA tensors SLAM-LLM adds with use_peft). -> path."""
    from collections import OrderedDict
    from pathlib import Path

    from torch import nn

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    linear1, linear2 = nn.Linear(k * encoder_dim, hidden), nn.Linear(hidden, llm_dim)
    state = OrderedDict()
    for name, layer in (("linear1", linear1), ("linear2", linear2)):
        state[f"encoder_projector.{name}.weight"] = layer.weight.detach().clone()
        state[f"encoder_projector.{name}.bias"] = layer.bias.detach().clone()
    state.update(extra or {})
    torch.save(state, path)
    return path


def tiny_lora_adapter_dir(path, llm_dir, *, r: int = 4, alpha: int = 8, targets=("q_proj", "v_proj"),
                          use_rslora: bool = False, seed: int = 0):
    """A PEFT LoRA adapter dir for the causal LM in ``llm_dir``, as ``PeftModel.save_pretrained`` writes one
    (adapter_config.json + adapter_model.safetensors with ``base_model.model.<module>.lora_A.weight`` (r, in)
    and ``.lora_B.weight`` (out, r)), written without peft (the speechllm core does not import it) and with
    B != 0, as after training (peft initialises B to zero). -> path."""
    import json
    from pathlib import Path

    from safetensors.torch import save_file
    from torch import nn
    from transformers import AutoConfig

    path, llm_dir = Path(path), Path(llm_dir)
    with torch.device("meta"):
        llm = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(llm_dir))
    gen = torch.Generator().manual_seed(seed)
    tensors = {}
    for name, mod in llm.named_modules():
        if isinstance(mod, nn.Linear) and name.rsplit(".", 1)[-1] in targets and ".layers." in name:
            tensors[f"base_model.model.{name}.lora_A.weight"] = torch.randn(r, mod.in_features, generator=gen) * 0.1
            tensors[f"base_model.model.{name}.lora_B.weight"] = torch.randn(mod.out_features, r, generator=gen) * 0.1
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(llm_dir), "r": r,
              "lora_alpha": alpha, "lora_dropout": 0.0, "target_modules": sorted(targets), "bias": "none",
              "fan_in_fan_out": False, "use_rslora": use_rslora, "use_dora": False, "modules_to_save": None,
              "init_lora_weights": True, "inference_mode": True, "rank_pattern": {}, "alpha_pattern": {},
              "layers_to_transform": None, "layers_pattern": None}
    path.mkdir(parents=True, exist_ok=True)
    (path / "adapter_config.json").write_text(json.dumps(config, indent=2))
    save_file(tensors, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    return path


def slam_llm_replica(root, *, n_mels: int = 80, k: int = 5, llm: str = "llama", seed: int = 0) -> dict:
    """The four sources of a SLAM-LLM checkpoint, scaled down, under ``root``: encoder (Whisper, width 64),
    llm (width 32, 4 layers), projector (model.pt, k frames per token), lora (for that llm)."""
    from pathlib import Path

    root = Path(root)
    enc = tiny_hf_whisper_dir(root / "whisper", n_mels=n_mels, seed=seed)
    lm = tiny_llm_dir(root / "llm", llm, seed=seed)
    proj = slam_projector_checkpoint(root / "ckpt" / "model.pt", encoder_dim=64, llm_dim=32, k=k, seed=seed)
    lora = tiny_lora_adapter_dir(root / "lora", lm, seed=seed)
    return {"encoder": enc, "llm": lm, "projector": proj, "lora": lora}
