"""Command-line options from dataclass fields: one definition of a config, its flags and their help.

    @dataclass
    class HealConfig:
        steps: int = option(300, "optimizer steps")
        train: tuple[str, ...] = option(("lora", "projector"), "what trains", type=str)

    add_options(parser, HealConfig)                     # --steps, --train, each with help "... (default: 300)"
    add_options(parser, HealConfig, prefix="heal-")     # --heal-steps, --heal-train (sweep)
    cfg = config_from_args(HealConfig, parser.parse_args(argv))            # unset flags keep the field defaults
    cfg = config_from_args(HealConfig, args, prefix="heal-", tasks="...")  # fixed values for excluded fields
    to_argv(cfg)                                        # ["--steps", "500", ...]: the flags of non-default fields

Every option gets the help text of its field (``option(default, help)``, kept in the field's
metadata); a field without one is a TypeError when the parser is built, so no flag can lack help.
The flag's argparse default is None and the field default applies when a flag is not given,
so ``config_from_args`` reproduces the dataclass defaults exactly. The option type is the
field's (int, float, str; ``X | None`` as X), or ``type=`` for containers (a parser of the
flag's text that the dataclass accepts: ``HealConfig`` parses "lora,projector" itself). A bool
field that defaults to False is a switch (``--distill``).
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable
from typing import Any


def option(default: Any = dataclasses.MISSING, help: str = "", *, type: Callable | None = None,
           choices: tuple | None = None, metavar: str | None = None, default_factory: Callable | None = None,
           cli: bool = True) -> Any:
    """A dataclass field with its command-line help (and optionally type, choices, metavar).

    ``cli=False``: a field set in code only, never a flag (then ``help`` may be empty).
    """
    meta = {"help": help, "type": type, "choices": choices, "metavar": metavar, "cli": cli}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _flag_fields(cls, exclude) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if f.name not in exclude and f.metadata.get("cli", True)]


def _default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _scalar_type(hint) -> type:
    """int | None -> int; int, float, str, bool as they are."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            hint = args[0]
    if hint in (int, float, str, bool):
        return hint
    raise TypeError(f"no option type for {hint!r}: give option(..., type=PARSER)")


def _show(value) -> str:
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return str(value)


def _dest(prefix: str, name: str) -> str:
    return prefix.replace("-", "_") + name


def add_options(parser: argparse.ArgumentParser, cls, *, prefix: str = "", exclude=(),
                aliases: dict[str, list[str]] | None = None, title: str | None = None) -> None:
    """Add one ``--<prefix><field-name>`` option per field of dataclass ``cls`` (in an argument group).

    ``exclude``: field names without a flag; ``aliases``: field name -> further option strings.
    """
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(title or f"{cls.__name__} options")
    for f in _flag_fields(cls, exclude):
        meta = f.metadata
        if not meta.get("help"):
            raise TypeError(f"{cls.__name__}.{f.name} has no help: declare it with option(default, help)")
        default = _default(f)
        help_ = meta["help"]
        if default not in (None, "", False):  # unset, empty and off need no "(default: ...)"
            help_ += f" (default: {_show(default)})"
        kw: dict[str, Any] = {"dest": _dest(prefix, f.name), "default": None,
                              "help": help_.replace("%", "%%")}  # argparse formats help with %
        kind = meta.get("type") or _scalar_type(hints[f.name])
        if kind is bool:
            if default:
                raise TypeError(f"{cls.__name__}.{f.name}: a bool option must default to False (a switch)")
            kw["action"] = "store_true"
        else:
            kw["type"] = kind
            if meta.get("choices"):
                kw["choices"] = meta["choices"]
            if meta.get("metavar"):
                kw["metavar"] = meta["metavar"]
        flags = ["--" + (prefix + f.name).replace("_", "-"), *(aliases or {}).get(f.name, [])]
        group.add_argument(*flags, **kw)


def config_from_args(cls, args: argparse.Namespace, *, prefix: str = "", exclude=(), **fixed):
    """The dataclass ``cls`` from parsed options: given flags set their fields, others keep the defaults.

    ``fixed``: values of fields that have no flag here (e.g. sweep's shared ``tasks``).
    """
    values = {f.name: getattr(args, _dest(prefix, f.name)) for f in _flag_fields(cls, exclude)
              if getattr(args, _dest(prefix, f.name), None) is not None}
    return cls(**values, **fixed)


def to_argv(cfg, *, prefix: str = "", exclude=()) -> list[str]:
    """The options that rebuild ``cfg`` with ``config_from_args``: one per field that differs from its default."""
    out: list[str] = []
    for f in _flag_fields(type(cfg), exclude):
        value = getattr(cfg, f.name)
        if value == _default(f):
            continue
        flag = "--" + (prefix + f.name).replace("_", "-")
        if isinstance(value, bool):
            out.append(flag)  # only a True switch differs from its False default
        else:
            out += [flag, _show(value)]
    return out
