"""The slimspeech server: ``create_app`` (the FastAPI app factory) and ``slimspeech serve``.

    slimspeech serve --model pruned=runs/export --model base=runs/base --port 8000
    SLIMSPEECH_MODELS=pruned=runs/export uvicorn --factory server.main:create_app

    from server.main import create_app
    app = create_app(Settings(models={"tiny": "path/to/model"}))

Start-up: the model dirs are checked at once (a missing dir fails here, with one line);
loading and warm-up run in the background, /health answers meanwhile and /ready turns 200
when every model is warm. Shutdown (SIGTERM/Ctrl-C): uvicorn stops accepting, in-flight
requests finish (up to graceful_shutdown_seconds), then the engine drains and stops.
Layers: routers (HTTP) -> service (request flow) -> engine (scheduler + torch runner).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi
from fastapi_offline import FastAPIOffline
from pydantic import ValidationError

from speechllm.errors import SlimError

from .engines import make_engine
from .errors import install_error_handlers
from .metrics import UNKNOWN, ServerMetrics
from .logs import HEADER, configure_logging, uvicorn_log_config
from .middleware import AdmissionMiddleware, ApiKeyMiddleware, BodyLimitMiddleware, RequestIdMiddleware
from .routers import audio, models, ops, playground, shadow
from .service import SpeechService
from .settings import Settings, parse_models
from .shadow import Shadow, parse_shadow

log = logging.getLogger(__name__)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    model_dirs = settings.model_dirs()
    metrics = ServerMetrics()
    engine = make_engine(settings, model_dirs)
    service = SpeechService(engine, metrics, settings)
    rules = parse_shadow(settings.shadow)
    if rules:
        Shadow.check(rules, list(model_dirs))
        service.shadow = Shadow(rules, engine, metrics, max_pending=settings.shadow_max_pending,
                                audio_dir=settings.shadow_audio_dir)
    metrics.attach(engine.memory_stats, engine.queue_depth, lambda: engine.ready, engine.engine_stats)

    async def load(app: FastAPI) -> None:
        try:
            await engine.start()
        except Exception as exc:  # keep answering: /health, /ready and /v1 say what failed
            service.load_error = str(exc) or type(exc).__name__
            log.exception("model loading failed: %s", service.load_error)
            return
        for info in engine.models().values():
            metrics.add_model(info)
        if service.shadow is not None:
            service.shadow.start()
        log.info("ready: engine %s serving %s", engine.name, ", ".join(engine.models()))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(load(app), name="slimspeech-load")
        app.state.loading = loading
        try:
            yield
        finally:
            # uvicorn has stopped accepting and let in-flight requests finish; the engine drains the rest
            if not loading.done():
                loading.cancel()
            await asyncio.gather(loading, return_exceptions=True)
            if service.shadow is not None:
                await service.shadow.drain()
            await engine.stop()
            service.close()
            log.info("stopped")

    # /docs and /redoc from the assets in fastapi-offline's wheel: they work on a machine without network
    app = FastAPIOffline(title="slimspeech", summary="OpenAI-compatible speech recognition and translation",
                         version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.service = service
    app.state.metrics = metrics

    def rejected(status: int) -> None:
        metrics.observe_request(UNKNOWN, UNKNOWN, status)

    install_error_handlers(app, on_validation_error=rejected)
    app.include_router(audio.router)
    app.include_router(models.router)
    app.include_router(ops.router)
    app.include_router(shadow.router)
    playground.install(app)
    app.openapi = lambda: openapi_schema(app)
    # outermost last: the key is checked first, then admission (before any body byte is read),
    # then the body is counted as it is read
    app.add_middleware(BodyLimitMiddleware, limit=settings.max_upload_bytes, on_reject=rejected)
    app.add_middleware(AdmissionMiddleware, admission=lambda: service.admission, on_reject=rejected)
    api_key = settings.api_key.get_secret_value() if settings.api_key else None
    app.add_middleware(ApiKeyMiddleware, api_key=api_key, on_reject=rejected)
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type", HEADER],
                           expose_headers=["Retry-After", HEADER])
    # outermost of all: every answer, CORS preflights and 401/413/429 included, carries X-Request-Id
    app.add_middleware(RequestIdMiddleware)
    return app


def openapi_schema(app: FastAPI) -> dict:
    """FastAPI's document, corrected to what the server sends and takes: validation errors are 400s in
    the error envelope (never FastAPI's 422 body), and an optional form field is its type or absent
    (a multipart form has no null: FastAPI's ``anyOf [type, null]`` would invite the string "null")."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version, summary=app.summary, routes=app.routes)
        forms = set()
        for path in schema.get("paths", {}).values():
            for op in path.values():
                op.get("responses", {}).pop("422", None)
                body = op.get("requestBody", {}).get("content", {}).get("multipart/form-data", {})
                if "$ref" in body.get("schema", {}):
                    forms.add(body["schema"]["$ref"].rsplit("/", 1)[-1])
        for name in forms:
            for field in schema["components"]["schemas"][name].get("properties", {}).values():
                kinds = field.get("anyOf", [])
                if len(kinds) == 2 and {"type": "null"} in kinds:
                    field.update(next(k for k in kinds if k != {"type": "null"}))
                    del field["anyOf"]
        for name in ("HTTPValidationError", "ValidationError"):
            schema.get("components", {}).get("schemas", {}).pop(name, None)
        app.openapi_schema = schema
    return app.openapi_schema


# ---- slimspeech serve ---------------------------------------------------------------------
FLAGS = {  # flag -> (settings field, type, help)
    "--host": ("host", str, "address to bind (default 127.0.0.1)"),
    "--threads": ("threads", int, "CPU threads for torch (default: one per core)"),
    "--port": ("port", int, "port (default 8000)"),
    "--engine": ("engine", str, "torch | vllm (default torch)"),
    "--device": ("device", str, "auto | cpu | cuda | cuda:N (default auto: cuda when available)"),
    "--dtype": ("dtype", str, "auto | float32 | bfloat16 | float16 (default auto)"),
    "--scheduler": ("scheduler", str, "engine torch: continuous (join/leave a running decode at each step) | "
                                      "static (a batch runs to its end) (default continuous)"),
    "--max-batch-size": ("max_batch_size", int, "most requests decoded together per model (default 8)"),
    "--max-wait-ms": ("max_wait_ms", float, "static: longest wait for a batch to fill; continuous: longest wait "
                                            "for a burst on an idle server (default 10)"),
    "--waiting-served-ratio": ("waiting_served_ratio", float,
                               "continuous: newcomers join a running decode together once they are this many "
                               "times its rows (default 1.2; 0: at the next step)"),
    "--max-waiting-steps": ("max_waiting_steps", int,
                            "continuous: the most decoding steps a newcomer waits to join (default 20)"),
    "--max-queue": ("max_queue", int, "requests in the server at once before 429, a long file counting once "
                                      "(default 256)"),
    "--max-audio-in-flight-seconds": ("max_audio_in_flight_seconds", float,
                                      "decoded audio held at once before 429 (default 1800)"),
    "--decode-workers": ("decode_workers", int, "uploads decoded at once (default 2)"),
    "--min-sample-rate": ("min_sample_rate", int, "lowest accepted sample rate in Hz (default 8000)"),
    "--max-sample-rate": ("max_sample_rate", int, "highest accepted sample rate in Hz (default 192000)"),
    "--max-channels": ("max_channels", int, "most channels in an upload (default 8)"),
    "--max-decode-samples": ("max_decode_samples", int,
                             "most samples (frames x channels) an upload may decode to (default 57600000)"),
    "--vad-merge-seconds": ("vad_merge_seconds", float,
                            "long audio: join speech pieces up to this length (default 0: one per utterance)"),
    "--cors-origins": ("cors_origins", str, "comma-separated origins allowed by CORS (default: none)"),
    "--max-upload-mb": ("max_upload_mb", float, "largest upload (default 25)"),
    "--max-audio-seconds": ("max_audio_seconds", float, "longest audio in total (default 600)"),
    "--chunk-overlap-seconds": ("chunk_overlap_seconds", float, "overlap of split long audio (default 0.5)"),
    "--demo-pruned-dir": ("demo_pruned_dir", str, "pruned demo export served beside the demo model"),
    "--shadow": ("shadow", str, "MODEL=REFERENCE[:FRACTION],...: also run a sampled fraction (default 1) of MODEL's "
                                "requests on REFERENCE in the background and compare (GET /v1/shadow, "
                                "slimspeech_shadow_* metrics)"),
    "--shadow-max-pending": ("shadow_max_pending", int, "shadow runs at once before samples are dropped (default 4)"),
    "--shadow-audio-dir": ("shadow_audio_dir", str, "write the worst shadow examples' audio here (default: none kept)"),
    "--api-key": ("api_key", str, "require 'Authorization: Bearer KEY' (prefer SLIMSPEECH_API_KEY)"),
    "--graceful-shutdown-seconds": ("graceful_shutdown_seconds", float, "wait for in-flight requests (default 30)"),
    "--log-level": ("log_level", str, "critical | error | warning | info | debug"),
    "--log-format": ("log_format", str, "text | json: one JSON object per log line (default text); "
                                        "every line carries its request's X-Request-Id"),
    "--vllm-tensor-parallel-size": ("vllm_tensor_parallel_size", int, "engine vllm: GPUs per model (default 1)"),
    "--vllm-pipeline-parallel-size": ("vllm_pipeline_parallel_size", int, "engine vllm: pipeline stages (default 1)"),
    "--vllm-gpu-memory-utilization": ("vllm_gpu_memory_utilization", float,
                                      "engine vllm: memory fraction per model (default 0.9/models on GPU, 0.08 on CPU)"),
    "--vllm-max-num-seqs": ("vllm_max_num_seqs", int, "engine vllm: most sequences decoded at once"),
    "--vllm-max-model-len": ("vllm_max_model_len", int, "engine vllm: longest prompt + answer in tokens"),
    "--vllm-args": ("vllm_args", str, "engine vllm: other AsyncEngineArgs as JSON, e.g. '{\"enforce_eager\": true}'"),
}
FIELD_FLAGS = {field: flag for flag, (field, _, _) in FLAGS.items()} | {"models": "--model"}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="slimspeech serve", description="Serve models over the OpenAI audio API. "
                                "Every flag also reads from SLIMSPEECH_<FLAG> (e.g. SLIMSPEECH_MAX_BATCH_SIZE).")
    p.add_argument("--model", action="append", metavar="NAME=DIR",
                   help="serve the model dir DIR as NAME (repeat for several; default: the demo model)")
    for flag, (field, type_, help_) in FLAGS.items():
        p.add_argument(flag, dest=field, type=type_, default=None, help=help_)
    return p


def settings_from_args(argv: list[str]) -> Settings:
    args = build_parser().parse_args(argv)
    overrides = {k: v for k, v in vars(args).items() if v is not None and k != "model"}
    try:
        if args.model:
            overrides["models"] = parse_models(args.model)
        return Settings(**overrides)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0]) if err.get("loc") else ""
        flag = FIELD_FLAGS.get(field, field)
        env = f"SLIMSPEECH_{field.upper()}"
        raise SlimError(f"{flag} / {env}: {err['msg']}", param=flag) from None
    except ValueError as exc:
        raise SlimError(f"--model: {exc}", param="--model") from None


def cli(argv: list[str]) -> int:
    import uvicorn

    settings = settings_from_args(argv)
    configure_logging(settings.log_level, settings.log_format)
    if settings.log_format == "json":  # nothing but JSON lines on stderr (read when transformers/vLLM load)
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"  # the weight-loading bars
        os.environ.setdefault("VLLM_CONFIGURE_LOGGING", "0")  # vLLM's lines go through our handler
    app = create_app(settings)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level,
                log_config=uvicorn_log_config(settings.log_level),
                timeout_graceful_shutdown=settings.graceful_shutdown_seconds or None)
    return 0


if __name__ == "__main__":
    import sys

    sys.exit(cli(sys.argv[1:]))
