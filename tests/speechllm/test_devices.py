"""speechllm.devices: what the CPU can do, as torch reports it and as the kernel does."""

from __future__ import annotations

from pathlib import Path

import pytest

from speechllm.devices import cpu_has_native_bf16


def test_native_bf16_agrees_with_the_kernels_cpu_flags():
    """torch's CPU feature check (AVX512-BF16 or AMX) says what /proc/cpuinfo's flags say."""
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo (not Linux)")
    flags = set()
    for line in cpuinfo.read_text().splitlines():
        if line.startswith("flags"):
            flags |= set(line.split(":", 1)[1].split())
    if not flags:
        pytest.skip("/proc/cpuinfo lists no x86 flags (another architecture)")
    assert cpu_has_native_bf16() == bool(flags & {"avx512_bf16", "amx_bf16", "amx_tile"})
