"""The ``slimspeech`` command as a user runs it: ``speechllm.cli.main`` in this process (what the console
script calls), and once through the real console script in a child process (slow tier)."""

import contextlib
import io
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from speechllm.generate import transcribe
from speechllm.modeldir import load_model
from speechllm.tasks import Task
from tests.conftest import write_wav


def run(*args):
    """``slimspeech ARGS`` in this process -> returncode, stdout, stderr (as subprocess.run gives them)."""
    from speechllm import cli

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main(list(args))
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def run_process(*args):
    return subprocess.run([sys.executable, "-m", "speechllm.cli", *args], capture_output=True, text=True,
                          timeout=300)


@pytest.mark.slow  # a child process
def test_the_console_script_transcribes_and_reports_errors_in_one_line(tiny_slam_dir, speech_files, tmp_path):
    ok = run_process("transcribe", "--model", str(tiny_slam_dir), *speech_files)
    assert ok.returncode == 0 and len(ok.stdout.splitlines()) == len(speech_files), ok.stderr
    bad = run_process("transcribe", "--model", str(tiny_slam_dir), str(tmp_path / "nope.wav"))
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: audio file not found"), bad.stderr
    version = run_process("--version")
    assert version.returncode == 0 and version.stdout.startswith("slimspeech ")


def test_help_lists_verbs():
    out = run("--help")
    assert out.returncode == 0
    for verb in ("transcribe", "make-data"):
        assert verb in out.stdout


def test_version_is_the_installed_distribution():
    from importlib.metadata import version

    out = run("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"slimspeech {version('slimspeech')}"


def _parsers(parser):
    """The parser and every sub-command's parser under it."""
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _parsers(sub)


def test_every_option_of_every_verb_has_help():
    """Each verb's module builds its parser with ``build_parser()``; every option says what it does."""
    import argparse
    import importlib

    from speechllm.cli import VERBS

    parsers = []
    for verb, (target, summary) in VERBS.items():
        assert summary, verb
        module = importlib.import_module(target.partition(":")[0])
        if hasattr(module, "IMPORTERS"):  # `import` dispatches to one parser per source
            parsers += [(f"{verb} {src}", importlib.import_module(t.partition(":")[0]).build_parser())
                        for src, (t, _) in module.IMPORTERS.items()]
        else:
            parsers.append((verb, module.build_parser()))
    for verb, top in parsers:
        for parser in _parsers(top):
            for action in parser._actions:
                if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
                    continue
                assert action.help and action.help.strip() and action.help != argparse.SUPPRESS, \
                    (verb, action.option_strings or action.dest)
            assert parser.format_help()  # renders: no stray % in a help text


def test_transcribe_prints_one_line_per_file(tiny_slam_dir, speech_files):
    out = run("transcribe", "--model", str(tiny_slam_dir), "--task", "translate", "--target-lang", "de",
              *speech_files)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert len(lines) == len(speech_files)
    # the same as the library call (the CLI is a thin layer over it)
    from speechllm.audio import load_audio

    model = load_model(tiny_slam_dir)
    expected = transcribe(model, [load_audio(f) for f in speech_files], Task("translate", "de"))
    assert lines == expected


def test_transcribe_dtype_is_the_library_call_in_that_dtype(tiny_slam_dir, noise_wavs, tmp_path):
    """--dtype bfloat16 prints what the library gives with the model loaded in bfloat16."""
    import torch

    from speechllm.audio import load_audio

    files = [write_wav(tmp_path / f"noise{i}.wav", w) for i, w in enumerate(noise_wavs)]
    out = run("transcribe", "--model", str(tiny_slam_dir), "--dtype", "bfloat16", *files)
    assert out.returncode == 0, out.stderr
    wavs = [load_audio(f) for f in files]

    def printed(texts):  # a line per file (random models' texts hold characters splitlines() splits on)
        return "".join(t + "\n" for t in texts)

    assert out.stdout == printed(transcribe(load_model(tiny_slam_dir, dtype=torch.bfloat16), wavs, Task("transcribe")))
    # the tiny random model decodes some of these clips differently in float32: the flag was honoured
    assert out.stdout != printed(transcribe(load_model(tiny_slam_dir), wavs, Task("transcribe")))


@pytest.mark.parametrize("case", ["missing", "text_as_wav", "empty_wav", "bad_task", "bad_lang", "bad_model"])
def test_bad_input_is_one_clear_line(case, tmp_path, tiny_slam_dir, speech_files):
    args = ["transcribe", "--model", str(tiny_slam_dir)]
    if case == "missing":
        args += [str(tmp_path / "nope.wav")]
        want = "audio file not found"
    elif case == "text_as_wav":
        fake = tmp_path / "notes.wav"
        fake.write_text("this is a text file, not audio\n" * 20)
        args += [speech_files[0], str(fake)]
        want = "cannot decode"
    elif case == "empty_wav":
        args += [write_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32))]
        want = "no audio samples"
    elif case == "bad_task":
        args += ["--task", "summarize", speech_files[0]]
        want = "supports transcribe, translate:fr, translate:de"
    elif case == "bad_lang":
        args += ["--task", "translate", "--target-lang", "es", speech_files[0]]
        want = "translates into fr, de"
    else:
        args = ["transcribe", "--model", str(tmp_path), speech_files[0]]
        want = "not a slimspeech model dir"
    out = run(*args)
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and want in lines[0], out.stderr


def test_a_clip_shorter_than_a_feature_window_is_transcribed(tmp_path):
    tiny = write_wav(tmp_path / "tiny.wav", (0.1 * np.random.default_rng(0).standard_normal(100)).astype(np.float32))
    out = run("transcribe", tiny)  # the embedded demo model
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 1 and "Traceback" not in out.stderr


def test_an_absurd_sample_rate_is_one_error_line(tmp_path):
    path = tmp_path / "fast.wav"
    write_wav(path, np.zeros(100, dtype=np.float32))
    data = bytearray(path.read_bytes())
    data[24:28] = (999_983).to_bytes(4, "little")  # the fmt chunk's sample rate, then its bytes per second
    data[28:32] = (999_983 * 2).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    out = run("transcribe", str(path))
    assert out.returncode == 2 and out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "999,983 Hz" in lines[0], out.stderr
