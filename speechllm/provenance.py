"""Where a model dir came from: ``provenance.json``, typed, read and written in this module only.

    from speechllm.provenance import ModelRef, Provenance, model_fingerprint, stamp, stamped_by

    prov = Provenance.read("runs/healed")        # any provenance.json, old or new (none: an empty Provenance)
    prov.kept_layers, prov.parent.fingerprint, prov.healing, prov.extra.get("recipe")
    parent = ModelRef.of(model, "runs/healed")   # who the next dir derives from (computes the fingerprint)
    new = prov.derive("slimspeech export", parent, scores=...).describing(model)
    model.save("out/dir", provenance=new.to_dict())   # atomically with the weights
    new.write("out/dir")                              # or later, beside weights already there

``model.provenance`` (what a family's ``load`` sets, what ``/v1/models`` summarises) stays the
file's JSON as written; ``Provenance.of(model)`` is the typed view of it.

The fields of ``Provenance`` (schema 2, ``SCHEMA_VERSION``):

=======================  ================================================================================
``schema_version``       2; a file without it is schema 1 (below)
``produced_by``          the verb that wrote the dir: ``"slimspeech prune"``, ``"slimspeech heal"``, ...
``created``              ISO 8601 time, UTC, seconds
``parent``               ``ModelRef`` of the dir this one was made from (dir, fingerprint, verb, layers);
                         None for a root (a trained or imported model)
``lineage``              ``ModelRef`` list, oldest first, ``parent`` last: every dir this one derives from
``root``                 dir of the original, unpruned model
``root_decoder_layers``  decoder layers of that original
``decoder_layers``       decoder layers of this model
``removed_layers``       original-model layer indices removed so far (``[]`` for a root)
``kept_layers``          original-model layer index of each layer this model runs (None: all of them)
``removed_from_parent``  the last prune's indices, counted in the parent's layers
``fingerprint``          ``model_fingerprint`` of this dir's weights, as written
``parameters``           parameter count
``weight_bytes``         bytes of the weights as written, in ``dtype``
``dtype``                ``"float32"``, ``"float16"`` or ``"bfloat16"``: the weights' dtype as written
``analysis``             the analysis block a prune followed (``prune_tools.prune``), or None
``healing``              config, data, steps and losses of the healing (``prune_tools.heal``), or None
``scores``               the evaluate report's summary (``prune_tools.export.scores_summary``), or None
``extra``                what one verb alone records: train's ``recipe``, ``data``, ``training_minutes``,
                         ``dev_scores_fp32``; export's ``export`` (``note``, ``verified``); an importer's
                         ``command``, ``sources`` (``source_record`` of each) and ``source_format``
                         (these two, ``ROOT_EXTRA``, are kept by every dir pruned from the import);
                         anything a reader does not know
=======================  ================================================================================

Schema 1 (no ``schema_version``: every file written before this module, the shipped
``speechllm/assets/demo`` and ``demo-pruned`` among them) reads as schema 2 thus: the keys above
are taken as they are, every other key goes into ``extra``; an ``export`` block gives its
``weight_bytes`` and ``dtype`` to the top level, replacing the float32 ``weight_bytes`` the source
model had left there; a parent given as a bare string is a ``ModelRef`` with that ``dir``. A
schema-1 dir records no fingerprint of its own (``fingerprint`` is None). A file of a newer
schema than this code reads is refused (``ModelDirError``), never half-read.

Step outputs that are not model dirs (``analysis.json``, the evaluate report, ``sweep.json``,
``compare.json``, a LoRA adapter's meta) start with the same two header fields: ``stamp(verb)``
writes them, ``stamped_by(doc)`` reads which verb wrote a file.

**The fingerprint** (``model_fingerprint``, 16 hex digits) identifies weights whatever dtype they
are held in. SHA-256 over ``b"slimspeech fingerprint 2\\n"`` and, for every parameter sorted by
name: ``"{name}:{shape}:"`` and up to 64 evenly strided values (stride ``max(1, numel // 64)``),
each cast to float32, rounded to float16 (round to nearest, ties to even) and then to bfloat16,
as little-endian 16-bit words. Why these two roundings:

- float16 first: casting float32 weights to float16 *is* this rounding, so a float16 export and
  its float32 source share the fingerprint exactly, as does any load of either in float32 or
  float16;
- then bfloat16: a bfloat16 load of weights stored in float16 or bfloat16 (the shipped demo, most
  Hugging Face checkpoints) holds the same values after both roundings, so it matches too;
- a bfloat16 cast of *float32* weights does not always match (a value rounded to float16 can land
  on a bfloat16 tie that the direct rounding does not): no per-value rounding can serve both
  casts. ``model_fingerprint(model, loaded_as=torch.bfloat16)`` gives the fingerprint a bfloat16
  load of these weights has, which is how ``prune`` checks an analysis run in bfloat16.

The values are sampled because hashing every weight of a 7B model takes minutes; two different
trainings, prunings (names and shapes change) or healings (a merged LoRA and the projector move
every value of their tensors) never share 64 values per tensor.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .errors import ModelDirError
from .modeldir import PROVENANCE_FILE, read_json, write_json

SCHEMA_VERSION = 2
#: the ``extra`` keys that describe the root model (an importer's sources), kept by every dir derived from it
ROOT_EXTRA = ("sources", "source_format")
FINGERPRINT_SAMPLES = 64
_FINGERPRINT_TAG = b"slimspeech fingerprint 2\n"


def now() -> str:
    """The current time as provenance records it: ISO 8601, UTC, whole seconds."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def stamp(producer: str) -> dict:
    """The header of a step output: ``{"produced_by": producer, "created": now()}``; spread it first."""
    return {"produced_by": producer, "created": now()}


def stamped_by(doc) -> str | None:
    """Which verb wrote a step output or provenance dict (``"slimspeech analyze"``), None if unknown."""
    return doc.get("produced_by") if isinstance(doc, dict) else None


def sha256_file(path) -> str:
    """The hex SHA-256 of a file's bytes, read in 1 MiB blocks (what ``sha256sum`` prints)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def source_record(path) -> dict:
    """An imported source: ``{"path", "sha256"}`` of a file; of a dir also ``{"files": {relative path: sha256}}``,
    its sha256 being that of the sorted ``relative-path  sha256`` lines (hidden files and folders, e.g. a hub
    cache's, left out)."""
    path = Path(path).resolve()
    if path.is_file():
        return {"path": str(path), "sha256": sha256_file(path)}
    files = {}
    for f in sorted(path.rglob("*")):
        rel = f.relative_to(path)
        if f.is_file() and not any(part.startswith(".") for part in rel.parts):
            files[rel.as_posix()] = sha256_file(f)
    digest = hashlib.sha256("".join(f"{k}  {v}\n" for k, v in files.items()).encode()).hexdigest()
    return {"path": str(path), "sha256": digest, "files": files}


def dtype_name(dtype) -> str:
    """``torch.float16`` -> ``"float16"`` (the names ``--dtype`` takes)."""
    return str(dtype).removeprefix("torch.")


def model_fingerprint(model, loaded_as=None) -> str:
    """16 hex digits identifying ``model``'s weights, the same in float32 and float16 (module docstring).

    ``loaded_as`` (a torch dtype): the fingerprint these weights have once cast to that dtype, e.g.
    ``torch.bfloat16`` to compare float32 weights with an analysis that loaded them in bfloat16.
    """
    import torch

    h = hashlib.sha256(_FINGERPRINT_TAG)
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // FINGERPRINT_SAMPLES)
        sample = flat[::step][:FINGERPRINT_SAMPLES].to("cpu")
        if loaded_as is not None:
            sample = sample.to(loaded_as)
        canonical = sample.to(torch.float32).to(torch.float16).to(torch.bfloat16)
        h.update(f"{name}:{tuple(p.shape)}:".encode())
        h.update(canonical.view(torch.int16).numpy().astype("<i2").tobytes())
    return h.hexdigest()[:16]


@dataclass
class ModelRef:
    """A model by identity: a provenance's parent or lineage step, or the model a step output is about
    (an analysis, an evaluate report, a LoRA adapter, a healing checkpoint). Unknown fields are None."""

    dir: str | None = None
    fingerprint: str | None = None
    produced_by: str | None = None
    decoder_layers: int | None = None
    family: str | None = None
    kept_layers: list[int] | None = None
    dtype: str | None = None

    @classmethod
    def of(cls, model, model_dir=None, *, fingerprint: str | None = None,
           kept_layers: list[int] | None = None) -> "ModelRef":
        """The identity of a loaded model (``model_dir``: where it was loaded from, made absolute).
        Pass ``fingerprint`` / ``kept_layers`` when already computed; else they are computed / read."""
        prov = Provenance.of(model)
        if kept_layers is None:
            kept_layers = prov.kept_layers if prov.kept_layers is not None else list(range(model.num_decoder_layers))
        return cls(dir=str(Path(model_dir).resolve()) if model_dir is not None else None,
                   fingerprint=fingerprint or model_fingerprint(model), produced_by=prov.produced_by,
                   decoder_layers=model.num_decoder_layers, family=model.family,
                   kept_layers=[int(i) for i in kept_layers], dtype=dtype_name(model.dtype))

    @classmethod
    def from_dict(cls, d) -> "ModelRef | None":
        """From its dict (None stays None). Tolerates the older shapes: a bare dir string, and the
        ``model_fingerprint`` key of adapter metas and checkpoints written before schema 2."""
        if d is None or isinstance(d, ModelRef):
            return d
        if isinstance(d, str):
            return cls(dir=d)
        if not isinstance(d, dict):
            raise ModelDirError(f"a model reference must be a dict or a dir name, not {type(d).__name__}: {d!r}")
        d = dict(d)
        if d.get("fingerprint") is None and d.get("model_fingerprint") is not None:
            d["fingerprint"] = d["model_fingerprint"]
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: copy.deepcopy(v) for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclass
class Provenance:
    """The contents of a model dir's ``provenance.json`` (fields: the module docstring)."""

    schema_version: int = SCHEMA_VERSION
    produced_by: str | None = None
    created: str | None = None
    parent: ModelRef | None = None
    lineage: list[ModelRef] = field(default_factory=list)
    root: str | None = None
    root_decoder_layers: int | None = None
    decoder_layers: int | None = None
    removed_layers: list[int] = field(default_factory=list)
    kept_layers: list[int] | None = None
    removed_from_parent: list[int] | None = None
    fingerprint: str | None = None
    parameters: int | None = None
    weight_bytes: int | None = None
    dtype: str | None = None
    analysis: dict | None = None
    healing: dict | None = None
    scores: dict | None = None
    extra: dict = field(default_factory=dict)

    @classmethod
    def imported(cls, source: str, model, *, command: str, sources: dict, source_format: dict) -> "Provenance":
        """The provenance of a model dir ``slimspeech import <source>`` writes: a root (no parent, every layer
        kept), ``model``'s own identity (``describing``), and in ``extra`` the command, the sources
        (``source_record`` of each, by role) and a description of each source's layout."""
        return cls(produced_by=f"slimspeech import {source}", created=now(), parent=None, removed_layers=[],
                   root_decoder_layers=model.num_decoder_layers,
                   extra={"command": command, "sources": sources, "source_format": source_format}).describing(model)

    # ---- reading ---------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, d: dict | None) -> "Provenance":
        """From a provenance dict of any schema up to ``SCHEMA_VERSION`` (older ones upgraded; the
        input is not modified). ``ModelDirError`` for a newer schema or a value that is not a dict."""
        if d is None:
            d = {}
        if not isinstance(d, dict):
            raise ModelDirError(f"a provenance must be a JSON object, not {type(d).__name__}")
        d = copy.deepcopy(d)
        version = d.pop("schema_version", 1)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise ModelDirError(f"provenance schema_version {version!r} is newer than this slimspeech reads "
                                f"({SCHEMA_VERSION}): upgrade slimspeech")
        if version == 1:
            d = _upgrade_v1(d)
        extra = d.pop("extra", None) or {}
        typed = {f.name for f in dataclasses.fields(cls)} - {"schema_version", "extra"}
        kwargs = {k: d.pop(k) for k in typed if k in d}
        extra.update(d)  # whatever is left is no common field: kept, not lost
        kwargs["parent"] = ModelRef.from_dict(kwargs.get("parent"))
        kwargs["lineage"] = [ModelRef.from_dict(r) for r in kwargs.get("lineage") or []]
        if kwargs.get("removed_layers") is None:
            kwargs["removed_layers"] = []
        return cls(**kwargs, extra=extra)

    @classmethod
    def read(cls, model_dir) -> "Provenance":
        """The provenance of ``model_dir`` (an empty one when the dir has no provenance.json)."""
        path = Path(model_dir) / PROVENANCE_FILE
        if not path.is_file():
            return cls()
        try:
            d = read_json(path)
        except json.JSONDecodeError as exc:
            raise ModelDirError(f"{path} is not valid JSON ({exc}): re-create the model dir") from None
        try:
            return cls.from_dict(d)
        except ModelDirError as exc:
            raise ModelDirError(f"{path}: {exc}") from None

    @classmethod
    def of(cls, model) -> "Provenance":
        """The typed view of a loaded model's ``model.provenance`` dict."""
        return cls.from_dict(getattr(model, "provenance", None) or {})

    # ---- writing ---------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON object ``provenance.json`` holds (schema 2: every field, ``extra`` last)."""
        return dataclasses.asdict(self)

    def write(self, model_dir) -> Path:
        """Write ``model_dir/provenance.json`` atomically; -> its path. (A new model dir gets its provenance
        from ``model.save(dir, provenance=prov.to_dict())``, in the same atomic rename as the weights.)"""
        path = Path(model_dir) / PROVENANCE_FILE
        write_json(path, self.to_dict())
        return path

    # ---- deriving --------------------------------------------------------------------------
    def derive(self, produced_by: str, parent: ModelRef, **changes) -> "Provenance":
        """The provenance of a dir made from the one this provenance describes (``parent``): a copy with
        ``produced_by``, a new ``created``, ``parent`` appended to the lineage, ``root`` and
        ``root_decoder_layers`` kept from the parent (or the parent itself, for a root), then ``changes``."""
        base = dataclasses.replace(
            copy.deepcopy(self), schema_version=SCHEMA_VERSION, produced_by=produced_by, created=now(),
            parent=parent, lineage=[*copy.deepcopy(self.lineage), parent],
            root=self.root or parent.dir,
            root_decoder_layers=self.root_decoder_layers or parent.decoder_layers)
        return dataclasses.replace(base, **changes)

    def describing(self, model) -> "Provenance":
        """A copy stating ``model``'s own identity and size as it will be written: decoder layers,
        fingerprint, parameters, weight bytes and dtype (convert the model to its stored dtype first)."""
        return dataclasses.replace(
            self, decoder_layers=model.num_decoder_layers, fingerprint=model_fingerprint(model),
            parameters=model.num_parameters(), weight_bytes=model.weight_bytes(), dtype=dtype_name(model.dtype))

    def summary(self, model_dir, decoder_layers: int) -> dict:
        """What ``slimspeech inspect`` shows of it: the producer, the lineage (oldest first, ``model_dir`` last; each
        dir, verb and decoder layers), the root's layers, removed / kept layers, an importer's sources (path,
        sha256) and command. ``decoder_layers``: the dir's own count, when the provenance does not say."""
        refs = self.lineage or ([self.parent] if self.parent is not None else [])
        chain = [{"dir": r.dir, "produced_by": r.produced_by, "decoder_layers": r.decoder_layers} for r in refs]
        chain.append({"dir": str(model_dir), "produced_by": self.produced_by,
                      "decoder_layers": self.decoder_layers if self.decoder_layers is not None else decoder_layers})
        return {"produced_by": self.produced_by, "created": self.created, "lineage": chain,
                "root_decoder_layers": self.root_decoder_layers, "removed_layers": list(self.removed_layers),
                "kept_layers": self.kept_layers,
                "sources": {name: {"path": s.get("path"), "sha256": s.get("sha256")}
                            for name, s in (self.extra.get("sources") or {}).items()},
                "command": self.extra.get("command")}

    def root_extra(self) -> dict:
        """The part of ``extra`` that describes the root model (``ROOT_EXTRA``: an import's sources and their
        layout), for a derived dir whose own verb replaces the rest of ``extra``."""
        return {k: copy.deepcopy(self.extra[k]) for k in ROOT_EXTRA if k in self.extra}

    def layer_summary(self) -> dict:
        """``{"removed_layers", "kept_layers", "decoder_layers"}``, for step outputs listing models."""
        return {"removed_layers": list(self.removed_layers), "kept_layers": self.kept_layers,
                "decoder_layers": self.decoder_layers if self.kept_layers is None else len(self.kept_layers)}


def summary_rows(summary: dict) -> list[tuple[str, str]]:
    """(label, text) rows of a ``Provenance.summary`` for ``slimspeech inspect``'s report."""
    rows = []
    chain = summary["lineage"]
    for i, step in enumerate(chain):
        where = "this dir" if i == len(chain) - 1 else step["dir"]
        verb = step["produced_by"] or "unknown"
        step_text = f"{'-> ' if i else ''}{verb} ({step['decoder_layers']} layers): {where}"
        rows.append(("lineage" if i == 0 else "", step_text))
    if summary.get("removed_layers"):
        root = summary.get("root_decoder_layers")
        rows.append(("removed", f"layers {summary['removed_layers']} of the root's {root}"))
    for i, (name, src) in enumerate(summary["sources"].items()):
        rows.append(("sources" if i == 0 else "", f"{name}: {src['path']} (sha256 {str(src['sha256'])[:16]})"))
    return rows


def read_dict(model_dir) -> dict:
    """``model_dir/provenance.json`` as written ({} without one): what ``model.provenance`` holds."""
    path = Path(model_dir) / PROVENANCE_FILE
    return read_json(path) if path.is_file() else {}


def _upgrade_v1(d: dict) -> dict:
    """Schema 1's keys as schema 2 names them (the module docstring says what changes)."""
    export = d.get("export")
    if isinstance(export, dict):
        export = dict(export)
        # schema 1 left the float32 source's weight_bytes at the top level; the written ones were here
        d["weight_bytes"] = export.pop("weight_bytes", None)
        d["dtype"] = export.pop("dtype", None)
        d["export"] = export  # note, verified, ...: into extra
    return d
