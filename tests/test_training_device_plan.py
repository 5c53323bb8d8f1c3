"""Precision, batch size, learning rate, torch.compile and data placement chosen per device
(daic.training.device_plan), against a table of fake device capabilities: no GPU is needed to
test the rules, and the one call that reads the hardware (native bf16) is checked with a fake
``torch.cuda.is_bf16_supported`` that answers like a T4 (bf16 only emulated)."""
from __future__ import annotations

import math

import pytest
import torch

from daic.training.device_plan import (
    COMPILE_MIN_BATCH, CPU_BATCH, GPU_BATCH, MAX_LR, MIN_STEPS_PER_EPOCH, DeviceCaps, choose, native_bf16,
)
from daic.training.precision import bf16_supported, resolve_precision

GiB = 2**30
CPU = DeviceCaps(kind="cpu")
H100 = DeviceCaps("cuda", "NVIDIA H100 80GB HBM3", native_bf16=True, fp16=True, memory_bytes=80 * GiB,
                  compute_capability=(9, 0))
A100 = DeviceCaps("cuda", "NVIDIA A100-SXM4-40GB", native_bf16=True, fp16=True, memory_bytes=40 * GiB,
                  compute_capability=(8, 0))
L4 = DeviceCaps("cuda", "NVIDIA L4", native_bf16=True, fp16=True, memory_bytes=24 * GiB, compute_capability=(8, 9))
T4 = DeviceCaps("cuda", "Tesla T4", native_bf16=False, fp16=True, memory_bytes=15 * GiB, compute_capability=(7, 5))
V100 = DeviceCaps("cuda", "Tesla V100-SXM2-16GB", native_bf16=False, fp16=True, memory_bytes=16 * GiB,
                  compute_capability=(7, 0))
TINY = DeviceCaps("cuda", "a 1 GiB GPU", native_bf16=False, fp16=True, memory_bytes=1 * GiB,
                  compute_capability=(6, 1))

# device, requested precision -> resolved precision
PRECISION = [
    (CPU, "auto", "fp32"), (CPU, "fp32", "fp32"), (CPU, "bf16", "bf16"),
    (H100, "auto", "bf16"), (A100, "auto", "bf16"), (L4, "auto", "bf16"),
    (T4, "auto", "fp16"), (V100, "auto", "fp16"), (TINY, "auto", "fp16"),
    (H100, "fp16", "fp16"), (H100, "fp32", "fp32"), (T4, "fp32", "fp32"), (T4, "fp16", "fp16"),
]


@pytest.mark.parametrize("caps,requested,expected", PRECISION, ids=lambda v: getattr(v, "name", v))
def test_precision_by_device(caps, requested, expected):
    assert choose(caps, precision=requested).precision == expected


@pytest.mark.parametrize("caps,requested,needle", [
    (T4, "bf16", "Tesla T4.*only emulates bf16"),
    (V100, "bf16", "7.0"),
    (CPU, "fp16", "needs a CUDA device"),
    (H100, "int8", "unknown precision 'int8'"),
])
def test_impossible_precisions_are_errors_naming_the_device(caps, requested, needle):
    with pytest.raises(ValueError, match=needle):
        choose(caps, precision=requested)


@pytest.mark.parametrize("caps,n_examples,world,batch", [
    (CPU, 55_000, 1, CPU_BATCH),
    (CPU, 300, 1, CPU_BATCH),
    (H100, 55_000, 1, GPU_BATCH),
    (T4, 58_000, 1, GPU_BATCH),
    (H100, 55_000, 2, 1024),  # 27,500 per worker: 2048 would give 14 steps < 16
    (H100, 10_000, 1, 512),
    (H100, 300, 1, 128),  # never below the CPU batch
])
def test_batch_size_by_device_and_data(caps, n_examples, world, batch):
    plan = choose(caps, n_examples=n_examples, world_size=world)
    assert plan.batch_size == batch
    if caps.kind == "cuda" and batch > CPU_BATCH:
        assert math.ceil(math.ceil(n_examples / world) / batch) >= MIN_STEPS_PER_EPOCH


def test_an_explicit_batch_and_lr_are_kept_as_given():
    plan = choose(H100, batch_size=64, lr=3e-3)
    assert (plan.batch_size, plan.lr) == (64, 3e-3)


@pytest.mark.parametrize("caps,lr,expected", [
    (CPU, 1e-3, 1e-3),  # batch 128 is the reference
    (H100, 1e-3, 1e-3 * 4),  # sqrt(2048 / 128) = 4
    (T4, 4e-3, 4e-3 * 4),
    (H100, 1e-2, MAX_LR),  # capped
])
def test_learning_rate_follows_the_square_root_rule(caps, lr, expected):
    assert choose(caps, lr=lr).lr == pytest.approx(expected)


def test_no_lr_scaling_when_turned_off():
    assert choose(H100, lr=1e-3, lr_scaling="none").lr == 1e-3


@pytest.mark.parametrize("caps,batch,requested,expected", [
    (H100, None, "auto", False),  # auto batch 2048: compiling cost throughput there (DESIGN.md)
    (H100, COMPILE_MIN_BATCH, "auto", True),
    (T4, 16_384, "auto", True),
    (CPU, 16_384, "auto", False),
    (CPU, 128, "on", True),
    (H100, 16_384, "off", False),
])
def test_compile_only_where_it_pays(caps, batch, requested, expected):
    assert choose(caps, batch_size=batch, compile=requested, n_examples=200_000).compile is expected


@pytest.mark.parametrize("caps,n_examples,expected", [
    (CPU, 55_000, True),
    (H100, 55_000, True),
    (TINY, 55_000, True),  # 172 MiB of 1 GiB
    (TINY, 200_000, False),  # 625 MiB > a quarter of 1 GiB: staged through pinned memory
])
def test_training_set_stays_on_the_device_when_it_fits(caps, n_examples, expected):
    assert choose(caps, n_examples=n_examples).data_on_device is expected


def test_every_choice_gives_its_reason():
    plan = choose(T4)
    assert len(plan.reasons) == 5 and "no native bf16" in plan.reasons[0]
    assert plan.as_record()["batch_size"] == GPU_BATCH


def _t4_like(including_emulation: bool = True) -> bool:
    """``torch.cuda.is_bf16_supported`` on a T4: emulated bf16 counts only when asked to."""
    return including_emulation


def test_emulated_bf16_is_not_support(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", _t4_like)
    gpu = torch.device("cuda", 0)
    assert native_bf16(gpu) is False
    assert bf16_supported(gpu) is False
    assert resolve_precision("auto", "cuda", bf16_supported(gpu)) == "fp16"
