"""``slimspeech import slam``: a SLAM-LLM checkpoint -> a ``slam`` model dir with an ``hf_whisper`` encoder.

    slimspeech import slam --encoder whisper-large-v3/ --llm vicuna-7b-v1.5/ \\
        --projector asr_epoch_1_step_1000/model.pt [--projector-k 5] [--lora ADAPTER_DIR] \\
        [--prompt-transcribe "Transcribe speech to text. "] [--languages fr,de] --out models/slam-asr

    from speechllm.importers.slam_parts import import_slam
    out = import_slam(encoder="whisper/", llm="vicuna/", projector="model.pt", out="models/slam-asr")

The parts, as SLAM-LLM publishes and trains them (github.com/X-LANCE/SLAM-LLM, read at a68e78f):

- encoder: a Hugging Face Whisper dir (config.json with model_type whisper, model.safetensors,
  preprocessor_config.json). SLAM-LLM itself loads openai-whisper ``.pt`` files
  (src/slam_llm/models/encoder.py WhisperWrappedEncoder; examples/asr_librispeech/scripts/
  decode_whisper_large_linear_vicuna_7b.sh: ``large-v3.pt``, ``encoder_dim=1280``, ``mel_size=128``);
  the same weights exist as HF dirs (openai/whisper-large-v3), or convert the ``.pt`` with the
  transformers repository's models/whisper/convert_openai_to_hf.py. Only the encoder is kept.
- projector: ``model.pt``, a ``torch.save`` of the trainable parameters of SLAM-LLM's model
  (src/slam_llm/utils/checkpoint_handler.py save_model_checkpoint_peft: names as in the model's
  state dict), so the linear projector (``encoder_projector=linear``, EncoderProjectorConcat in
  src/slam_llm/models/projector.py: k frames concatenated -> linear1 -> ReLU -> linear2, hidden 2048)
  is stored as ``encoder_projector.linear1.weight`` (2048, k * encoder_dim), ``.linear1.bias``,
  ``encoder_projector.linear2.weight`` (llm_dim, 2048), ``.linear2.bias``; k is
  ``encoder_projector_ds_rate`` (5 by default: examples/asr_librispeech/asr_config.py). We map those
  names onto ``stack_mlp`` (``mlp.0`` / ``mlp.2``, activation relu) and read every size from the shapes.
  With ``use_peft`` the same file also holds the LLM's LoRA tensors (``llm.base_model.model....lora_A.
  default.weight``) without their ``lora_alpha``; with an unfrozen encoder, ``encoder.*``: both refused
  with what to do.
- llm: a Hugging Face causal-LM dir with its tokenizer (vicuna-7b-v1.5, Llama, Qwen, ...).
- lora (optional): a PEFT adapter dir, as ``PeftModel.save_pretrained`` writes it: adapter_config.json
  (peft_type LORA, r, lora_alpha, target_modules, use_rslora, alpha_pattern, base_model_name_or_path)
  + adapter_model.safetensors (or adapter_model.bin), tensors ``base_model.model.<module>.lora_A.weight``
  (r, in) and ``.lora_B.weight`` (out, r). Merged into the LLM's weights: W += s * B @ A with
  s = lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), LoRA's update (Hu et al. 2021, eq. 3) with
  peft's scaling. The merge is done here, not with peft's ``merge_and_unload``, because the speechllm
  core does not import peft (tests/test_boundaries.py); tests/speechllm/test_import_slam.py checks the
  result against ``merge_and_unload``.
- prompt: SLAM-LLM's ASR dataset (src/slam_llm/datasets/speech_dataset.py) puts the audio embeddings
  first, then ``tokenizer.encode("USER: {prompt}\\n ASSISTANT:")`` (BOS included) with the prompt
  "Transcribe speech to text. " (the current file uses a longer one; both are that template). The
  default here is that, with ``bos_position: after_audio``. ``--prompt-transcribe`` replaces the
  instruction, or the whole template when it contains ``{audio}``. SLAM-LLM decodes with beam 4 and up
  to 200 new tokens (src/slam_llm/models/slam_model.py generate); slimspeech decodes greedily.

Everything is checked from configs and tensor headers first (shapes against a meta-device LLM), so a
refused import loads no weights. Output frames per clip of S samples: ceil(S/320) encoder frames, then
ceil(frames / k) audio tokens (speechllm.encoder, "hf_whisper").
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import SlimError
from ..provenance import Provenance, source_record
from . import AdapterMismatchError, ShapeMismatchError, SourceError, add_shared_options

log = logging.getLogger(__name__)

#: SLAM-LLM's slam_model attribute of the projector: the prefix of its names in model.pt
SLAM_PROJECTOR_PREFIX = "encoder_projector."
#: EncoderProjectorConcat's parameter names -> stack_mlp's
SLAM_PROJECTOR_NAMES = {"linear1.weight": "mlp.0.weight", "linear1.bias": "mlp.0.bias",
                        "linear2.weight": "mlp.2.weight", "linear2.bias": "mlp.2.bias"}
#: SLAM-LLM's other projectors (src/slam_llm/models/projector.py), recognised to name them in the refusal
OTHER_SLAM_PROJECTORS = {"conv1d.": "cov1d-linear (EncoderProjectorCov1d)",
                         "qformer.": "q-former (EncoderProjectorQFormer)",
                         "query": "q-former (EncoderProjectorQFormer)"}
#: speech_dataset.py's prompt_template; "{}" is the instruction
SLAM_PROMPT_TEMPLATE = "USER: {}\n ASSISTANT:"
DEFAULT_TRANSCRIBE = "Transcribe speech to text. "
#: ours: SLAM-LLM's linear ASR recipe has no translation prompt; {lang_name} is the target's name
DEFAULT_TRANSLATE = "Translate speech to {lang_name}. "
DEFAULT_MAX_NEW_TOKENS = 200  # SLAM-LLM's generate default
LANGUAGE_NAMES = {
    "en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian", "pt": "Portuguese",
    "nl": "Dutch", "ru": "Russian", "zh": "Chinese", "ja": "Japanese", "ko": "Korean", "ar": "Arabic",
    "ca": "Catalan", "et": "Estonian", "fa": "Persian", "id": "Indonesian", "lv": "Latvian", "mn": "Mongolian",
    "sl": "Slovenian", "sv": "Swedish", "ta": "Tamil", "tr": "Turkish", "cy": "Welsh", "pl": "Polish",
}
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json")
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


# ---------------------------------------------------------------------------------------------
# reading the sources (configs and tensors only)


def _need_dir(path: Path, flag: str, what: str) -> Path:
    if not path.exists():
        raise SourceError(f"{flag} {path}: no such directory (pass {what})", param=flag.lstrip("-"))
    if not path.is_dir():
        hint = (": an openai-whisper .pt must be converted to a Hugging Face Whisper dir first (the transformers "
                "repository's models/whisper/convert_openai_to_hf.py)" if flag == "--encoder" else "")
        raise SourceError(f"{flag} {path} is a file, not a directory (pass {what}){hint}", param=flag.lstrip("-"))
    return path


def _need_file(path: Path, flag: str, what: str) -> Path:
    if not path.is_file():
        raise SourceError(f"{path} is missing: {flag} needs {what}", param=flag.lstrip("-"))
    return path


def _need_one(d: Path, names: tuple[str, ...], flag: str, what: str) -> Path:
    for name in names:
        if (d / name).is_file():
            return d / name
    raise SourceError(f"{d} has no {what} ({' or '.join(names)} is missing)", param=flag.lstrip("-"))


def _read_json(path: Path, flag: str) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SourceError(f"{path} is not valid JSON ({exc})", param=flag.lstrip("-")) from None


def _load_tensors(path: Path, flag: str) -> dict[str, torch.Tensor]:
    """A state dict from a ``.safetensors`` file or a ``torch.save`` pickle (tensors only: weights_only)."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated file, a pickle of arbitrary objects, not a checkpoint at all
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise SourceError(f"cannot read {path} as a checkpoint ({reason})", param=flag.lstrip("-")) from None
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SourceError(f"{path} is not a state dict (a dict of tensor names to tensors)", param=flag.lstrip("-"))
    return obj


@dataclass
class WhisperSource:
    path: Path
    config: dict
    d_model: int
    layers: int
    n_mels: int
    preprocessor: dict


def read_config_dir(path, flag: str, what: str, accepts, takes: str) -> tuple[Path, dict]:
    """A source dir and its config.json (``what``: "a Hugging Face Whisper dir"); SourceError "unknown
    architecture: <config.json> has model_type ... (architectures)<takes>" unless ``accepts(config)``."""
    path = _need_dir(Path(path), flag, what)
    cfg = _read_json(_need_file(path / "config.json", flag, f"the config.json of {what}"), flag)
    if not accepts(cfg):
        raise SourceError(f"unknown architecture: {path / 'config.json'} has model_type {cfg.get('model_type')!r} "
                          f"({', '.join(cfg.get('architectures') or []) or 'no architectures'})"
                          f"{takes(cfg) if callable(takes) else takes}",
                          param=flag.lstrip("-"))
    return path, cfg


def read_whisper(path: Path) -> WhisperSource:
    path, cfg = read_config_dir(path, "--encoder", "a Hugging Face Whisper dir",
                                lambda c: c.get("model_type") == "whisper",
                                "; --encoder takes a Hugging Face Whisper dir (model_type whisper)")
    _need_one(path, WEIGHT_FILES, "--encoder", "weights")
    pre = _read_json(_need_file(path / "preprocessor_config.json", "--encoder",
                                "the Whisper feature extractor's preprocessor_config.json"), "--encoder")
    if pre.get("feature_extractor_type", "WhisperFeatureExtractor") != "WhisperFeatureExtractor":
        raise SourceError(f"unknown architecture: {path / 'preprocessor_config.json'} is a "
                          f"{pre.get('feature_extractor_type')}, not a WhisperFeatureExtractor", param="encoder")
    n_mels = int(cfg.get("num_mel_bins", 80))
    if int(pre.get("feature_size", n_mels)) != n_mels:
        raise ShapeMismatchError(f"{path}: the encoder takes {n_mels} mel bins but preprocessor_config.json makes "
                                 f"{pre.get('feature_size')}: they come from different Whisper checkpoints",
                                 param="encoder")
    return WhisperSource(path, cfg, int(cfg["d_model"]), int(cfg["encoder_layers"]), n_mels, pre)


@dataclass
class LLMSource:
    path: Path
    config: object  # transformers PretrainedConfig
    hidden: int
    layers: int
    architecture: str


def read_llm(path: Path) -> LLMSource:
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    # Whisper and T5 have causal-LM classes too (their decoders): an encoder-decoder is never a SLAM-LLM LLM
    path, raw = read_config_dir(path, "--llm", "a Hugging Face causal-LM dir",
                                lambda c: c.get("model_type") in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
                                and not c.get("is_encoder_decoder"),
                                ", which is not a decoder-only causal LM transformers knows (SLAM-LLM uses "
                                "Vicuna/Llama, Qwen, ...)")
    model_type = raw.get("model_type")
    _need_one(path, WEIGHT_FILES, "--llm", "weights")
    _need_one(path, TOKENIZER_FILES, "--llm", "tokenizer")
    config = AutoConfig.from_pretrained(path)
    text = config.get_text_config(decoder=True)
    return LLMSource(path, config, int(text.hidden_size), int(text.num_hidden_layers),
                     (raw.get("architectures") or [MODEL_FOR_CAUSAL_LM_MAPPING_NAMES[model_type]])[0])


@dataclass
class ProjectorSource:
    path: Path
    state: dict[str, torch.Tensor]  # stack_mlp names
    in_dim: int  # k * encoder width
    hidden: int
    out_dim: int


def read_projector(path: Path) -> ProjectorSource:
    path = _need_file(Path(path), "--projector", "SLAM-LLM's projector checkpoint (model.pt)")
    raw = _load_tensors(path, "--projector")
    # a projector's own state dict saved alone has no prefix; SLAM-LLM's model.pt has encoder_projector.
    prefix = SLAM_PROJECTOR_PREFIX if any(k.startswith(SLAM_PROJECTOR_PREFIX) for k in raw) else ""
    llm_keys = [k for k in raw if k.startswith("llm.")]
    if any("lora_" in k for k in llm_keys):
        raise SourceError(f"{path} also holds the LLM's LoRA weights ({len(llm_keys)} tensors, e.g. {llm_keys[0]}), "
                          "saved by SLAM-LLM with use_peft but without their lora_alpha: save the LLM's adapter as a "
                          "PEFT dir (PeftModel.save_pretrained) and pass it with --lora, and a model.pt with the "
                          "projector alone", param="projector")
    if llm_keys:
        raise SourceError(f"{path} holds fine-tuned LLM weights ({len(llm_keys)} tensors, e.g. {llm_keys[0]}): save "
                          "the fine-tuned LLM as a Hugging Face dir and pass it with --llm, and a model.pt with the "
                          "projector alone", param="projector")
    enc_keys = [k for k in raw if k.startswith("encoder.")]
    if enc_keys:
        raise SourceError(f"{path} holds fine-tuned encoder weights ({len(enc_keys)} tensors, e.g. {enc_keys[0]}): "
                          "save the fine-tuned Whisper encoder as a Hugging Face dir and pass it with --encoder",
                          param="projector")
    ours = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
    if set(ours) != set(SLAM_PROJECTOR_NAMES):
        kind = next((name for mark, name in OTHER_SLAM_PROJECTORS.items() if any(k.startswith(mark) for k in ours)),
                    None)
        found = ", ".join(sorted(raw)[:6]) + (", ..." if len(raw) > 6 else "")
        what = f"SLAM-LLM's {kind} projector" if kind else f"tensors {found}"
        names = ", ".join(SLAM_PROJECTOR_PREFIX + n for n in SLAM_PROJECTOR_NAMES)
        raise SourceError(f"unknown architecture: {path} holds {what}; slimspeech imports SLAM-LLM's linear projector "
                          f"(encoder_projector=linear: {names})", param="projector")
    w1, b1, w2, b2 = (ours[n] for n in SLAM_PROJECTOR_NAMES)
    if w1.dim() != 2 or w2.dim() != 2 or b1.shape != (w1.shape[0],) or b2.shape != (w2.shape[0],) \
            or w2.shape[1] != w1.shape[0]:
        raise SourceError(f"{path}: the projector's shapes do not chain (linear1 {tuple(w1.shape)} + "
                          f"{tuple(b1.shape)}, linear2 {tuple(w2.shape)} + {tuple(b2.shape)}): the checkpoint is "
                          "damaged", param="projector")
    state = {SLAM_PROJECTOR_NAMES[n]: t for n, t in ours.items()}
    return ProjectorSource(path, state, int(w1.shape[1]), int(w1.shape[0]), int(w2.shape[0]))


def check_projector(proj: ProjectorSource, enc: WhisperSource, llm: LLMSource, k: int | None) -> int:
    """-> k (frames per audio token); a clear error when the projector does not sit between these two."""
    if proj.out_dim != llm.hidden:
        raise ShapeMismatchError(f"projector output {proj.out_dim} != the LLM's hidden size {llm.hidden} "
                                 f"({proj.path} vs {llm.path / 'config.json'}): the projector was trained for another "
                                 "LLM", param="projector")
    if k is None:
        if proj.in_dim % enc.d_model:
            raise ShapeMismatchError(f"projector input {proj.in_dim} is not a multiple of the encoder width "
                                     f"{enc.d_model} ({proj.path} vs {enc.path / 'config.json'}): the projector was "
                                     "trained on another encoder", param="projector")
        return proj.in_dim // enc.d_model
    if k < 1:
        raise SlimError(f"--projector-k must be at least 1, got {k}", param="projector-k")
    if proj.in_dim != enc.d_model * k:
        hint = (f": the checkpoint stacks {proj.in_dim // enc.d_model} frames (--projector-k "
                f"{proj.in_dim // enc.d_model})" if proj.in_dim % enc.d_model == 0 else
                ": the projector was trained on another encoder")
        raise ShapeMismatchError(f"projector input {proj.in_dim} != encoder width {enc.d_model} x k {k} = "
                                 f"{enc.d_model * k} ({proj.path} vs {enc.path / 'config.json'}){hint}",
                                 param="projector-k")
    return k


@dataclass
class LoRAModule:
    name: str  # module name inside the causal LM, e.g. model.layers.0.self_attn.q_proj
    A: torch.Tensor  # (r, in)
    B: torch.Tensor  # (out, r)
    scaling: float


@dataclass
class AdapterSource:
    path: Path
    config: dict
    modules: list[LoRAModule] = field(default_factory=list)


def _pattern_value(patterns: dict, name: str, default):
    """peft's rank/alpha patterns: a key matches a module whose name ends with it (as a regex, after a dot)."""
    for pattern, value in (patterns or {}).items():
        if re.fullmatch(rf"(.*\.)?(?:{pattern})", name):
            return value
    return default


def read_adapter(path: Path) -> AdapterSource:
    path = _need_dir(Path(path), "--lora", "a PEFT LoRA adapter dir")
    cfg = _read_json(_need_file(path / "adapter_config.json", "--lora", "a PEFT adapter_config.json"), "--lora")
    weights = _need_one(path, ADAPTER_WEIGHTS, "--lora", "adapter weights")
    if cfg.get("peft_type") != "LORA":
        raise SourceError(f"unknown architecture: {path / 'adapter_config.json'} is a {cfg.get('peft_type')!r} "
                          "adapter; slimspeech merges LoRA adapters only", param="lora")
    flags = (("use_dora", cfg.get("use_dora")), ("fan_in_fan_out", cfg.get("fan_in_fan_out")),
             ("lora_bias", cfg.get("lora_bias")), ("bias", cfg.get("bias", "none") != "none"),
             ("modules_to_save", cfg.get("modules_to_save")), ("layer_replication", cfg.get("layer_replication")))
    unsupported = [name for name, bad in flags if bad]
    if unsupported:
        raise SourceError(f"{path / 'adapter_config.json'} sets {', '.join(unsupported)}: slimspeech merges plain LoRA "
                          "on Linear layers only (merge it with peft's merge_and_unload and pass the merged LLM as "
                          "--llm)", param="lora")
    tensors = _load_tensors(weights, "--lora")
    pairs: dict[str, dict[str, torch.Tensor]] = {}
    for key, t in tensors.items():
        m = re.fullmatch(r"base_model\.model\.(.+)\.lora_([AB])(?:\.default)?\.weight", key)
        if m is None:
            raise SourceError(f"{weights} holds {key}, which is not a LoRA A/B weight of a Linear layer: slimspeech "
                              "merges plain LoRA adapters only", param="lora")
        pairs.setdefault(m.group(1), {})[m.group(2)] = t
    if not pairs:
        raise SourceError(f"{weights} holds no LoRA weights", param="lora")
    alpha = float(cfg.get("lora_alpha", 8))
    modules = []
    for name, ab in sorted(pairs.items()):
        if set(ab) != {"A", "B"} or ab["A"].dim() != 2 or ab["B"].dim() != 2 or ab["A"].shape[0] != ab["B"].shape[1]:
            raise SourceError(f"{weights}: the LoRA pair of {name} is incomplete or its ranks differ", param="lora")
        r = int(ab["A"].shape[0])
        a = float(_pattern_value(cfg.get("alpha_pattern"), name, alpha))
        scaling = a / math.sqrt(r) if cfg.get("use_rslora") else a / r
        modules.append(LoRAModule(name, ab["A"], ab["B"], scaling))
    return AdapterSource(path, cfg, modules)


def check_adapter(adapter: AdapterSource, llm_model: torch.nn.Module, llm: LLMSource) -> None:
    """Every LoRA pair must sit on a Linear of this LLM with the same in/out sizes (``llm_model`` may be on the
    meta device: only names and shapes are read)."""
    named = dict(llm_model.named_modules())
    base = adapter.config.get("base_model_name_or_path")
    for mod in adapter.modules:
        target = named.get(mod.name)
        if not isinstance(target, torch.nn.Linear):
            what = "which this LLM does not have" if target is None else f"which is a {type(target).__name__} here"
            detail = f"it targets {mod.name}, {what} ({llm.architecture}, {llm.layers} layers)"
        elif (target.out_features, target.in_features) != (mod.B.shape[0], mod.A.shape[1]):
            detail = (f"{mod.name} maps {target.in_features} -> {target.out_features} in the LLM but "
                      f"{mod.A.shape[1]} -> {mod.B.shape[0]} in the adapter")
        else:
            continue
        raise AdapterMismatchError(f"LoRA adapter {adapter.path} is for another base model than --llm {llm.path}: "
                                   f"{detail}; the adapter names its base {base!r}: pass that LLM as --llm")


@torch.no_grad()
def merge_lora(llm_model: torch.nn.Module, adapter: AdapterSource) -> int:
    """W <- W + scaling * B @ A on every targeted Linear, computed in float32 and stored in W's dtype; -> count."""
    named = dict(llm_model.named_modules())
    for mod in adapter.modules:
        w = named[mod.name].weight
        delta = (mod.B.float() @ mod.A.float()) * mod.scaling
        w.copy_((w.float() + delta.to(w.device)).to(w.dtype))
    return len(adapter.modules)


# ---------------------------------------------------------------------------------------------
# prompts and languages


def parse_languages(text: str | None) -> dict[str, str]:
    """``"fr,de"`` or ``"fr=French,xx=Name"`` -> {code: name}."""
    out: dict[str, str] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        code, sep, name = part.partition("=")
        code = code.strip().lower()
        name = name.strip() if sep else LANGUAGE_NAMES.get(code, "")
        if not name:
            raise SlimError(f"unknown language code {code!r}: give its name, e.g. --languages {code}=Name",
                            param="languages")
        out[code] = name
    return out


def prompt_template(text: str) -> str:
    """An instruction -> SLAM-LLM's prompt with the audio first; a text holding ``{audio}`` is a whole template."""
    if "{audio}" in text:
        return text
    return "{audio}" + SLAM_PROMPT_TEMPLATE.replace("{}", text)


def _command(encoder, llm, projector, out, k, lora, prompt_transcribe, prompt_translate, languages,
             source_language, max_new_tokens, dtype) -> str:
    args = ["--encoder", str(encoder), "--llm", str(llm), "--projector", str(projector)]
    for flag, value in (("--projector-k", k), ("--lora", lora), ("--prompt-transcribe", prompt_transcribe),
                        ("--prompt-translate", prompt_translate), ("--languages", languages),
                        ("--source-language", source_language if source_language != "en" else None),
                        ("--max-new-tokens", max_new_tokens if max_new_tokens != DEFAULT_MAX_NEW_TOKENS else None),
                        ("--dtype", dtype if dtype != "auto" else None)):
        if value is not None:
            args += [flag, str(value)]
    return "slimspeech import slam " + shlex.join(args + ["--out", str(out)])


# ---------------------------------------------------------------------------------------------
# the import


def import_slam(encoder, llm, projector, out, *, projector_k: int | None = None, lora=None,
                prompt_transcribe: str | None = None, prompt_translate: str | None = None,
                languages: str | dict | None = None, source_language: str = "en",
                max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS, dtype: str = "auto", command: str | None = None) -> Path:
    """Import a SLAM-LLM checkpoint into the slam model dir ``out``; -> ``out``.

    ``projector_k``: frames per audio token (default: read from the shapes, projector input / encoder width);
    ``lora``: a PEFT LoRA adapter dir, merged into the LLM; ``prompt_*``: an instruction (put into SLAM-LLM's
    "USER: ...\\n ASSISTANT:" after the audio) or a whole template with ``{audio}`` (and ``{lang}`` /
    ``{lang_name}``); ``languages``: "fr,de" or {code: name}, the translation targets (a translate prompt only
    when given); ``dtype``: auto keeps each part's stored dtype. Raises SourceError / ShapeMismatchError /
    AdapterMismatchError before loading any weight when the sources do not fit.
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer, WhisperFeatureExtractor, WhisperModel
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from ..audio import FeatureSettings
    from ..encoder import HF_WHISPER, HFWhisperEncoder
    from ..families.slam import SlamSpeechLLM
    from ..modeldir import FORMAT_VERSION, SPEC_FILE
    from ..projector import ProjectorConfig, build_projector
    from ..tasks import PromptBook

    if dtype != "auto" and dtype not in DTYPES:
        raise SlimError(f"unknown --dtype {dtype!r}: choose auto, {', '.join(DTYPES)}", param="dtype")
    if command is None:
        command = _command(encoder, llm, projector, out, projector_k, lora, prompt_transcribe, prompt_translate,
                           languages if isinstance(languages, (str, type(None))) else
                           ",".join(f"{c}={n}" for c, n in languages.items()),
                           source_language, max_new_tokens, dtype)
    out_path = Path(out)
    # the save replaces the dir at --out: never a folder that is not a model dir (a typo like --out .)
    if out_path.exists() and not (out_path / SPEC_FILE).is_file() and any(out_path.iterdir()):
        raise SlimError(f"--out {out_path} exists and is not a slimspeech model dir: choose a new path (an existing "
                        "model dir is replaced)", param="out")
    # 1. every config and header, and whether the parts fit, before any weight is loaded
    enc_src = read_whisper(Path(encoder))
    llm_src = read_llm(Path(llm))
    proj_src = read_projector(Path(projector))
    k = check_projector(proj_src, enc_src, llm_src, projector_k)
    adapter = read_adapter(Path(lora)) if lora is not None else None
    if adapter is not None:
        with torch.device("meta"):
            check_adapter(adapter, AutoModelForCausalLM.from_config(llm_src.config), llm_src)
    langs = languages if isinstance(languages, dict) else parse_languages(languages)
    prompts = {"transcribe": prompt_template(prompt_transcribe or DEFAULT_TRANSCRIBE)}
    if langs:
        prompts["translate"] = prompt_template(prompt_translate or DEFAULT_TRANSLATE)
    elif prompt_translate:
        raise SlimError("--prompt-translate needs --languages (the target languages)", param="languages")
    PromptBook(prompts, langs, source_language)  # a template without {audio} (or with two) fails here

    # 2. the parts
    torch_dtype = "auto" if dtype == "auto" else DTYPES[dtype]
    log.info("loading the Whisper encoder from %s", enc_src.path)
    if "WhisperEncoder" in (enc_src.config.get("architectures") or []):
        whisper = WhisperEncoder.from_pretrained(enc_src.path, dtype=torch_dtype)
    else:  # a whole Whisper checkpoint (as published): its decoder is not part of a SpeechLLM
        whisper = WhisperModel.from_pretrained(enc_src.path, dtype=torch_dtype).get_encoder()
    enc = HFWhisperEncoder(whisper, WhisperFeatureExtractor.from_pretrained(enc_src.path))
    log.info("loading the LLM from %s", llm_src.path)
    tokenizer = AutoTokenizer.from_pretrained(llm_src.path)
    decoder = AutoModelForCausalLM.from_pretrained(llm_src.path, dtype=torch_dtype)
    if not hasattr(decoder.get_decoder(), "layers"):
        raise SourceError(f"unknown architecture: {llm_src.architecture} has no decoder layer list (.layers), which "
                          "slimspeech's layer surgery needs", param="llm")
    merged = 0
    if adapter is not None:
        merged = merge_lora(decoder, adapter)
        log.info("merged LoRA %s into %d modules", adapter.path, merged)
    pcfg = ProjectorConfig(kind="stack_mlp", in_dim=enc_src.d_model, out_dim=proj_src.out_dim, stack=k,
                           hidden_dim=proj_src.hidden, activation="relu")
    proj = build_projector(pcfg)
    proj.load_state_dict(proj_src.state)
    proj_dtype = next(iter(proj_src.state.values())).dtype if dtype == "auto" else DTYPES[dtype]
    proj.to(proj_dtype)

    # 3. the model dir
    fe = enc.feature_extractor
    spec = {
        "format_version": FORMAT_VERSION, "family": "slam",
        "prompts": prompts, "languages": langs, "source_language": source_language,
        "features": FeatureSettings(sample_rate=fe.sampling_rate, n_mels=fe.feature_size, n_fft=fe.n_fft,
                                    hop_length=fe.hop_length).to_dict(),
        "encoder": {"kind": HF_WHISPER},
        "projector": pcfg.to_dict(),
        "bos_position": "after_audio",
        "max_audio_seconds": enc.window_seconds,
        "max_new_tokens": int(max_new_tokens),
    }
    sources = {"encoder": source_record(enc_src.path), "llm": source_record(llm_src.path),
               "projector": source_record(proj_src.path)}
    if adapter is not None:
        sources["lora"] = {**source_record(adapter.path), "merged_modules": merged,
                           **{key: adapter.config.get(key) for key in
                              ("base_model_name_or_path", "r", "lora_alpha", "use_rslora", "target_modules")}}
    source_format = {
        "encoder": f"Hugging Face Whisper ({enc_src.layers} layers, d_model {enc_src.d_model}, "
                   f"{enc_src.n_mels} mel bins), encoder kept",
        "projector": f"SLAM-LLM EncoderProjectorConcat (encoder_projector=linear), k={k}: "
                     f"{proj_src.in_dim} -> {proj_src.hidden} -> {proj_src.out_dim}",
        "llm": f"{llm_src.architecture} ({llm_src.layers} layers, hidden {llm_src.hidden})"
               + (f", LoRA merged into {merged} modules" if merged else ""),
    }
    model = SlamSpeechLLM(spec, tokenizer, enc, proj, decoder)
    provenance = Provenance.imported("slam", model, command=command, sources=sources, source_format=source_format)
    model.save(out, provenance=provenance.to_dict())
    log.info("wrote %s", out)
    return Path(out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspeech import slam",
                                description="Import a SLAM-LLM checkpoint (Hugging Face Whisper encoder + linear "
                                            "projector model.pt + causal LM, optionally a PEFT LoRA merged in) as a "
                                            "slam model dir.")
    p.add_argument("--encoder", required=True, metavar="WHISPER_DIR",
                   help="Hugging Face Whisper dir (config.json, weights, preprocessor_config.json)")
    p.add_argument("--llm", required=True, metavar="CAUSAL_LM_DIR",
                   help="Hugging Face causal-LM dir with its tokenizer")
    p.add_argument("--projector", required=True, metavar="PROJECTOR_CKPT",
                   help="SLAM-LLM's model.pt holding encoder_projector.linear1/linear2 (or a .safetensors)")
    p.add_argument("--projector-k", type=int, default=None, metavar="K",
                   help="encoder frames per audio token (SLAM-LLM's encoder_projector_ds_rate); "
                        "default: from the shapes")
    p.add_argument("--lora", default=None, metavar="ADAPTER_DIR", help="PEFT LoRA adapter of the LLM, merged in")
    add_shared_options(p, transcribe_help=f"instruction (default {DEFAULT_TRANSCRIBE!r}, inside "
                                          f"{SLAM_PROMPT_TEMPLATE!r} after the audio) or a whole template with "
                                          "{audio}",
                       translate_help=f"the same for translate (default {DEFAULT_TRANSLATE!r}; {{lang}}, "
                                      "{lang_name}: the target)",
                       max_new_tokens=DEFAULT_MAX_NEW_TOKENS, dtypes=tuple(DTYPES),
                       dtype_help="auto: each part as stored")
    return p


def main(argv: list[str]) -> int:
    from transformers.utils import logging as hf_logging

    args = build_parser().parse_args(argv)
    hf_logging.disable_progress_bar()  # the verb prints one result line
    out = import_slam(args.encoder, args.llm, args.projector, args.out, projector_k=args.projector_k, lora=args.lora,
                      prompt_transcribe=args.prompt_transcribe, prompt_translate=args.prompt_translate,
                      languages=args.languages, source_language=args.source_language,
                      max_new_tokens=args.max_new_tokens, dtype=args.dtype,
                      command="slimspeech import slam " + shlex.join(argv))
    fmt = Provenance.read(out).extra["source_format"]
    print(f"imported SLAM-LLM -> {out}: {fmt['encoder']}; projector {fmt['projector']}; {fmt['llm']}")
    return 0
