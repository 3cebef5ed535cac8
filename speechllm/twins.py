"""Shape twins: a slam model dir with random weights at the shape of published models.

    slimspeech twin --shape llama-3.2-1b --out runs/twin-1b                      # ~1.3 B, float32, CPU
    slimspeech twin --shape llama-3.1-8b-whisper-large-v3 --out runs/twin-8b --device cuda   # ~8.7 B, bfloat16
    slimspeech prune --model runs/twin-1b --layers 5-10 --out runs/twin-1b-pruned

    from speechllm.twins import SHAPES, build_twin
    build_twin(SHAPES["llama-3.2-1b"], "runs/twin-1b")
    build_twin(SHAPES["llama-3.2-1b"].scaled(), tmp / "twin")   # the same structure, tiny (tests)

What a twin is for: speed and memory at a realistic shape (how much faster and smaller a pruned
decoder really is) where the real weights cannot be downloaded. Every size that decides the cost of
a forward pass is the published one: decoder width, depth, heads, KV heads, head dim, MLP width,
vocabulary (the LM head is a large share of a 1B model's bytes per token), tied or untied embeddings,
RoPE; the encoder's width, depth, heads, FFN and mel bins; SLAM-LLM's linear projector (k = 5 frames
per audio token, hidden 2048, ReLU: speechllm.importers.slam_parts). The values are copied from the
models' published ``config.json`` files (the ``source`` of each part below, also written into the
dir's provenance). The weights are random (fixed seed, the architectures' own initialisation): a
twin's text is noise, its speed and memory are the real model's. Nothing is downloaded.

The tokenizer is a byte-level BPE trained on a few sentences (speechllm.tokenizer), padded with
filler tokens up to the published vocabulary size so that ``len(tokenizer)`` equals the embedding
rows; prompts therefore tokenize into fewer tokens than the real tokenizer would make (a few
tokens of the prompt; the audio tokens, most of it, are the same).

The 1B twin's encoder is slimspeech's own Whisper-style encoder (``kind slimspeech``: conv + conv
stride 2, pre-norm transformer) at Whisper-base's published shape: it encodes a clip's real
length, where a Hugging Face Whisper encoder pads every clip to 30 s (at base size that is about
a second per clip on two CPU cores, more than the decoding being measured). The 8B twin has the
real thing: a Hugging Face Whisper-large-v3 encoder (``kind hf_whisper``, 128 mel bins, 30 s).

A twin is an ordinary model dir: ``slimspeech inspect``, ``prune --layers``, ``serve`` and
``compare`` take it as any other.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SlimError

log = logging.getLogger(__name__)

# ---- the published shapes ------------------------------------------------------------------------


@dataclass(frozen=True)
class DecoderShape:
    """A Llama-architecture decoder's config.json values."""

    name: str
    source: str
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    max_position_embeddings: int
    rms_norm_eps: float
    tie_word_embeddings: bool
    rope_parameters: dict = field(default_factory=dict)
    #: the published checkpoint's parameter count (model card), checked by the tests against the built shape
    published_parameters: int | None = None


@dataclass(frozen=True)
class EncoderShape:
    """A Whisper encoder's config.json values (``kind``: how the twin holds it, speechllm.encoder)."""

    name: str
    source: str
    kind: str  # "slimspeech" | "hf_whisper"
    d_model: int
    layers: int
    heads: int
    ffn_dim: int
    n_mels: int
    max_source_positions: int = 1500  # 30 s of 50 Hz frames after the stride-2 conv
    vocab_size: int = 51865  # hf_whisper: the (unused) Whisper decoder's vocabulary, kept in its config


@dataclass(frozen=True)
class TwinShape:
    name: str
    description: str
    decoder: DecoderShape
    encoder: EncoderShape
    projector_k: int = 5  # SLAM-LLM's encoder_projector_ds_rate
    projector_hidden: int = 2048  # SLAM-LLM's EncoderProjectorConcat hidden width
    dtype: str = "float32"  # the default dtype of the built dir
    max_new_tokens: int = 200  # SLAM-LLM's generate default
    scaled_down: bool = False

    def scaled(self, *, layers: int = 4, width: int = 64, vocab: int = 1024) -> TwinShape:
        """The same structure (head ratios, tying, RoPE, encoder kind, projector) at a tiny size, for tests."""
        d, e = self.decoder, self.encoder
        heads = max(2, d.num_attention_heads // 16)
        kv = max(1, heads * d.num_key_value_heads // d.num_attention_heads)
        dec = dataclasses.replace(d, hidden_size=width, intermediate_size=4 * width, num_hidden_layers=layers,
                                  num_attention_heads=heads, num_key_value_heads=kv, head_dim=width // heads,
                                  vocab_size=vocab, published_parameters=None)
        enc = dataclasses.replace(e, d_model=32, layers=2, heads=2, ffn_dim=64)
        return dataclasses.replace(self, name=f"{self.name} (scaled down)", decoder=dec, encoder=enc,
                                   projector_hidden=64, max_new_tokens=12, scaled_down=True)


LLAMA_3_2_1B = DecoderShape(
    name="meta-llama/Llama-3.2-1B",
    source="https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json",
    hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32, num_key_value_heads=8,
    head_dim=64, vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=True,
    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    published_parameters=1_235_814_400,
)
LLAMA_3_1_8B = DecoderShape(
    name="meta-llama/Llama-3.1-8B",
    source="https://huggingface.co/meta-llama/Llama-3.1-8B/blob/main/config.json",
    hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
    head_dim=128, vocab_size=128256, max_position_embeddings=131072, rms_norm_eps=1e-5, tie_word_embeddings=False,
    rope_parameters={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                     "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    published_parameters=8_030_261_248,
)
WHISPER_BASE = EncoderShape(
    name="openai/whisper-base (encoder)", source="https://huggingface.co/openai/whisper-base/blob/main/config.json",
    kind="slimspeech", d_model=512, layers=6, heads=8, ffn_dim=2048, n_mels=80,
)
WHISPER_LARGE_V3 = EncoderShape(
    name="openai/whisper-large-v3 (encoder)",
    source="https://huggingface.co/openai/whisper-large-v3/blob/main/config.json",
    kind="hf_whisper", d_model=1280, layers=32, heads=20, ffn_dim=5120, n_mels=128, vocab_size=51866,
)

SHAPES: dict[str, TwinShape] = {
    "llama-3.2-1b": TwinShape(
        "llama-3.2-1b", "SLAM: Whisper-base-shaped encoder + linear projector + Llama-3.2-1B decoder (CPU-sized)",
        LLAMA_3_2_1B, WHISPER_BASE, dtype="float32"),
    "llama-3.1-8b-whisper-large-v3": TwinShape(
        "llama-3.1-8b-whisper-large-v3",
        "SLAM: Whisper-large-v3 encoder + linear projector + Llama-3.1-8B decoder (GPU-sized)",
        LLAMA_3_1_8B, WHISPER_LARGE_V3, dtype="bfloat16"),
}

PROJECTOR_SOURCE = ("SLAM-LLM EncoderProjectorConcat (encoder_projector=linear, ds_rate 5, hidden 2048; "
                    "github.com/X-LANCE/SLAM-LLM src/slam_llm/models/projector.py), as speechllm.importers.slam_parts "
                    "imports it: stack_mlp, ReLU")
DTYPES = ("float32", "bfloat16", "float16")
BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


# ---- building ------------------------------------------------------------------------------------


def twin_tokenizer(vocab_size: int, texts: list[str]):
    """A byte-level BPE trained on ``texts`` and the tiny corpus, padded with never-produced filler tokens
    (``<|twin_N|>``) to ``vocab_size`` entries; the special tokens keep their ids."""
    from tokenizers import Tokenizer
    from transformers import PreTrainedTokenizerFast

    from .builders import TINY_CORPUS
    from .tokenizer import BOS, EOS, PAD, TASK_TOKENS, train_bpe_tokenizer

    base = train_bpe_tokenizer(TINY_CORPUS + texts, min(vocab_size, 600), TASK_TOKENS)
    state = json.loads(base.backend_tokenizer.to_str())
    vocab = state["model"]["vocab"]
    if len(vocab) > vocab_size:
        raise ValueError(f"the trained vocabulary ({len(vocab)}) exceeds the twin's ({vocab_size})")
    for i in range(len(vocab), vocab_size):
        vocab[f"<|twin_{i}|>"] = i
    tok = Tokenizer.from_str(json.dumps(state))
    out = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BOS, eos_token=EOS, pad_token=PAD,
                                  additional_special_tokens=list(TASK_TOKENS), clean_up_tokenization_spaces=False)
    assert len(out) == vocab_size, (len(out), vocab_size)
    return out


def decoder_config(shape: DecoderShape, tokenizer):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=shape.vocab_size, hidden_size=shape.hidden_size, intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers, num_attention_heads=shape.num_attention_heads,
        num_key_value_heads=shape.num_key_value_heads, head_dim=shape.head_dim, hidden_act="silu",
        max_position_embeddings=shape.max_position_embeddings, rms_norm_eps=shape.rms_norm_eps,
        tie_word_embeddings=shape.tie_word_embeddings, rope_parameters=dict(shape.rope_parameters),
        attention_bias=False, mlp_bias=False, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def decoder_parameters(shape: DecoderShape) -> int:
    """Parameters of the decoder ``shape`` describes, counted on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    tok = _StubTokenizer()
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(decoder_config(shape, tok))
    return sum(p.numel() for p in model.parameters())


class _StubTokenizer:
    bos_token_id, eos_token_id, pad_token_id = 1, 2, 0


def _encoder(shape: EncoderShape, dtype):
    """The encoder module (speechllm.encoder) of ``shape``, randomly initialised in the current device context."""
    from .encoder import EncoderConfig, HFWhisperEncoder, SpeechEncoder

    if shape.kind == "slimspeech":
        # Whisper's front end: conv (stride 1) + conv (stride 2): 100 Hz mel -> 50 Hz frames
        cfg = EncoderConfig(n_mels=shape.n_mels, d_model=shape.d_model, layers=shape.layers, heads=shape.heads,
                            ffn_dim=shape.ffn_dim, downsample=2, max_source_positions=shape.max_source_positions)
        return SpeechEncoder(cfg).to(dtype)
    from transformers import WhisperConfig, WhisperFeatureExtractor
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    cfg = WhisperConfig(vocab_size=shape.vocab_size, num_mel_bins=shape.n_mels, d_model=shape.d_model,
                        encoder_layers=shape.layers, encoder_attention_heads=shape.heads,
                        encoder_ffn_dim=shape.ffn_dim, decoder_layers=shape.layers,
                        decoder_attention_heads=shape.heads, decoder_ffn_dim=shape.ffn_dim,
                        max_source_positions=shape.max_source_positions, max_target_positions=448)
    cfg.architectures = ["WhisperEncoder"]
    encoder = WhisperEncoder(cfg).to(dtype)
    fe = WhisperFeatureExtractor(feature_size=shape.n_mels, sampling_rate=16000, hop_length=160, chunk_length=30,
                                 n_fft=400)
    return HFWhisperEncoder(encoder, fe)


def estimated_bytes(shape: TwinShape, dtype: str) -> int:
    """Weight bytes of the built twin, roughly (decoder from its shape; encoder and projector from theirs)."""
    d, e = shape.decoder, shape.encoder
    layer = (d.hidden_size * d.head_dim * (2 * d.num_attention_heads + 2 * d.num_key_value_heads)
             + 3 * d.hidden_size * d.intermediate_size)
    emb = d.vocab_size * d.hidden_size * (1 if d.tie_word_embeddings else 2)
    enc = e.layers * (4 * e.d_model ** 2 + 2 * e.d_model * e.ffn_dim)
    proj = shape.projector_k * e.d_model * shape.projector_hidden + shape.projector_hidden * d.hidden_size
    return (d.num_hidden_layers * layer + emb + enc + proj) * BYTES[dtype]


def _available_bytes() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def build_twin(shape: TwinShape, out, *, dtype: str | None = None, device: str = "cpu", seed: int = 0,
               command: str | None = None) -> Path:
    """Write the twin of ``shape`` to the model dir ``out``; -> ``out``."""
    import torch

    from .audio import FeatureSettings
    from .encoder import HF_WHISPER
    from .families.slam import SlamSpeechLLM
    from .importers.slam_parts import DEFAULT_TRANSCRIBE, DEFAULT_TRANSLATE, LANGUAGE_NAMES, prompt_template
    from .modeldir import FORMAT_VERSION, SPEC_FILE
    from .projector import ProjectorConfig, build_projector
    from .provenance import Provenance, now
    from .tasks import PromptBook

    dtype = dtype or shape.dtype
    if dtype not in DTYPES:
        raise SlimError(f"unknown --dtype {dtype!r}: choose one of {', '.join(DTYPES)}", param="dtype")
    out = Path(out)
    if out.exists() and not (out / SPEC_FILE).is_file() and any(out.iterdir()):
        raise SlimError(f"--out {out} exists and is not a slimspeech model dir: choose a new path (an existing "
                        "model dir is replaced)", param="out")
    need = estimated_bytes(shape, dtype)
    avail = _available_bytes() if device == "cpu" else None
    if avail is not None and need > avail:
        raise SlimError(f"the {shape.name} twin needs about {need / 2**30:.1f} GiB in {dtype} and this machine has "
                        f"{avail / 2**30:.1f} GiB available: build it where it fits (e.g. --device cuda on a GPU "
                        "machine)", param="shape")

    langs = {"fr": LANGUAGE_NAMES["fr"], "de": LANGUAGE_NAMES["de"]}
    prompts = {"transcribe": prompt_template(DEFAULT_TRANSCRIBE), "translate": prompt_template(DEFAULT_TRANSLATE)}
    PromptBook(prompts, langs, "en")
    prompt_texts = [DEFAULT_TRANSCRIBE, DEFAULT_TRANSLATE.format(lang_name="French"), "USER: ASSISTANT:"]
    torch_dtype = getattr(torch, dtype)
    torch.manual_seed(seed)
    tokenizer = twin_tokenizer(shape.decoder.vocab_size, prompt_texts)
    dec_cfg = decoder_config(shape.decoder, tokenizer)
    log.info("building %s: about %.2f GiB of %s weights on %s", shape.name, need / 2**30, dtype, device)
    from transformers import AutoModelForCausalLM

    with torch.device(device):
        decoder = AutoModelForCausalLM.from_config(dec_cfg, dtype=torch_dtype)
        encoder = _encoder(shape.encoder, torch_dtype)
        pcfg = ProjectorConfig(kind="stack_mlp", in_dim=shape.encoder.d_model, out_dim=shape.decoder.hidden_size,
                               stack=shape.projector_k, hidden_dim=shape.projector_hidden, activation="relu")
        projector = build_projector(pcfg).to(torch_dtype)
    window = shape.encoder.max_source_positions / 50.0  # 50 Hz encoder frames
    spec = {
        "format_version": FORMAT_VERSION, "family": "slam", "prompts": prompts, "languages": langs,
        "source_language": "en", "features": FeatureSettings(n_mels=shape.encoder.n_mels).to_dict(),
        "projector": pcfg.to_dict(), "bos_position": "after_audio", "max_audio_seconds": window,
        "max_new_tokens": shape.max_new_tokens,
    }
    if shape.encoder.kind == HF_WHISPER:
        spec["encoder"] = {"kind": HF_WHISPER}
    model = SlamSpeechLLM(spec, tokenizer, encoder, projector, decoder)
    twin = {
        "shape": shape.name, "description": shape.description, "scaled_down": shape.scaled_down,
        "weights": f"random (torch.manual_seed({seed}), each architecture's own initialisation): the published "
                   "model's shape, not its weights",
        "decoder": {"published": shape.decoder.name, "source": shape.decoder.source,
                    "published_parameters": shape.decoder.published_parameters,
                    "config": dataclasses.asdict(shape.decoder)},
        "encoder": {"published": shape.encoder.name, "source": shape.encoder.source,
                    "config": dataclasses.asdict(shape.encoder)},
        "projector": {"source": PROJECTOR_SOURCE, "k": shape.projector_k, "hidden": shape.projector_hidden},
        "tokenizer": f"byte-level BPE on a few sentences, padded with filler tokens to {shape.decoder.vocab_size}",
    }
    prov = Provenance(produced_by="slimspeech twin", created=now(), parent=None, removed_layers=[],
                      root_decoder_layers=shape.decoder.num_hidden_layers,
                      extra={"twin": twin, "command": command}).describing(model)
    model.save(out, provenance=prov.to_dict())
    return out


# ---- CLI -----------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspeech twin", description=__doc__.splitlines()[0])
    p.add_argument("--shape", required=True, choices=sorted(SHAPES),
                   help="; ".join(f"{k}: {v.description}" for k, v in SHAPES.items()))
    p.add_argument("--out", required=True, metavar="DIR", help="the model dir to write (an existing one is replaced)")
    p.add_argument("--dtype", default=None, choices=DTYPES,
                   help="weights' dtype (default: float32 for the CPU-sized shape, bfloat16 for the GPU-sized one)")
    p.add_argument("--device", default="cpu", help="where the weights are initialised: cpu (default), cuda, cuda:N")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default 0)")
    p.add_argument("--scaled-down", action="store_true",
                   help="the same structure at a tiny size (4 layers, width 64): for trying the pipeline in seconds")
    return p


def main(argv: list[str]) -> int:
    from transformers.utils import logging as hf_logging

    args = build_parser().parse_args(argv)
    hf_logging.disable_progress_bar()
    shape = SHAPES[args.shape].scaled() if args.scaled_down else SHAPES[args.shape]
    out = build_twin(shape, args.out, dtype=args.dtype, device=args.device, seed=args.seed,
                     command="slimspeech twin " + shlex.join(argv))
    prov = json.loads((out / "provenance.json").read_text())
    print(f"twin {shape.name} -> {out}: {prov['parameters'] / 1e6:,.1f} M parameters, "
          f"{prov['weight_bytes'] / 2**30:.2f} GiB {prov['dtype']}, {prov['decoder_layers']} decoder layers")
    return 0
