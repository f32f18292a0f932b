"""What the device computes fast: the one place that turns ``precision="auto"`` and ``channels_last=None`` into a
choice, with the reason it was made.

bf16 pays only where the hardware computes it: CUDA devices that report bf16 support, and CPUs where oneDNN
reports bf16 support (AVX-512-bf16 or AMX). Measured on 2-core machines: a bf16 convolution is ~5x faster than
float32 with AMX, ~2x with AVX-512-bf16, and ~50x *slower* on AVX2-only CPUs, where oneDNN emulates it. So
``auto`` picks bf16 only where it is real, and an explicit bf16 elsewhere runs with one warning.

channels_last (NHWC) convolutions measured faster on every CPU kind here (float32 and bf16) and on CUDA with
bf16/fp16 tensor cores; on CUDA in float32 the default layout is kept.
"""

from __future__ import annotations

import functools
import os
import time
import warnings
from dataclasses import dataclass

import torch

AUTO = "auto"


@dataclass(frozen=True)
class Choice:
    """A resolved setting and why it was chosen."""

    value: object
    reason: str


@functools.cache
def _cpu_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """True where the device computes bf16 natively (CUDA with bf16; CPUs with AVX-512-bf16 or AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return _cpu_bf16()
    return False


def describe_cpu() -> str:
    """``AMX``, ``AVX-512-bf16``, ``AVX-512`` or ``AVX2`` (what ATen and oneDNN will use)."""
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "")
    except OSError:
        pass
    capability = torch.backends.cpu.get_cpu_capability()
    if _cpu_bf16():
        isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "ALL").upper()  # oneDNN may be limited below the CPU's best
        return "AMX" if "amx_bf16" in flags and ("AMX" in isa or isa == "ALL") else "AVX-512-bf16"
    return "AVX-512" if "AVX512" in capability else capability or "unknown"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device) if torch.cuda.is_available() else "CUDA (unavailable)"
    return f"CPU ({describe_cpu()})" if device.type == "cpu" else device.type


@functools.cache
def bf16_slowdown() -> float:
    """How many times slower a bf16 3x3 convolution is than float32 on this CPU (a probe of up to ~1 s)."""
    x = torch.randn(16, 64, 32, 32)
    w = torch.randn(64, 64, 3, 3)

    def per_call(dtype) -> float:
        a, b = x.to(dtype), w.to(dtype)
        torch.nn.functional.conv2d(a, b, padding=1)  # warm-up (oneDNN primitive creation)
        start, n = time.perf_counter(), 0
        while n < 2 or (time.perf_counter() - start < 0.1 and n < 20):
            torch.nn.functional.conv2d(a, b, padding=1)
            n += 1
        return (time.perf_counter() - start) / n

    return per_call(torch.bfloat16) / per_call(torch.float32)


def warn_slow_bf16(device: str | torch.device, what: str = "bf16") -> None:
    """One warning, with the measured slowdown, when bf16 is asked for where the hardware emulates it."""
    device = torch.device(device)
    if bf16_supported(device):
        return
    if device.type == "cpu":
        detail = (f"this CPU ({describe_cpu()}) has no bf16 instructions, so oneDNN emulates them: a bf16 "
                  f"convolution measured {bf16_slowdown():.0f}x slower than float32 here")
    else:
        detail = f"{_device_name(device)} does not compute bf16 natively"
    warnings.warn(f"{what} requested but {detail}; use precision 'auto' or 'float32' to run at full speed",
                  stacklevel=3)


def choose_precision(requested: str, device: str | torch.device = "cpu") -> Choice:
    """Resolve ``"auto"`` to ``"bf16"`` or ``"float32"`` for ``device``; explicit choices pass through (an
    explicit bf16 on hardware without bf16 warns once)."""
    device = torch.device(device)
    name = _device_name(device)
    if requested != AUTO:
        if requested == "bf16" and not bf16_supported(device):
            warn_slow_bf16(device, "--precision bf16")
            return Choice("bf16", f"requested explicitly (slow here: {name} has no native bf16)")
        return Choice(requested, f"requested explicitly ({name})")
    if bf16_supported(device):
        return Choice("bf16", f"auto: {name} computes bf16 natively")
    return Choice("float32", f"auto: {name} has no native bf16 (emulated bf16 is ~50x slower than float32)")


def choose_channels_last(requested: bool | None, device: str | torch.device, precision: str) -> Choice:
    """Resolve ``None`` (auto): on for CPUs (measured faster in float32 and bf16) and for CUDA under bf16/fp16."""
    device = torch.device(device)
    if requested is not None:
        return Choice(bool(requested), "requested explicitly")
    if device.type == "cpu":
        return Choice(True, "auto: NHWC convolutions measured faster on CPU in float32 and bf16")
    if device.type == "cuda" and precision in ("bf16", "fp16"):
        return Choice(True, "auto: NHWC feeds tensor cores under bf16/fp16")
    return Choice(False, f"auto: default layout for {device.type} in {precision}")


def inference_dtype(dtype, device: str | torch.device = "cpu") -> torch.dtype | None:
    """The compute dtype for an inference path: ``"auto"`` gives bf16 where native and None (float32) elsewhere;
    an explicit bf16 where it is emulated warns once. None and float32 stay the float32 reference."""
    if isinstance(dtype, str):
        if dtype == AUTO:
            return torch.bfloat16 if bf16_supported(device) else None
        names = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "float32": None, "fp32": None,
                 "fp16": torch.float16, "float16": torch.float16}
        if dtype not in names:
            raise ValueError(f"unknown dtype {dtype!r}: use auto, float32, bf16 or fp16")
        dtype = names[dtype]
    if dtype == torch.float32:
        return None
    if dtype == torch.bfloat16:
        warn_slow_bf16(device, "bf16 inference")
    return dtype


def parse_device(text: str | torch.device) -> torch.device:
    """A torch device from a name, checked against this machine: an unknown name or a CUDA device that is not
    there is a ValueError that says what to use instead."""
    try:
        device = torch.device(text)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {text!r}: use cpu, cuda or cuda:N") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {text!r}: CUDA is not available here (torch {torch.__version__}, "
                             f"{'built without CUDA' if torch.version.cuda is None else 'no GPU found'}): use cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"device {text!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif device.type in ("mps", "xpu"):
        backend = getattr(torch.backends, "mps", None) if device.type == "mps" else getattr(torch, "xpu", None)
        if backend is None or not backend.is_available():
            raise ValueError(f"device {text!r}: {device.type.upper()} is not available here: use cpu")
    elif device.type != "cpu":
        raise ValueError(f"device {text!r} is not supported: use cpu or cuda")
    return device
