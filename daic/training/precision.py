"""Device and numeric precision for a training worker, chosen by what the hardware supports.

On a GPU, mixed precision is on by default: bf16 autocast where the GPU runs bf16 natively (Ampere
and later: no loss scaling needed, fp32's exponent range; T4 and V100 only emulate it, slowly),
else fp16 autocast with a gradient scaler
(Micikevicius et al., 2018, "Mixed Precision Training"). On a CPU the default is fp32: bf16
autocast is allowed when asked for but is slower than fp32 on most CPUs without AMX.
"""
from __future__ import annotations

from typing import Literal

import torch

Resolved = Literal["fp32", "bf16", "fp16"]


def resolve_precision(requested: str, device_type: str, bf16_supported: bool) -> Resolved:
    """Pure rule: the precision a worker on ``device_type`` actually trains in."""
    if device_type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device type {device_type!r}; expected 'cpu' or 'cuda'")
    if requested == "auto":
        if device_type == "cuda":
            return "bf16" if bf16_supported else "fp16"
        return "fp32"
    if requested == "fp32":
        return "fp32"
    if requested == "bf16":
        if not bf16_supported:
            raise ValueError(f"precision 'bf16' requested but this {device_type} device does not support bf16")
        return "bf16"
    if requested == "fp16":
        if device_type != "cuda":
            raise ValueError("precision 'fp16' needs a CUDA device")
        return "fp16"
    raise ValueError(f"unknown precision {requested!r}; valid: auto, fp32, bf16, fp16")


def bf16_supported(device: torch.device) -> bool:
    if device.type == "cuda":
        from daic.training.device_plan import native_bf16

        return native_bf16(device)
    return True  # CPU autocast supports bf16 everywhere (speed varies)


def autocast_dtype(precision: Resolved) -> torch.dtype | None:
    """The autocast dtype, or None for plain fp32."""
    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def select_device(use_gpu: bool) -> torch.device:
    """Device for a process outside Ray Train (Ray workers use ``ray.train.torch.get_device``)."""
    if not use_gpu:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise RuntimeError(
            "use_gpu=True but torch sees no CUDA device "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda})"
        )
    return torch.device("cuda", torch.cuda.current_device())
