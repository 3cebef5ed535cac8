"""Prometheus metrics, prefix ``slimspeech_``, labels ``model`` and ``task`` (one registry per app).

Per request (labels model, task):
    slimspeech_request_duration_seconds     end-to-end latency (histogram)
    slimspeech_queue_seconds                waiting for a batch (histogram, per clip)
    slimspeech_time_to_first_token_seconds  submit -> first generated token (histogram)
    slimspeech_encoder_seconds              encoder + projector of the clip's batch (histogram)
    slimspeech_decode_seconds               batched greedy decoding of the clip's batch (histogram)
    slimspeech_batch_size                   size of the batch each clip ran in (histogram)
    slimspeech_requests_total               by HTTP status (label status; 499 = client went away)
    slimspeech_generated_tokens_total       tokens generated
    slimspeech_audio_seconds_total          audio answered (successful requests)
    slimspeech_real_time_factor             end-to-end latency / audio duration (histogram)
Per model (label model): slimspeech_decoder_layers, slimspeech_parameters, slimspeech_weight_bytes.
Process: slimspeech_memory_rss_bytes, slimspeech_queue_depth, slimspeech_ready, and on GPU
slimspeech_cuda_memory_allocated_bytes / slimspeech_cuda_memory_peak_bytes.
Engine vllm, per model: slimspeech_engine_running_requests, slimspeech_engine_waiting_requests,
slimspeech_kv_cache_usage_ratio (vLLM's scheduler figures).
Shadow mode (server/shadow.py; labels model, reference, task): slimspeech_shadow_wer,
slimspeech_shadow_chrf (histograms), slimspeech_shadow_requests_total (labels model, reference,
outcome).

Requests that name no served model (or fail before the task is known) carry model/task
``unknown``, so a client cannot grow the label set.
"""

from __future__ import annotations

import os
import resource
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
UNKNOWN = "unknown"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
SHADOW_WER_BUCKETS = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 1.0, 2.0)
SHADOW_CHRF_BUCKETS = (10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 100.0)
RTF_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
#: every per-request metric family (as exposed), for tests and dashboards
REQUEST_METRICS = (
    "slimspeech_request_duration_seconds", "slimspeech_queue_seconds", "slimspeech_time_to_first_token_seconds",
    "slimspeech_encoder_seconds", "slimspeech_decode_seconds", "slimspeech_batch_size", "slimspeech_requests",
    "slimspeech_generated_tokens", "slimspeech_audio_seconds", "slimspeech_real_time_factor",
)
MODEL_METRICS = ("slimspeech_decoder_layers", "slimspeech_parameters", "slimspeech_weight_bytes")


def rss_bytes() -> float:
    """Resident set size of this process now (Linux /proc), else the peak from getrusage."""
    try:
        with open("/proc/self/statm") as f:
            return float(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))
    except (OSError, ValueError, IndexError):
        return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


#: engine_stats() key -> (metric, help), per model (engine vllm)
ENGINE_FIGURES = {
    "running": ("slimspeech_engine_running_requests", "Sequences the engine is decoding now (vLLM scheduler)"),
    "waiting": ("slimspeech_engine_waiting_requests", "Sequences waiting in the engine's scheduler (vLLM)"),
    "kv_cache_usage": ("slimspeech_kv_cache_usage_ratio", "Fraction of the KV cache in use (vLLM, 0-1)"),
}


class _ProcessCollector(Collector):
    def __init__(self, memory_stats: Callable[[], dict], queue_depth: Callable[[], int], ready: Callable[[], bool],
                 engine_stats: Callable[[], dict] = dict):
        self.memory_stats, self.queue_depth, self.ready = memory_stats, queue_depth, ready
        self.engine_stats = engine_stats

    def collect(self):
        yield GaugeMetricFamily("slimspeech_memory_rss_bytes", "Resident memory of the server process",
                                value=rss_bytes())
        stats = self.memory_stats()
        if "cuda_allocated_bytes" in stats:
            yield GaugeMetricFamily("slimspeech_cuda_memory_allocated_bytes", "CUDA memory allocated by tensors",
                                    value=stats["cuda_allocated_bytes"])
            yield GaugeMetricFamily("slimspeech_cuda_memory_peak_bytes", "Peak CUDA memory allocated",
                                    value=stats["cuda_peak_bytes"])
        yield GaugeMetricFamily("slimspeech_queue_depth", "Requests waiting for a batch", value=self.queue_depth())
        yield GaugeMetricFamily("slimspeech_ready", "1 when every model is loaded and warmed up",
                                value=1.0 if self.ready() else 0.0)
        figures = self.engine_stats()
        for key, (name, help_) in (ENGINE_FIGURES.items() if figures else ()):
            family = GaugeMetricFamily(name, help_, labels=["model"])
            for model, values in figures.items():
                family.add_metric([model], values.get(key, 0.0))
            yield family


class ServerMetrics:
    def __init__(self):
        self.registry = r = CollectorRegistry(auto_describe=True)
        mt = ["model", "task"]
        self.request_seconds = Histogram("slimspeech_request_duration_seconds", "End-to-end request latency",
                                         mt, buckets=LATENCY_BUCKETS, registry=r)
        self.queue_seconds = Histogram("slimspeech_queue_seconds", "Time a clip waited for its batch",
                                       mt, buckets=LATENCY_BUCKETS, registry=r)
        self.ttft_seconds = Histogram("slimspeech_time_to_first_token_seconds", "Submit to first generated token",
                                      mt, buckets=LATENCY_BUCKETS, registry=r)
        self.encoder_seconds = Histogram("slimspeech_encoder_seconds", "Encoder + projector time of the batch",
                                         mt, buckets=LATENCY_BUCKETS, registry=r)
        self.decode_seconds = Histogram("slimspeech_decode_seconds", "Greedy decoding time of the batch",
                                        mt, buckets=LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram("slimspeech_batch_size", "Size of the batch each clip ran in",
                                    mt, buckets=BATCH_BUCKETS, registry=r)
        self.requests = Counter("slimspeech_requests", "Requests by HTTP status", mt + ["status"], registry=r)
        self.generated_tokens = Counter("slimspeech_generated_tokens", "Generated tokens", mt, registry=r)
        self.audio_seconds = Counter("slimspeech_audio_seconds", "Seconds of audio transcribed or translated", mt, registry=r)
        self.real_time_factor = Histogram("slimspeech_real_time_factor", "Processing time / audio duration",
                                          mt, buckets=RTF_BUCKETS, registry=r)
        self.decoder_layers = Gauge("slimspeech_decoder_layers", "Decoder layers of the model", ["model"], registry=r)
        self.parameters = Gauge("slimspeech_parameters", "Parameters of the model", ["model"], registry=r)
        self.weight_bytes = Gauge("slimspeech_weight_bytes", "Bytes of the model's weights", ["model"], registry=r)
        shadow = ["model", "reference", "task"]
        self.shadow = {
            "wer": Histogram("slimspeech_shadow_wer", "Shadow mode: WER of the model's text against the reference "
                             "model's (a fraction, per request)", shadow, buckets=SHADOW_WER_BUCKETS, registry=r),
            "chrf": Histogram("slimspeech_shadow_chrf", "Shadow mode: sentence chrF of the model's translation "
                              "against the reference model's (0-100)", shadow, buckets=SHADOW_CHRF_BUCKETS, registry=r),
        }
        self.shadow_requests = Counter("slimspeech_shadow_requests", "Shadow mode: sampled requests by outcome",
                                       ["model", "reference", "outcome"], registry=r)

    def attach(self, memory_stats: Callable[[], dict], queue_depth: Callable[[], int],
               ready: Callable[[], bool], engine_stats: Callable[[], dict] = dict) -> None:
        self.registry.register(_ProcessCollector(memory_stats, queue_depth, ready, engine_stats))

    def add_model(self, info) -> None:
        """Static gauges of a loaded model, and zeroed series for each of its tasks (dashboards see 0s)."""
        self.decoder_layers.labels(info.name).set(info.decoder_layers)
        self.parameters.labels(info.name).set(info.parameters)
        self.weight_bytes.labels(info.name).set(info.weight_bytes)
        for task in info.task_labels():
            for metric in (self.request_seconds, self.queue_seconds, self.ttft_seconds, self.encoder_seconds,
                           self.decode_seconds, self.batch_size, self.generated_tokens, self.audio_seconds,
                           self.real_time_factor):
                metric.labels(info.name, task)
            self.requests.labels(info.name, task, "200")

    def observe_clip(self, model: str, task: str, result) -> None:
        """Engine timings of one clip (an EngineResult)."""
        self.queue_seconds.labels(model, task).observe(result.queue_seconds)
        self.encoder_seconds.labels(model, task).observe(result.encoder_seconds)
        self.decode_seconds.labels(model, task).observe(result.decode_seconds)
        self.batch_size.labels(model, task).observe(result.batch_size)
        self.generated_tokens.labels(model, task).inc(len(result.token_ids))

    def observe_request(self, model: str, task: str, status: int, seconds: float | None = None,
                        audio_seconds: float | None = None, first_token: float | None = None) -> None:
        self.requests.labels(model, task, str(status)).inc()
        if status != 200 or seconds is None:
            return
        self.request_seconds.labels(model, task).observe(seconds)
        if first_token is not None:
            self.ttft_seconds.labels(model, task).observe(first_token)
        if audio_seconds:
            self.audio_seconds.labels(model, task).inc(audio_seconds)
            self.real_time_factor.labels(model, task).observe(seconds / audio_seconds)

    def shadow_series(self, model: str, reference: str, task: str) -> None:
        """Zeroed shadow series of one pair and task (exported from start-up)."""
        self.shadow["chrf" if task.startswith("translate") else "wer"].labels(model, reference, task)
        for outcome in ("compared", "dropped_load"):
            self.shadow_requests.labels(model, reference, outcome)

    def shadow_outcome(self, model: str, reference: str, outcome: str) -> None:
        self.shadow_requests.labels(model, reference, outcome).inc()

    def shadow_observe(self, model: str, reference: str, task: str, metric: str, value: float) -> None:
        self.shadow[metric].labels(model, reference, task).observe(value)
        self.shadow_outcome(model, reference, "compared")

    def render(self) -> bytes:
        return generate_latest(self.registry)
