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


def slam_llm_replica(root, *, n_mels: int = 80, k: int = 5, llm: str = "llama", hidden: int = 32, heads: int = 4,
                     kv_heads: int = 2, seed: int = 0) -> dict:
    """The four sources of a SLAM-LLM checkpoint, scaled down, under ``root``: encoder (Whisper, width 64),
    llm (width ``hidden``, 4 layers; hidden 64, heads 2: head_dim 32, what vLLM's CPU attention needs),
    projector (model.pt, k frames per token), lora (for that llm)."""
    from pathlib import Path

    root = Path(root)
    enc = tiny_hf_whisper_dir(root / "whisper", n_mels=n_mels, seed=seed)
    lm = tiny_llm_dir(root / "llm", llm, hidden=hidden, heads=heads, kv_heads=kv_heads, seed=seed)
    proj = slam_projector_checkpoint(root / "ckpt" / "model.pt", encoder_dim=64, llm_dim=hidden, k=k, seed=seed)
    lora = tiny_lora_adapter_dir(root / "lora", lm, seed=seed)
    return {"encoder": enc, "llm": lm, "projector": proj, "lora": lora}


# ---------------------------------------------------------------------------------------------
# Replicas of published Hugging Face speech-LLM dirs (slimspeech import qwen2-audio / voxtral / granite-speech):
# the real architecture class with random weights, scaled down (head_dim 32: vLLM's CPU attention needs >= 32),
# the published file names, config fields and their nesting, tokenizer / processor files, chat template and
# generation config. Where each fact comes from is in the importer module of the source.
#
#     src = qwen2_audio_replica(tmp / "Qwen2-Audio-7B-Instruct")          # -> the dir
#     import_qwen2_audio(src, tmp / "model", languages="fr,de")

REPLICA_CORPUS = TINY_CORPUS + ["detect the language and recognize the speech", "translate the speech into French",
                                "translate the speech into German", "you are a helpful assistant", "audio"]
#: the language tags Qwen2-Audio's prompts name (<|en|> ...), special tokens of the replica's tokenizer
REPLICA_LANG_TAGS = ["<|en|>", "<|fr|>", "<|de|>"]


def byte_level_bpe(texts, vocab_size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE vocabulary and merge list trained on ``texts`` (GPT-2 / Qwen2 byte alphabet).
    -> (vocab {token: id}, merges [(left, right)])"""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts) * 2, trainer)
    model = json.loads(tok.to_str())["model"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in model["merges"]]
    return model["vocab"], merges


def _write_json(path, obj) -> None:
    import json
    from pathlib import Path

    Path(path).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def _save_published(model, table, path, shards: int = 2) -> None:
    """The weights as the published dirs hold them: ``model-0000i-of-0000n.safetensors`` + the index, under the
    published names (speechllm.families.hf_audio.published_state_dict)."""
    from .families.hf_audio import published_state_dict

    state = published_state_dict(model, table)
    total = sum(t.numel() * t.element_size() for t in state.values())
    model.save_pretrained(path, state_dict=state, save_original_format=False,
                          max_shard_size=max(1, total // shards + 1))


def qwen2_audio_replica(path, *, variant: str = "instruct", layers: int = 4, hidden: int = 64, heads: int = 2,
                        kv_heads: int = 1, seed: int = 0):
    """A Qwen2-Audio-7B(-Instruct) dir, scaled down (speechllm.importers.qwen2_audio_parts lists the layout):
    encoder 2 layers, d_model 32, 128 mel bins, the published 30 s window (max_source_positions 1500); decoder
    ``layers`` x ``hidden``; a byte-level BPE Qwen2Tokenizer with the published special tokens in the published
    order; ``variant`` instruct writes the chat template. -> path"""
    from pathlib import Path

    from transformers import Qwen2AudioConfig, Qwen2AudioForConditionalGeneration, Qwen2Tokenizer, \
        WhisperFeatureExtractor

    from .families.qwen2_audio import QWEN2_AUDIO

    if variant not in ("base", "instruct"):
        raise ValueError(f"variant {variant!r}: choose base or instruct")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab, merges = byte_level_bpe(REPLICA_CORPUS, 360)
    tok = Qwen2Tokenizer(vocab=vocab, merges=merges, errors="replace")
    # published ids: <|endoftext|> 151643 right after the BPE vocabulary, then <|im_start|>, <|im_end|>,
    # <|AUDIO|>, <|audio_bos|>, <|audio_eos|> (151644-151648)
    tok.add_special_tokens({"additional_special_tokens": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|AUDIO|>",
                                                          "<|audio_bos|>", "<|audio_eos|>", *REPLICA_LANG_TAGS]})
    eot, im_end, audio_id = (tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_end|>", "<|AUDIO|>"))
    # published: an embedding table larger than the tokenizer (156032 rows for 151649 tokens)
    vocab_size = (len(tok) + 63) // 64 * 64
    text = dict(model_type="qwen2", vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                max_position_embeddings=8192, rms_norm_eps=1e-5, rope_theta=10000, sliding_window=32768,
                bos_token_id=eot, eos_token_id=im_end, use_mrope=False, torch_dtype="float32")
    audio = dict(model_type="qwen2_audio_encoder", num_mel_bins=128, encoder_layers=2, encoder_attention_heads=2,
                 encoder_ffn_dim=64, d_model=32, max_source_positions=1500, activation_function="gelu",
                 scale_embedding=False)
    config = {"architectures": ["Qwen2AudioForConditionalGeneration"], "audio_config": audio,
              "audio_token_index": audio_id, "ignore_index": -100, "model_type": "qwen2_audio", "text_config": text,
              "torch_dtype": "float32", "transformers_version": "4.45.0.dev0", "vocab_size": vocab_size}
    torch.manual_seed(seed)
    model = Qwen2AudioForConditionalGeneration(Qwen2AudioConfig(**{k: v for k, v in config.items()
                                                                    if k not in ("architectures", "model_type")}))
    _save_published(model, QWEN2_AUDIO, path)
    _write_json(path / "config.json", config)  # the published nesting and fields, not transformers 5's
    gen = {"bos_token_id": eot, "eos_token_id": eot, "pad_token_id": eot, "do_sample": True, "top_k": 20,
           "top_p": 0.5, "repetition_penalty": 1.1, "transformers_version": "4.45.0.dev0"}
    if variant == "instruct":
        gen.update(chat_format="chatml", eos_token_id=[eot, im_end], temperature=0.7)
    _write_json(path / "generation_config.json", gen)
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400,
                                 padding_value=0.0, return_attention_mask=True)
    _write_json(path / "preprocessor_config.json", {**fe.to_dict(), "processor_class": "Qwen2AudioProcessor"})
    tok.save_pretrained(path)
    tok.backend_tokenizer.model.save(str(path))  # vocab.json + merges.txt, beside tokenizer.json as published
    if variant == "instruct":
        _write_json(path / "chat_template.json",
                    {"chat_template": _qwen2_audio_chat_template()})
    return path


def _qwen2_audio_chat_template() -> str:
    """Qwen2-Audio-Instruct's ChatML template: the one transformers keeps as Qwen2AudioProcessor's default for the
    hub's processor files (processing_qwen2_audio.py, ``default_chat_template``)."""
    from transformers import Qwen2AudioProcessor

    return Qwen2AudioProcessor.default_chat_template.fget(None)


#: Voxtral's tekken.json special tokens that the code relies on, at their published ranks (the rest are fillers
#: ``<SPECIAL_i>``, as mistral-common writes them): the Tekken controls 0-19 (mistral_common Tekkenizer's
#: DEPRECATED_SPECIAL_TOKENS order: <unk> <s> </s> [INST] [/INST] ...), [AUDIO] 24 (VoxtralProcessor's
#: audio_token_id), [BEGIN_AUDIO] 25, [TRANSCRIBE] 34; 1000 special tokens in all
VOXTRAL_SPECIAL = {24: "[AUDIO]", 25: "[BEGIN_AUDIO]", 34: "[TRANSCRIBE]"}
VOXTRAL_NUM_SPECIAL = 1000


def voxtral_tekken(vocab_tokens: int = 1000) -> dict:
    """A Voxtral tekken.json, scaled down: the first ``vocab_tokens`` ranks of the Tekken BPE mistral-common ships
    (tekken_240911.json: ranks 0-255 are the bytes, every later token merges two lower ranks, so a prefix is a
    complete BPE), 1000 special tokens with Voxtral's at their ranks, the audio section of Voxtral's file."""
    import json
    from importlib import resources

    from mistral_common.tokens.tokenizers.tekken import Tekkenizer

    with resources.files("mistral_common").joinpath("data/tekken_240911.json").open() as f:
        base = json.load(f)
    special = [dict(t) for t in Tekkenizer.DEPRECATED_SPECIAL_TOKENS]
    for rank in range(len(special), max(VOXTRAL_SPECIAL) + 1):
        special.append({"rank": rank, "token_str": VOXTRAL_SPECIAL.get(rank, f"<SPECIAL_{rank}>"), "is_control": True})
    return {
        "config": {**base["config"], "num_vocab_tokens": vocab_tokens,
                   "default_vocab_size": VOXTRAL_NUM_SPECIAL + vocab_tokens,
                   "default_num_special_tokens": VOXTRAL_NUM_SPECIAL, "version": "v7"},
        "vocab": base["vocab"][:vocab_tokens],
        "special_tokens": special,
        # 12.5 audio tokens per second (one per 8 mel frames of 10 ms), audio padded to 30 s chunks
        "audio": {"sampling_rate": 16000, "frame_rate": 12.5, "chunk_length_s": 30.0,
                  "audio_encoding_config": {"num_mel_bins": 128, "hop_length": 160, "window_size": 400}},
    }


def voxtral_replica(path, *, layers: int = 4, hidden: int = 64, heads: int = 2, kv_heads: int = 1, seed: int = 0):
    """A Voxtral-Mini-3B-2507 dir, scaled down (speechllm.importers.voxtral_parts lists the layout): Whisper-style
    encoder 2 layers x 32 (its projector input is 4 frames x 32 = intermediate_size 128, as 5120 = 4 x 1280 is
    published), 128 mel bins, 30 s chunks (max_source_positions 1500); Llama decoder ``layers`` x ``hidden``;
    tekken.json (voxtral_tekken). -> path"""
    from pathlib import Path

    from transformers import VoxtralConfig, VoxtralForConditionalGeneration, WhisperFeatureExtractor

    from .families.voxtral import VOXTRAL

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tekken = voxtral_tekken()
    vocab_size = tekken["config"]["default_vocab_size"]
    audio = dict(model_type="voxtral_encoder", hidden_size=32, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=2, head_dim=16, num_mel_bins=128, max_source_positions=1500,
                 scale_embedding=False, activation_function="gelu", vocab_size=51866, dropout=0.0, layerdrop=0.0,
                 activation_dropout=0.0, attention_dropout=0.0, initializer_range=0.02)
    text = dict(model_type="llama", vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                head_dim=hidden // heads, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=100000000.0,
                hidden_act="silu", attention_bias=False, mlp_bias=False, attention_dropout=0.0, use_cache=True,
                sliding_window=None, rope_scaling=None, pretraining_tp=1, initializer_range=0.02)
    config = {"architectures": ["VoxtralForConditionalGeneration"], "audio_config": audio, "audio_token_id": 24,
              "hidden_size": hidden, "model_type": "voxtral", "projector_hidden_act": "gelu", "text_config": text,
              "torch_dtype": "float32", "transformers_version": "4.54.0.dev0", "vocab_size": vocab_size}
    torch.manual_seed(seed)
    model = VoxtralForConditionalGeneration(VoxtralConfig(
        audio_config=dict(audio), text_config=dict(text), audio_token_id=24, projector_hidden_act="gelu"))
    _save_published(model, VOXTRAL, path)
    _write_json(path / "config.json", config)
    _write_json(path / "generation_config.json", {"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 11,
                                                  "transformers_version": "4.54.0.dev0"})
    fe = WhisperFeatureExtractor(feature_size=128, sampling_rate=16000, hop_length=160, chunk_length=30, n_fft=400,
                                 padding_value=0.0, return_attention_mask=False, dither=0.0)
    _write_json(path / "preprocessor_config.json", {**fe.to_dict(), "processor_class": "VoxtralProcessor"})
    _write_json(path / "tekken.json", tekken)
    return path


#: Granite 3.x's chat template reduced to what a system + user turn renders to (the full one in granite-speech's
#: tokenizer_config.json also handles tools, documents and a default dated system turn); the rendering matches the
#: published prompt vLLM's granite-speech test feeds the model (tests/models/.../test_granite_speech.py)
GRANITE_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|start_of_role|>' + message['role'] + '<|end_of_role|>' + message['content'] + '<|end_of_text|>\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_of_role|>assistant<|end_of_role|>' }}{%- endif %}"
)


def granite_speech_replica(path, *, layers: int = 4, hidden: int = 64, heads: int = 2, kv_heads: int = 1,
                           lora_rank: int = 4, seed: int = 0):
    """A granite-speech-3.3 dir, scaled down (speechllm.importers.granite_speech_parts lists the layout): conformer
    encoder 2 layers x 32 on stacked 2 x 80 log-mels, 2-layer Q-Former (windows of 15 frames -> 3 queries), Granite
    decoder ``layers`` x ``hidden`` with the published multipliers and tied embeddings, its GPT-2 style tokenizer with
    <|audio|> last, the audio LoRA (q_proj, v_proj) as adapter_config.json + adapter_model.safetensors. -> path"""
    import json
    from pathlib import Path

    from safetensors.torch import save_file
    from transformers import GPT2Tokenizer, GraniteSpeechConfig, GraniteSpeechForConditionalGeneration

    from .families.granite_speech import GRANITE_SPEECH, GraniteLogMel

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    bpe, merges = byte_level_bpe(REPLICA_CORPUS + ["can you transcribe the speech into a written format",
                                                   "You are Granite, developed by IBM"], 360)
    # <|end_of_text|> is id 0 (bos = eos = pad), then the BPE; the role tokens and <|audio|> come last (49159 of 49160)
    vocab = {"<|end_of_text|>": 0, **{t: i + 1 for t, i in bpe.items()}}
    tok = GPT2Tokenizer(vocab=vocab, merges=merges, bos_token="<|end_of_text|>", eos_token="<|end_of_text|>",
                        unk_token="<|end_of_text|>", pad_token="<|end_of_text|>")
    tok.add_special_tokens({"additional_special_tokens": ["<|start_of_role|>", "<|end_of_role|>", "<|tool_call|>",
                                                          "<|audio|>"]})
    audio_id = tok.convert_tokens_to_ids("<|audio|>")
    vocab_size = len(tok)
    encoder = dict(model_type="granite_speech_encoder", input_dim=160, num_layers=2, hidden_dim=32, feedforward_mult=4,
                   num_heads=2, dim_head=16, output_dim=42, context_size=200, max_pos_emb=512, dropout=0.1,
                   conv_kernel_size=15, conv_expansion_factor=2)
    projector = dict(model_type="blip_2_qformer", hidden_size=32, encoder_hidden_size=32, num_attention_heads=2,
                     intermediate_size=64, num_hidden_layers=2, cross_attention_frequency=1, hidden_act="gelu",
                     hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, layer_norm_eps=1e-12,
                     max_position_embeddings=2048, position_embedding_type="absolute", initializer_range=0.02,
                     use_qformer_text_input=False, vocab_size=30522)
    text = dict(model_type="granite", architectures=["GraniteForCausalLM"], vocab_size=vocab_size, hidden_size=hidden,
                intermediate_size=2 * hidden, num_hidden_layers=layers, num_attention_heads=heads,
                num_key_value_heads=kv_heads, max_position_embeddings=131072, rms_norm_eps=1e-5, rope_theta=10000000.0,
                hidden_act="silu", attention_bias=False, mlp_bias=False, attention_dropout=0.0,
                embedding_multiplier=12.0, residual_multiplier=0.22, attention_multiplier=0.0078125,
                logits_scaling=8.0, tie_word_embeddings=True, bos_token_id=0, eos_token_id=0, pad_token_id=0,
                torch_dtype="float32", use_cache=True)
    config = {"architectures": ["GraniteSpeechForConditionalGeneration"], "audio_token_index": audio_id,
              "downsample_rate": 5, "encoder_config": encoder, "has_lora_adapter": True, "initializer_range": 0.02,
              "model_type": "granite_speech", "projector_config": projector, "text_config": text,
              "tie_word_embeddings": True, "torch_dtype": "float32", "transformers_version": "4.52.0.dev0",
              "window_size": 15}
    torch.manual_seed(seed)
    model = GraniteSpeechForConditionalGeneration(GraniteSpeechConfig(
        **{k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()
           if k not in ("architectures", "model_type", "torch_dtype", "transformers_version")}))
    _save_published(model, GRANITE_SPEECH, path)
    _write_json(path / "config.json", config)
    _write_json(path / "generation_config.json", {"bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0,
                                                  "transformers_version": "4.52.0.dev0"})
    _write_json(path / "preprocessor_config.json", GraniteLogMel().to_dict())
    _write_json(path / "processor_config.json",
                {"audio_token": "<|audio|>", "processor_class": "GraniteSpeechProcessor"})
    tok.save_pretrained(path)
    tok.backend_tokenizer.model.save(str(path))  # vocab.json + merges.txt, as published
    cfg = json.loads((path / "tokenizer_config.json").read_text())
    (path / "chat_template.jinja").unlink(missing_ok=True)
    _write_json(path / "tokenizer_config.json", {**cfg, "chat_template": GRANITE_CHAT_TEMPLATE})
    # the audio LoRA (PEFT's layout), on the language model's q_proj / v_proj, named as in the published full model
    gen = torch.Generator().manual_seed(seed + 1)
    tensors = {}
    for name, mod in model.model.language_model.named_modules():
        if isinstance(mod, torch.nn.Linear) and name.rsplit(".", 1)[-1] in ("q_proj", "v_proj"):
            key = f"base_model.model.language_model.model.{name}"
            tensors[f"{key}.lora_A.weight"] = torch.randn(lora_rank, mod.in_features, generator=gen) * 0.1
            tensors[f"{key}.lora_B.weight"] = torch.randn(mod.out_features, lora_rank, generator=gen) * 0.1
    save_file(tensors, str(path / "adapter_model.safetensors"), metadata={"format": "pt"})
    _write_json(path / "adapter_config.json", {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": str(path), "r": lora_rank,
        "lora_alpha": 2 * lora_rank, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"], "bias": "none",
        "fan_in_fan_out": False, "use_rslora": False, "use_dora": False, "modules_to_save": None,
        "inference_mode": True})
    return path
