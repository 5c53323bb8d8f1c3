"""TrainConfig validation and the precision rule."""
import pytest
from pydantic import ValidationError

from daic.training.config import TrainConfig
from daic.training.precision import resolve_precision


def test_defaults_are_valid_and_round_trip():
    config = TrainConfig()
    assert config.num_workers == 2 and config.precision == "auto"
    assert config.batch_size is None and config.global_batch_size is None  # chosen per device
    assert TrainConfig(batch_size=128).global_batch_size == 256
    assert TrainConfig.model_validate(config.model_dump(mode="json")) == config


@pytest.mark.parametrize("fields,needle", [
    ({"epochs": 0}, "epochs"),
    ({"batch_size": -1}, "batch_size"),
    ({"lr": 0}, "lr"),
    ({"num_workers": 0}, "num_workers"),
    ({"precision": "int8"}, "precision"),
    ({"operational_oversample": 0}, "operational_oversample"),
    ({"labels_prefix": "/abs/path"}, "labels_prefix"),
    ({"labels_prefix": "labels/../models"}, "labels_prefix"),
    ({"warm_start_from": "models/mnist/v0001"}, "warm_start_from"),
    ({"precision": "fp16"}, "fp16"),
    ({"base_limit": 0}, "nothing to train on"),
    ({"epochs": 2, "colour": "red"}, "colour"),
])
def test_bad_fields_are_named(fields, needle):
    with pytest.raises(ValidationError, match=needle):
        TrainConfig(**fields)


@pytest.mark.parametrize("requested,device,bf16,expected", [
    ("auto", "cuda", True, "bf16"),
    ("auto", "cuda", False, "fp16"),
    ("auto", "cpu", True, "fp32"),
    ("fp32", "cuda", True, "fp32"),
    ("bf16", "cpu", True, "bf16"),
    ("fp16", "cuda", True, "fp16"),
])
def test_precision_by_capability(requested, device, bf16, expected):
    assert resolve_precision(requested, device, bf16) == expected


@pytest.mark.parametrize("requested,device,bf16,needle", [
    ("bf16", "cuda", False, "does not support bf16"),
    ("fp16", "cpu", True, "CUDA"),
    ("auto", "tpu", True, "tpu"),
    ("int8", "cpu", True, "int8"),
])
def test_impossible_precisions_are_errors(requested, device, bf16, needle):
    with pytest.raises(ValueError, match=needle):
        resolve_precision(requested, device, bf16)
