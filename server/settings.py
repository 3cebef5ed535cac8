"""Typed server settings: environment (``SLIMSPEECH_*``) and ``slimspeech serve`` flags.

    SLIMSPEECH_MODELS='pruned=runs/export,base=runs/base' SLIMSPEECH_MAX_BATCH_SIZE=16 slimspeech serve
    slimspeech serve --model pruned=runs/export --model base=runs/base --max-batch-size 16

Flags override the environment. ``models`` maps a served name (the request's ``model`` field)
to a model dir; a request only ever names a model, never a path. With no models configured the
server serves the embedded demo model as ``demo``, plus its pruned export as ``demo-pruned``
when one exists at ``demo_pruned_dir``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from speechllm.errors import ModelDirError
from speechllm.modeldir import DEMO_DIR, SPEC_FILE, default_model_dir, read_spec

MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def parse_models(value) -> dict[str, str]:
    """``{"a": "dir"}``, a JSON object string, or ``"a=dir,b=dir"`` -> {name: dir}."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("{"):
            value = json.loads(text)
        else:
            value = dict(part.split("=", 1) if "=" in part else ("", part)
                         for part in (p.strip() for p in text.split(",")) if part)
    if isinstance(value, (list, tuple)):  # repeated --model NAME=DIR flags
        return parse_models(",".join(value))
    out = {}
    for name, path in dict(value).items():
        name = str(name).strip() or Path(str(path)).name
        if not MODEL_NAME.match(name):
            raise ValueError(f"model name {name!r} must be 1-64 letters, digits, '.', '_' or '-' (use NAME=DIR)")
        out[name] = str(path)
    return out


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SLIMSPEECH_", extra="forbid", validate_default=True)

    #: served name -> model dir; empty: the embedded demo model (+ its pruned export)
    models: Annotated[dict[str, str], NoDecode] = Field(default_factory=dict)
    #: where the demo model's pruned export is looked for when ``models`` is empty
    demo_pruned_dir: Path = DEMO_DIR.parent / "demo-pruned"
    engine: Literal["torch", "vllm"] = "torch"
    #: ``auto``: cuda when available, else cpu
    device: str = "auto"
    #: ``auto``: bfloat16 on cuda, float32 on cpu
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    #: CPU threads for torch's intra-op pool (default: torch's choice, one per core)
    threads: int | None = Field(None, ge=1)
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    #: engine torch: ``continuous`` (requests join and leave a running decode at each step) or
    #: ``static`` (a batch runs to its end while newcomers wait; for comparison)
    scheduler: Literal["continuous", "static"] = "continuous"
    #: most requests decoded together per model (continuous: rows in a step; static: a batch)
    max_batch_size: int = Field(8, ge=1, le=1024)
    #: static: longest a request waits for others to fill its batch; continuous: the most an idle
    #: server waits for more of a burst of close arrivals (never for a lone request)
    max_wait_ms: float = Field(10.0, ge=0, le=10_000)
    #: continuous: newcomers join a decoding model together once they are this many times its rows
    #: (or fill its free rows, or the oldest has waited ``max_waiting_steps``); 0: at the next step
    waiting_served_ratio: float = Field(1.2, ge=0)
    #: continuous: the most decoding steps of its model a newcomer waits to join
    max_waiting_steps: int = Field(20, ge=0)
    #: requests in the server at once (uploading, decoding, queued or running; a long file's chunks
    #: count once); beyond it the server answers 429 with Retry-After before reading the upload
    max_queue: int = Field(256, ge=1)
    #: seconds of decoded audio held by requests at once (16 kHz float32: 64 KB a second); a request
    #: whose audio does not fit now gets 429 before it is decoded (alone, any accepted length fits)
    max_audio_in_flight_seconds: float = Field(1800.0, gt=0)
    #: uploads decoded at once (each in a worker thread); more wait their turn
    decode_workers: int = Field(2, ge=1, le=64)
    #: accepted sample rates of uploads (Hz), checked from the file header before decoding
    min_sample_rate: int = Field(8000, ge=1000)
    max_sample_rate: int = Field(192_000, le=768_000)
    #: most channels in an upload
    max_channels: int = Field(8, ge=1, le=64)
    #: most samples (frames x channels) an upload may decode to: default 600 s of 48 kHz stereo
    max_decode_samples: int = Field(57_600_000, ge=16_000)
    #: long audio: neighbouring speech pieces (split at pauses by the VAD) are joined while the
    #: joined piece stays within this many seconds; 0: one piece per pause-delimited utterance
    vad_merge_seconds: float = Field(0.0, ge=0)
    #: origins allowed to call the API from a browser (CORS); empty: no CORS headers
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: largest accepted upload, enforced while the body is read (413)
    max_upload_mb: float = Field(25.0, gt=0)
    #: longest accepted audio in total (400); clips longer than the model's window are split
    max_audio_seconds: float = Field(600.0, gt=0)
    #: audio shared by consecutive pieces of a split clip
    chunk_overlap_seconds: float = Field(0.5, ge=0)
    #: shadow mode (server/shadow.py): ``MODEL=REFERENCE[:fraction]`` rules, comma-separated
    shadow: Annotated[list[str], NoDecode] = Field(default_factory=list)
    #: shadow mode: most shadow runs at once; beyond it (or while clients' requests queue) samples are dropped
    shadow_max_pending: int = Field(4, ge=1, le=1024)
    #: shadow mode: where the worst examples' audio is written (default: audio is never kept)
    shadow_audio_dir: Path | None = None
    #: when set, /v1/* requires ``Authorization: Bearer <key>``
    api_key: SecretStr | None = None
    #: how long shutdown waits for in-flight requests
    graceful_shutdown_seconds: float = Field(30.0, ge=0)
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    #: log lines as text or one JSON object each (ts, level, logger, request_id, message)
    log_format: Literal["text", "json"] = "text"
    # ---- engine vllm (pass-through to vLLM's AsyncEngineArgs; see docs/vllm.md) ----
    #: GPUs per model replica that split each layer (vLLM tensor parallelism)
    vllm_tensor_parallel_size: int = Field(1, ge=1)
    #: GPUs (or nodes) per replica that split the layer stack (vLLM pipeline parallelism)
    vllm_pipeline_parallel_size: int = Field(1, ge=1)
    #: fraction of device memory (on CPU: of RAM, which sizes the KV cache) for EACH served model;
    #: default: 0.9 / number of models on GPU, 0.08 on CPU
    vllm_gpu_memory_utilization: float | None = Field(None, gt=0, le=1)
    #: most sequences vLLM decodes at once (default: vLLM's)
    vllm_max_num_seqs: int | None = Field(None, ge=1)
    #: longest prompt + answer in tokens (default: the decoder's max_position_embeddings)
    vllm_max_model_len: int | None = Field(None, ge=16)
    #: any other AsyncEngineArgs field, as a JSON object, e.g. '{"enforce_eager": true}'
    vllm_args: Annotated[dict, NoDecode] = Field(default_factory=dict)

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value):
        return parse_models(value)

    @field_validator("shadow", mode="before")
    @classmethod
    def _shadow(cls, value):
        from .shadow import parse_shadow

        rules = parse_shadow(value)  # raises ValueError naming the bad rule
        return [f"{r.model}={r.reference}:{r.fraction:g}" for r in rules.values()]

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _cors(cls, value):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        return value

    @field_validator("vllm_args", mode="before")
    @classmethod
    def _vllm_args(cls, value):
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        if not isinstance(value, dict):
            raise ValueError("vllm_args must be a JSON object of AsyncEngineArgs fields")
        return value

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not re.match(r"^(auto|cpu|cuda(:\d+)?|mps)$", value):
            raise ValueError(f"device {value!r}: use auto, cpu, cuda or cuda:N")
        return value

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def model_dirs(self) -> dict[str, Path]:
        """Served name -> model dir, each checked to be a model dir (no weights are read)."""
        if self.models:
            dirs = {name: Path(path) for name, path in self.models.items()}
        else:
            dirs = {"demo": default_model_dir()}
            if (self.demo_pruned_dir / SPEC_FILE).is_file():
                dirs["demo-pruned"] = self.demo_pruned_dir
        for name, path in dirs.items():
            try:
                read_spec(path)
            except ModelDirError as exc:
                raise ModelDirError(f"model {name!r}: {exc}", param="model") from None
        return dirs
