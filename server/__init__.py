"""slimspeech server: the OpenAI audio API over batched, task-routed SpeechLLMs.

    slimspeech serve --model pruned=runs/export --model base=runs/base

Files: main.py (app factory, CLI), settings.py, routers/ (HTTP only), service.py (request
flow, no torch), longform.py (splitting long audio), formats.py (response bodies),
engines/ (base.py interface, scheduler.py dynamic batcher, runner.py torch model runner,
torch_engine.py, vllm_engine.py), metrics.py, middleware.py (API key, upload limit), errors.py.
"""
