"""``slimspeech import slam`` on a scaled-down SLAM-LLM replica (speechllm.builders.slam_llm_replica: a
Hugging Face Whisper dir, a Llama dir with its tokenizer, SLAM-LLM's model.pt, a PEFT LoRA dir; random
weights, the published layouts), then the imported model dir through load_model, transcription, the
SLAM-LLM reference computation, peft's own merge, layer surgery, and every refusal.

    .venv/bin/python -m pytest -q tests/speechllm/test_import_slam.py
"""

import copy
import hashlib
import json
import math
import shutil

import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from speechllm import cli
from speechllm.audio import load_audio
from speechllm.builders import (slam_llm_replica, slam_projector_checkpoint, tiny_hf_whisper_dir, tiny_llm_dir,
                                tiny_lora_adapter_dir)
from speechllm.errors import ModelDirError, SlimError
from speechllm.generate import greedy_generate, transcribe
from speechllm.importers import import_slam
from speechllm.importers.slam_parts import merge_lora, parse_languages, prompt_template, read_adapter
from speechllm.modeldir import load_model
from speechllm.provenance import Provenance
from speechllm.surgery import remove_decoder_layers, skip_layers
from speechllm.tasks import Task
from tests.conftest import assert_refused, run_slimspeech

K = 5  # the replica's frames per audio token (SLAM-LLM's default encoder_projector_ds_rate)
TASKS = [Task("transcribe"), Task("translate", "fr"), Task("translate", "de")]


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    return slam_llm_replica(tmp_path_factory.mktemp("slam-src"), k=K)


@pytest.fixture(scope="module")
def cli_import(sources, tmp_path_factory):
    """The verb, once: the replica with its LoRA and two translation targets (in-process; the console script runs
    in tests/test_bring_your_own.py)."""
    out = tmp_path_factory.mktemp("imported") / "slam-asr"
    return run_slimspeech("import", "slam", "--encoder", sources["encoder"], "--llm", sources["llm"],
                          "--projector", sources["projector"], "--lora", sources["lora"], "--languages", "fr,de",
                          "--max-new-tokens", "8", "--out", out), out


@pytest.fixture(scope="module")
def model(cli_import):
    proc, out = cli_import
    assert proc.returncode == 0, proc.stderr
    return load_model(out)


def test_cli_import_writes_a_self_describing_model_dir(cli_import, sources):
    proc, out = cli_import
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith(f"imported SLAM-LLM -> {out}") and len(proc.stdout.splitlines()) == 1
    assert "Traceback" not in proc.stderr
    spec = json.loads((out / "speechllm.json").read_text())
    assert spec["encoder"] == {"kind": "hf_whisper"} and spec["bos_position"] == "after_audio"
    # the projector's config comes from the checkpoint's shapes: linear1 (128, 5 x 64), linear2 (32, 128)
    assert spec["projector"] == {"kind": "stack_mlp", "in_dim": 64, "out_dim": 32, "stack": K, "hidden_dim": 128,
                                 "vocab_size": None, "activation": "relu"}
    assert spec["features"]["n_mels"] == 80 and spec["max_audio_seconds"] == 30.0
    assert spec["prompts"]["transcribe"] == "{audio}USER: Transcribe speech to text. \n ASSISTANT:"
    assert spec["languages"] == {"fr": "French", "de": "German"}
    prov = Provenance.read(out)
    assert prov.produced_by == "slimspeech import slam" and prov.decoder_layers == prov.root_decoder_layers == 4
    assert prov.parent is None and prov.removed_layers == [] and prov.fingerprint and prov.parameters
    command = prov.extra["command"]
    assert command.startswith("slimspeech import slam --encoder ") and "--lora" in command
    src = prov.extra["sources"]
    assert src["projector"]["sha256"] == hashlib.sha256(sources["projector"].read_bytes()).hexdigest()
    assert src["llm"]["files"]["model.safetensors"] == \
        hashlib.sha256((sources["llm"] / "model.safetensors").read_bytes()).hexdigest()
    assert src["lora"]["merged_modules"] == 8  # q_proj and v_proj of 4 layers
    assert src["lora"]["base_model_name_or_path"] == str(sources["llm"])
    # only Whisper's encoder is kept, with the feature extractor
    assert json.loads((out / "encoder" / "config.json").read_text())["architectures"] == ["WhisperEncoder"]
    assert (out / "encoder" / "preprocessor_config.json").is_file()


def test_espeak_clips_batch_equals_one_by_one(model, speech_files):
    wavs = [load_audio(f) for f in speech_files]
    # audio tokens per clip: ceil(S / 320) encoder frames, k of them per token; the BOS follows the audio
    tasks = model.resolve_tasks(TASKS)
    prompts, _ = model.embed_prompts(tasks, wavs)
    for wav, task, p in zip(wavs, tasks, prompts):
        before, after = model.prompt_ids(task)
        assert before == [] and after[0] == model.tokenizer.bos_token_id
        assert p.shape[0] == len(after) + math.ceil(math.ceil(len(wav) / 320) / K)
    batch_inputs = model.embed(TASKS, wavs)
    batch = greedy_generate(model, batch_inputs, max_new_tokens=8)
    single = [greedy_generate(model, model.embed([t], [w]), max_new_tokens=8)[0] for t, w in zip(TASKS, wavs)]
    assert batch == single
    assert all(len(ids) == 8 for ids in batch)  # random weights: nothing stops early
    assert len({tuple(ids) for ids in batch}) > 1 or len({p.shape[0] for p in prompts}) > 1
    assert transcribe(model, wavs, TASKS) == [transcribe(model, [w], t)[0] for w, t in zip(wavs, TASKS)]


def test_audio_tokens_equal_slam_llms_own_computation(model, sources, speech_files):
    """SLAM-LLM's way, from the raw sources: whisper.pad_or_trim to 30 s -> log-mel -> the whole Whisper
    encoder (1500 frames) -> EncoderProjectorConcat (frames reshaped k at a time, linear1, ReLU, linear2 from
    model.pt's own tensors). Every audio token made of real frames only must be the imported model's."""
    from transformers import WhisperFeatureExtractor, WhisperModel

    fe = WhisperFeatureExtractor.from_pretrained(sources["encoder"])
    whisper = WhisperModel.from_pretrained(sources["encoder"]).get_encoder().eval()
    sd = torch.load(sources["projector"], weights_only=True)
    wav = load_audio(speech_files[0])
    # 35 encoder frames (7 whole tokens); 11,300 samples: 71 mel frames (odd) -> 36 encoder frames, 8 tokens
    clips = [wav, wav[: 320 * K * 7], wav[: 320 * K * 7 + 100]]
    feats, lengths = model.features(clips)
    assert feats.shape == (3, 80, 3000)
    with torch.no_grad():
        emb, n_tokens, _, enc_lengths = model.encode(feats, lengths)
        for i, clip in enumerate(clips):
            x = fe(clip, sampling_rate=16000, return_tensors="pt").input_features
            h = whisper(x).last_hidden_state  # (1, 1500, 64)
            B, T, D = h.shape
            stacked = h[:, : T - T % K].reshape(B, T // K, D * K)
            ref = F.linear(F.relu(F.linear(stacked, sd["encoder_projector.linear1.weight"],
                                           sd["encoder_projector.linear1.bias"])),
                           sd["encoder_projector.linear2.weight"], sd["encoder_projector.linear2.bias"])[0]
            frames = math.ceil(len(clip) / 320)
            assert int(enc_lengths[i]) == frames and int(n_tokens[i]) == math.ceil(frames / K)
            whole = frames // K
            assert torch.allclose(emb[i, :whole], ref[:whole], atol=1e-5), i
    assert int(n_tokens[1]) == 7 and int(n_tokens[2]) == 8


def test_lora_merge_equals_peft_merge_and_unload(model, sources):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    ids = torch.tensor([[0, 5, 17, 42, 99, 7, 3]])
    base = AutoModelForCausalLM.from_pretrained(sources["llm"]).eval()
    with torch.no_grad():
        plain = base(input_ids=ids).logits
        merged = PeftModel.from_pretrained(base, sources["lora"]).merge_and_unload().eval()
        ref = merged(input_ids=ids).logits
        ours = model.decoder(input_ids=ids).logits
    assert not torch.allclose(plain, ref, atol=1e-3)  # the adapter changes the LLM (peft read the builder's dir)
    assert torch.allclose(ours, ref, atol=1e-5)


def test_merge_reads_what_peft_writes(tmp_path, sources):
    """An adapter written by peft itself, with rsLoRA scaling and a per-module alpha."""
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    cfg = LoraConfig(r=4, lora_alpha=16, use_rslora=True, alpha_pattern={"down_proj": 4},
                     target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    peft_model = get_peft_model(AutoModelForCausalLM.from_pretrained(sources["llm"]), cfg)
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:  # trained adapters have B != 0 (peft starts it at zero)
            torch.nn.init.normal_(p, std=0.1)
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[0, 9, 4, 31, 8]])
    with torch.no_grad():
        ref = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(sources["llm"]), tmp_path / "adapter") \
            .merge_and_unload().eval()(input_ids=ids).logits
        ours = AutoModelForCausalLM.from_pretrained(sources["llm"]).eval()
        assert merge_lora(ours, read_adapter(tmp_path / "adapter")) == 4 * 7
        assert torch.allclose(ours(input_ids=ids).logits, ref, atol=1e-5)


def test_surgery_equivalence_holds_for_an_imported_model(model, speech_files, tmp_path):
    # healing's LoRA goes on the decoder only, never on the Whisper encoder's q/k/v_proj of the same names
    targets = model.lora_target_modules()
    assert len(targets) == 4 * 7 and all(t.startswith("decoder.") for t in targets)
    wavs = [load_audio(f) for f in speech_files]
    inputs = model.embed(TASKS, wavs)

    def logits(m, x):
        with torch.no_grad():
            return m.lm(inputs_embeds=x.inputs_embeds, attention_mask=x.attention_mask,
                        position_ids=x.position_ids).logits

    with skip_layers(model, [1, 2]):
        ref = logits(model, inputs)
        ref_tokens = greedy_generate(model, inputs, max_new_tokens=6)
    assert not torch.allclose(logits(model, inputs), ref, atol=1e-3)
    pruned = copy.deepcopy(model)
    assert remove_decoder_layers(pruned, [1, 2]) == [0, 3]
    assert torch.allclose(logits(pruned, inputs), ref, atol=1e-5)
    assert greedy_generate(pruned, inputs, max_new_tokens=6) == ref_tokens
    pruned.save(tmp_path / "pruned")
    reloaded = load_model(tmp_path / "pruned")
    assert reloaded.spec["encoder"] == {"kind": "hf_whisper"} and reloaded.num_decoder_layers == 2
    again = reloaded.embed(TASKS, wavs)
    assert torch.allclose(logits(reloaded, again), ref, atol=1e-5)


def test_128_mel_bins_custom_prompt_and_transcription_only(tmp_path):
    """A large-v3-style encoder (128 mel bins), the projector's k read from the shapes, a custom template."""
    enc = tiny_hf_whisper_dir(tmp_path / "whisper-v3", n_mels=128, seed=3)
    llm = tiny_llm_dir(tmp_path / "qwen", "qwen2", seed=3)
    proj = slam_projector_checkpoint(tmp_path / "model.pt", encoder_dim=64, llm_dim=32, k=2, seed=3)
    out = import_slam(enc, llm, proj, tmp_path / "m", prompt_transcribe="<|en|>{audio}<|transcribe|>",
                      max_new_tokens=4)
    model = load_model(out)
    assert model.spec["projector"]["stack"] == 2 and model.spec["features"]["n_mels"] == 128
    assert model.prompts.supported() == ["transcribe"]
    assert model.spec["prompts"]["transcribe"] == "<|en|>{audio}<|transcribe|>"
    wav = (0.1 * torch.randn(16000 * 2 + 123, generator=torch.Generator().manual_seed(0))).numpy()
    feats, lengths = model.features([wav])
    assert feats.shape == (1, 128, 3000) and int(lengths[0]) == math.ceil(len(wav) / 160)
    inputs = model.embed([Task()], [wav])
    before, after = model.prompt_ids(Task())
    assert inputs.inputs_embeds.shape[1] == len(before) + len(after) + math.ceil(math.ceil(len(wav) / 320) / 2)
    assert len(transcribe(model, [wav])) == 1


def test_a_spec_that_hides_the_whisper_encoder_is_refused(cli_import, tmp_path):
    _, out = cli_import
    bad = tmp_path / "bad"
    shutil.copytree(out, bad)
    spec = json.loads((bad / "speechllm.json").read_text())
    del spec["encoder"]
    (bad / "speechllm.json").write_text(json.dumps(spec))
    with pytest.raises(ModelDirError, match='add "encoder": {"kind": "hf_whisper"}'):
        load_model(bad)


def test_prompts_and_languages():
    assert prompt_template("Transcribe speech to text. ") == "{audio}USER: Transcribe speech to text. \n ASSISTANT:"
    assert prompt_template("{audio} say {lang_name}") == "{audio} say {lang_name}"
    assert parse_languages("fr, DE,xx=Klingon") == {"fr": "French", "de": "German", "xx": "Klingon"}
    assert parse_languages(None) == {}


# ---- refusals: one `error:` line, exit 2, nothing written ------------------------------------------------


def _refusal(case, sources, tmp_path):
    """-> (argv after `import slam`, the text the one error line must contain)."""
    src = {k: str(v) for k, v in sources.items()}
    if case == "missing_preprocessor":
        enc = tmp_path / "whisper"
        shutil.copytree(sources["encoder"], enc)
        (enc / "preprocessor_config.json").unlink()
        src["encoder"] = str(enc)
        want = f"{enc / 'preprocessor_config.json'} is missing"
    elif case == "missing_projector":
        src["projector"] = str(tmp_path / "nope" / "model.pt")
        want = f"{tmp_path / 'nope' / 'model.pt'} is missing"
    elif case == "missing_adapter_weights":
        lora = tmp_path / "lora"
        shutil.copytree(sources["lora"], lora)
        (lora / "adapter_model.safetensors").unlink()
        src["lora"] = str(lora)
        want = "adapter_model.safetensors or adapter_model.bin is missing"
    elif case == "llm_is_not_a_causal_lm":
        src["llm"] = src["encoder"]
        want = "unknown architecture: " + str(sources["encoder"] / "config.json") + " has model_type 'whisper'"
    elif case == "encoder_is_not_whisper":
        src["encoder"] = src["llm"]
        want = "unknown architecture: " + str(sources["llm"] / "config.json") + " has model_type 'llama'"
    elif case == "cov1d_projector":
        bad = tmp_path / "model.pt"
        torch.save({"encoder_projector.conv1d.weight": torch.zeros(64, 64, 5),
                    "encoder_projector.linear1.weight": torch.zeros(128, 64)}, bad)
        src["projector"] = str(bad)
        want = "SLAM-LLM's cov1d-linear (EncoderProjectorCov1d) projector"
    elif case == "lora_inside_model_pt":
        bad = slam_projector_checkpoint(tmp_path / "model.pt", encoder_dim=64, llm_dim=32, k=K, extra={
            "llm.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight": torch.zeros(8, 32)})
        src["projector"] = str(bad)
        want = "also holds the LLM's LoRA weights (1 tensors"
    elif case == "projector_output_vs_llm":
        src["projector"] = str(slam_projector_checkpoint(tmp_path / "model.pt", encoder_dim=64, llm_dim=48, k=K))
        want = "projector output 48 != the LLM's hidden size 32"
    elif case == "projector_input_vs_k":
        src["k"] = "4"
        want = "projector input 320 != encoder width 64 x k 4 = 256"
    elif case == "projector_input_vs_encoder":
        src["projector"] = str(slam_projector_checkpoint(tmp_path / "model.pt", encoder_dim=48, llm_dim=32, k=K))
        want = "projector input 240 is not a multiple of the encoder width 64"
    elif case == "lora_for_another_base":
        other = tiny_llm_dir(tmp_path / "other-llm", layers=6, hidden=48)
        src["lora"] = str(tiny_lora_adapter_dir(tmp_path / "other-lora", other))
        want = (f"is for another base model than --llm {sources['llm']}: model.layers.0.self_attn.q_proj maps "
                f"32 -> 32 in the LLM but 48 -> 48 in the adapter; the adapter names its base '{other}'")
    else:
        raise AssertionError(case)
    argv = ["--encoder", src["encoder"], "--llm", src["llm"], "--projector", src["projector"], "--lora", src["lora"]]
    if "k" in src:
        argv += ["--projector-k", src["k"]]
    return argv, want


@pytest.mark.parametrize("case", ["missing_preprocessor", "missing_projector", "missing_adapter_weights",
                                  "llm_is_not_a_causal_lm", "encoder_is_not_whisper", "cov1d_projector",
                                  "lora_inside_model_pt", "projector_output_vs_llm", "projector_input_vs_k",
                                  "projector_input_vs_encoder", "lora_for_another_base"])
def test_refusals_are_one_clear_line(case, sources, tmp_path, capsys):
    argv, want = _refusal(case, sources, tmp_path)
    assert_refused(capsys, ["import", "slam", *argv, "--out", tmp_path / "out"], want, tmp_path / "out")


def test_out_must_be_new_or_a_model_dir(sources, tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(SlimError, match="exists and is not a slimspeech model dir"):
        import_slam(sources["encoder"], sources["llm"], sources["projector"], tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_a_bad_source_name_and_help(capsys):
    assert cli.main(["import", "nemo"]) == 2
    assert "unknown source 'nemo': slimspeech imports slam" in capsys.readouterr().err
    assert cli.main(["import", "--help"]) == 0
    assert "slam" in capsys.readouterr().out


def test_the_imported_clip_length_formula_on_a_real_file(model, speech_files):
    """ceil(S/320) encoder frames from the file's own sample count (sox wrote 16 kHz)."""
    frames = sf.info(speech_files[1]).frames
    feats, lengths = model.features([load_audio(speech_files[1])])
    _, n_tokens, _, enc_lengths = model.encode(feats, lengths)
    assert int(enc_lengths[0]) == math.ceil(frames / 320) and int(n_tokens[0]) == math.ceil(math.ceil(frames / 320) / K)
