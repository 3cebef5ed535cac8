"""speechllm: what a SpeechLLM is (audio, model families, tasks, generation, layer surgery, model dirs).

Imports only torch, transformers, soundfile (and scipy for resampling); never ``server`` or ``prune_tools``.
"""

__version__ = "0.1.0"
