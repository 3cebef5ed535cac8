"""Command-line options: every option of every verb has help; heal's and sweep's healing flags come from one
dataclass; device and dtype names resolve in one place. Quick: parsers only, no model.

    .venv/bin/python -m pytest -q tests/prune_tools/test_options.py
"""

import argparse
import dataclasses
import importlib

import pytest
import torch

from prune_tools import heal, sweep, train
from prune_tools.heal import HealConfig
from prune_tools.options import add_options, config_from_args, option, to_argv
from prune_tools.sweep import SweepConfig
from prune_tools.train import TrainConfig
from speechllm import cli
from speechllm.devices import DTYPE_CHOICES, resolve_device, resolve_dtype
from speechllm.errors import SlimError

#: the verbs of the verb table that prune_tools implements, and their modules
VERB_MODULES = {verb: target.partition(":")[0] for verb, (target, _) in cli.VERBS.items()
                if target.startswith("prune_tools.")}


def test_every_option_of_every_verb_has_help():
    assert {"make-data", "train", "analyze", "prune", "heal", "evaluate", "sweep", "export"} <= set(VERB_MODULES)
    for verb, module in VERB_MODULES.items():
        parser = importlib.import_module(module).build_parser()
        actions = [a for a in parser._actions if not isinstance(a, argparse._HelpAction)]
        assert actions, verb
        for action in actions:
            assert action.help and action.help.strip() and action.help != argparse.SUPPRESS, \
                (verb, action.option_strings or action.dest)
        assert parser.format_help()  # renders: no stray % in a help text


def _options(parser) -> dict[str, argparse.Action]:
    return {a.dest: a for a in parser._actions}


def test_heal_and_sweep_take_their_healing_flags_from_healconfig():
    fields = {f.name for f in dataclasses.fields(HealConfig)}
    heal_opts = _options(heal.build_parser())
    sweep_opts = _options(sweep.build_parser())
    assert fields <= set(heal_opts)
    # sweep: --heal-<field> for each field but tasks (the sweep's own --tasks), with heal's help text
    assert {d.removeprefix("heal_") for d in sweep_opts if d.startswith("heal_")} == fields - {"tasks"}
    for name in fields - {"tasks"}:
        assert sweep_opts[f"heal_{name}"].help == heal_opts[name].help, name
    assert "--lora-r" in sweep_opts["heal_lora_r"].option_strings  # the older name still works

    required = ["--model", "m", "--data", "d.jsonl", "--out", "o"]
    assert config_from_args(HealConfig, heal.build_parser().parse_args(required)) == HealConfig()
    s_required = required + ["--eval-data", "e.jsonl"]
    cfg = sweep.config_from_parsed(sweep.build_parser().parse_args(s_required))
    assert cfg == SweepConfig() and cfg.heal == HealConfig()
    cfg = sweep.config_from_parsed(sweep.build_parser().parse_args(
        s_required + ["--tasks", "transcribe", "--heal-lora-dropout", "0.1", "--lora-r", "4", "--heal-train",
                      "projector", "--fractions", "0.2,0.4", "--distill"]))
    assert cfg.heal == HealConfig(tasks="transcribe", lora_dropout=0.1, lora_r=4, train="projector")
    assert cfg.fractions == [0.2, 0.4] and cfg.distill and cfg.tasks == "transcribe"
    with pytest.raises(SystemExit):
        sweep.build_parser().parse_args(s_required + ["--fractions", "a,b"])


def test_options_round_trip_and_refuse_a_field_without_help():
    cfg = TrainConfig(dec_layers=3, text_lr=0.0021, init_from="x y", projector="ctc_embed")
    argv = to_argv(cfg)
    assert argv[:2] == ["--dec-layers", "3"] and "--seed" not in argv  # only what differs from the defaults
    assert config_from_args(TrainConfig, train.build_parser().parse_args(argv)) == cfg
    assert to_argv(HealConfig(train="lora", steps=5)) == ["--train", "lora", "--steps", "5"]

    @dataclasses.dataclass
    class Bad:
        good: int = option(1, "has help")
        bad: int = 2

    with pytest.raises(TypeError, match="Bad.bad has no help"):
        add_options(argparse.ArgumentParser(), Bad)


def test_device_and_dtype_names():
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(SlimError, match="CUDA is not available") as e:
            resolve_device("cuda:1")
        assert e.value.param == "device"
    assert resolve_dtype("auto", "cpu") == torch.float32 and resolve_dtype("auto", "cuda:0") == torch.bfloat16
    assert [resolve_dtype(n) for n in DTYPE_CHOICES[1:]] == [torch.float32, torch.bfloat16, torch.float16]
    with pytest.raises(SlimError, match="choose one of auto, float32") as e:
        resolve_dtype("fp8")
    assert e.value.param == "dtype"
