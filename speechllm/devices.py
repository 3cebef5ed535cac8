"""Device and dtype names -> what torch takes: the one resolution the CLI verbs and the server share.

    from speechllm.devices import DTYPES, DTYPE_CHOICES, resolve_device, resolve_dtype

    device = resolve_device("auto")            # "cuda" when a GPU is visible, else "cpu"
    dtype = resolve_dtype("auto", device)      # bfloat16 on a GPU, float32 on a CPU
    model = load_model(path, device=device, dtype=dtype)

Names: devices ``auto``, ``cpu``, ``cuda``, ``cuda:N`` (any other name torch knows is passed
through); dtypes ``auto`` and the keys of ``DTYPES``. A CUDA device without CUDA, or an unknown
dtype, is a ``SlimError`` naming the flag (``param="device"`` / ``"dtype"``), so the CLI prints
one line and the server answers 400 instead of failing later inside torch.
"""

from __future__ import annotations

import torch

from .errors import SlimError

#: dtype names accepted by --dtype, in the order help texts list them
DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: what a ``--dtype`` option accepts: ``auto`` (bfloat16 on CUDA, float32 elsewhere) or a name of DTYPES
DTYPE_CHOICES = ("auto", *DTYPES)


def resolve_device(name: str = "auto") -> str:
    """``auto`` -> ``cuda`` if CUDA is available, else ``cpu``; ``cuda``/``cuda:N`` need CUDA (SlimError)."""
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise SlimError(f"device {name!r} requested but CUDA is not available: use --device cpu", param="device")
    return name


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 matmuls in hardware (AVX512-BF16 or AMX), where ``--dtype
    bfloat16`` is faster than float32 (docs/performance.md, "bfloat16 on a CPU"); elsewhere torch emulates
    bfloat16."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_dtype(name: str = "auto", device: str = "cpu") -> torch.dtype:
    """``auto`` -> bfloat16 on a CUDA device, float32 elsewhere (CPU half precision is slow unless
    ``cpu_has_native_bf16``, and even then it changes some outputs: a choice to make, not a default); else
    DTYPES[name]."""
    if name == "auto":
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        return DTYPES[name]
    except KeyError:
        raise SlimError(f"dtype {name!r}: choose one of {', '.join(DTYPE_CHOICES)}", param="dtype") from None
