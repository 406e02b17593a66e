"""What the machine can do, asked once, in one place."""

from __future__ import annotations

import functools
from pathlib import Path


@functools.cache
def has_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@functools.cache
def native_bf16() -> bool:
    """bf16 runs at full speed here (a GPU that supports it, or AVX512-BF16/AMX CPUs);
    elsewhere it is emulated and slower than fp32."""
    if has_cuda():
        import torch

        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags
