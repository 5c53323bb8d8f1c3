"""What a training worker does on the device it got: precision, batch size, learning rate,
``torch.compile`` and where the training set lives -- chosen from the device's capabilities.

:func:`choose` is pure (a table of fake capabilities tests it); :func:`probe` reads the real
device. Each Ray Train worker probes its own device and chooses (the driver may run on a head
without a GPU), so a RayJob that lands on an A100, a T4 or a CPU pod trains the right way there.

The rules, and their basis:

* **Precision** ``auto``: bf16 autocast only on a GPU that runs bf16 *natively* (compute capability
  >= 8.0: Ampere, Hopper, Ada; ``torch.cuda.is_bf16_supported(including_emulation=False)``); a GPU
  that only emulates it (T4, V100) gets fp16 autocast with a gradient scaler (Micikevicius et al.
  2018, "Mixed Precision Training"); a CPU trains in fp32 (bf16 autocast on CPUs without AMX is
  slower than fp32). An explicit ``bf16`` on an emulating GPU is refused, naming the device.
* **Batch size** (per worker) ``auto``: 128 on a CPU. On a GPU 2048: for this 0.26M-parameter
  network the GPU is bound by per-step launch cost, and an H100 measured 51k samples/s at batch
  128 against 587k at 2048 in bf16 (DESIGN.md); it is halved while an epoch would have fewer than
  :data:`MIN_STEPS_PER_EPOCH` steps per worker (a small fine-tune still takes real steps), and
  never goes below 128.
* **Learning rate**: with an explicit batch size, ``lr`` is used as given (the caller chose both).
  With the batch chosen here, ``lr`` is read as the peak learning rate at
  :data:`REFERENCE_BATCH` examples per worker and, with ``lr_scaling="sqrt"``, scaled by
  ``sqrt(batch / 128)``, the square-root rule
  for adaptive optimizers such as Adam (Malladi et al. 2022, "On the SDEs and Scaling Rules for
  Adaptive Gradient Algorithms"; the linear rule of Goyal et al. 2017 is SGD's), capped at
  :data:`MAX_LR`.
* **torch.compile** ``auto``: on only on a GPU at per-worker batches >= :data:`COMPILE_MIN_BATCH`:
  on the H100, compiling cost throughput at batch 128 (41k -> 38k) and 2048 (587k -> 514k) and paid
  only at 8192 (659k -> 886k); on a CPU it is never automatic (minutes of compilation for seconds
  of training).
* **Data on the device** ``auto``: the training set (and each epoch's index order) is copied to a
  GPU once when it takes at most :data:`DEVICE_DATA_SHARE` of the GPU's memory, else batches are
  staged through pinned host memory; on a CPU both are the same memory.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal, Optional

from daic.training.precision import Resolved

REFERENCE_BATCH = 128
CPU_BATCH = 128
GPU_BATCH = 2048
MIN_STEPS_PER_EPOCH = 16
MAX_LR = 0.02
COMPILE_MIN_BATCH = 8192
DEVICE_DATA_SHARE = 0.25
# float32 image (28x28) + int64 label + float32 weight, per training example.
BYTES_PER_EXAMPLE = 28 * 28 * 4 + 8 + 4


@dataclass(frozen=True)
class DeviceCaps:
    """What matters about one worker's device."""

    kind: Literal["cpu", "cuda"]
    name: str = "cpu"
    native_bf16: bool = False  # bf16 arithmetic in hardware (not emulated)
    fp16: bool = False  # fp16 autocast available (any CUDA GPU)
    memory_bytes: int = 0  # device memory (0 on a CPU: host memory is not the limit here)
    compute_capability: Optional[tuple[int, int]] = None


@dataclass(frozen=True)
class TrainPlan:
    """What one worker trains with, and why (``reasons``, one line per choice)."""

    precision: Resolved
    batch_size: int
    lr: float
    compile: bool
    data_on_device: bool
    reasons: tuple[str, ...]

    def as_record(self) -> dict:
        return {"precision": self.precision, "batch_size": self.batch_size, "lr": self.lr,
                "compile": self.compile, "data_on_device": self.data_on_device, "reasons": list(self.reasons)}


def choose_precision(requested: str, caps: DeviceCaps) -> tuple[Resolved, str]:
    if requested not in ("auto", "fp32", "bf16", "fp16"):
        raise ValueError(f"unknown precision {requested!r}; valid: auto, fp32, bf16, fp16")
    if caps.kind == "cpu":
        if requested == "fp16":
            raise ValueError("precision 'fp16' needs a CUDA device; this worker has a CPU")
        if requested == "bf16":
            return "bf16", "bf16 autocast on CPU, as requested"
        return "fp32", "fp32 on CPU" + (" (auto)" if requested == "auto" else "")
    if requested == "fp32":
        return "fp32", f"fp32 on {caps.name}, as requested"
    if requested == "bf16":
        if not caps.native_bf16:
            raise ValueError(f"precision 'bf16' requested but {caps.name} (compute capability "
                             f"{_cc(caps)}) only emulates bf16; use 'fp16' or 'auto'")
        return "bf16", f"bf16 autocast on {caps.name}, as requested"
    if requested == "fp16":
        return "fp16", f"fp16 autocast + GradScaler on {caps.name}, as requested"
    if caps.native_bf16:
        return "bf16", f"bf16 autocast: {caps.name} (compute capability {_cc(caps)}) runs bf16 natively"
    return "fp16", (f"fp16 autocast + GradScaler: {caps.name} (compute capability {_cc(caps)}) has no "
                    "native bf16")


def _cc(caps: DeviceCaps) -> str:
    return "?" if caps.compute_capability is None else "%d.%d" % caps.compute_capability


def choose_batch(requested: Optional[int], caps: DeviceCaps, examples_per_worker: int) -> tuple[int, str]:
    if requested is not None:
        if requested < 1:
            raise ValueError(f"batch_size must be >= 1, got {requested}")
        return requested, f"batch {requested} per worker, as requested"
    if caps.kind == "cpu":
        return CPU_BATCH, f"batch {CPU_BATCH} per worker on CPU (auto)"
    batch = GPU_BATCH
    while batch > CPU_BATCH and math.ceil(examples_per_worker / batch) < MIN_STEPS_PER_EPOCH:
        batch //= 2
    why = f"batch {batch} per worker on {caps.name} (auto: launch-bound small network"
    if batch < GPU_BATCH:
        why += f"; halved from {GPU_BATCH} to keep >= {MIN_STEPS_PER_EPOCH} steps per epoch"
    return batch, why + ")"


def scale_lr(lr: float, batch_size: int, scaling: str) -> tuple[float, str]:
    if scaling == "none":
        return lr, f"lr {lr:g} as given (no scaling)"
    if scaling != "sqrt":
        raise ValueError(f"unknown lr_scaling {scaling!r}; valid: sqrt, none")
    scaled = min(MAX_LR, lr * math.sqrt(batch_size / REFERENCE_BATCH))
    if scaled == lr:
        return lr, f"lr {lr:g} (batch {batch_size} is the reference)"
    capped = " (capped)" if scaled == MAX_LR else ""
    return scaled, f"lr {lr:g} x sqrt({batch_size}/{REFERENCE_BATCH}) = {scaled:.3g}{capped}"


def choose_compile(requested: str, caps: DeviceCaps, batch_size: int) -> tuple[bool, str]:
    if requested == "on":
        return True, "torch.compile, as requested"
    if requested == "off":
        return False, "no torch.compile, as requested"
    if requested != "auto":
        raise ValueError(f"unknown compile setting {requested!r}; valid: auto, on, off")
    if caps.kind == "cuda" and batch_size >= COMPILE_MIN_BATCH:
        return True, f"torch.compile (auto: pays at batch >= {COMPILE_MIN_BATCH} on a GPU)"
    return False, f"no torch.compile (auto: it pays only on a GPU at batch >= {COMPILE_MIN_BATCH})"


def choose_data_placement(requested: Optional[bool], caps: DeviceCaps, n_examples: int) -> tuple[bool, str]:
    if requested is not None:
        return requested, f"data {'on the device' if requested else 'staged through pinned memory'}, as requested"
    if caps.kind == "cpu":
        return True, "data in host memory (CPU)"
    need = n_examples * BYTES_PER_EXAMPLE
    if caps.memory_bytes and need <= DEVICE_DATA_SHARE * caps.memory_bytes:
        return True, f"data on the device ({need / 2**20:.0f} MiB of {caps.memory_bytes / 2**30:.0f} GiB)"
    return False, (f"data staged through pinned memory ({need / 2**20:.0f} MiB > {DEVICE_DATA_SHARE:.0%} of "
                   f"{caps.memory_bytes / 2**30:.0f} GiB)")


def choose(caps: DeviceCaps, *, precision: str = "auto", batch_size: Optional[int] = None, lr: float = 1e-3,
           lr_scaling: str = "sqrt", compile: str = "auto", data_on_device: Optional[bool] = None,
           n_examples: int = 55_000, world_size: int = 1) -> TrainPlan:
    """The plan for one worker on ``caps`` training ``n_examples`` per epoch over ``world_size`` workers."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    resolved, why_p = choose_precision(precision, caps)
    batch, why_b = choose_batch(batch_size, caps, math.ceil(n_examples / world_size))
    if batch_size is None:
        peak, why_lr = scale_lr(lr, batch, lr_scaling)
    else:
        peak, why_lr = lr, f"lr {lr:g} as given with the batch size"
    compiled, why_c = choose_compile(compile, caps, batch)
    on_device, why_d = choose_data_placement(data_on_device, caps, n_examples)
    return TrainPlan(resolved, batch, peak, compiled, on_device, (why_p, why_b, why_lr, why_c, why_d))


def probe(device) -> DeviceCaps:
    """The capabilities of a ``torch.device`` (I/O: asks the CUDA runtime)."""
    import torch

    if device.type == "cpu":
        return DeviceCaps(kind="cpu")
    if device.type != "cuda":
        raise ValueError(f"unsupported device type {device.type!r}; expected 'cpu' or 'cuda'")
    props = torch.cuda.get_device_properties(device)
    return DeviceCaps(
        kind="cuda", name=props.name, fp16=True, memory_bytes=int(props.total_memory),
        native_bf16=native_bf16(device), compute_capability=(props.major, props.minor),
    )


def native_bf16(device) -> bool:
    """bf16 in hardware, not emulated (``including_emulation=False``; T4 and V100 only emulate it)."""
    import torch

    del device  # the current CUDA device: a Ray worker sees only its own GPU (CUDA_VISIBLE_DEVICES)
    return bool(torch.cuda.is_bf16_supported(including_emulation=False))
