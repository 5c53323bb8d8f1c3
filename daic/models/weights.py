"""Network weights as bytes, for the object store.

Only ``state_dict`` tensors are stored (never pickled modules) and they are read back with
``torch.load(weights_only=True)``, so loading a version from a shared store cannot run code.
"""
from __future__ import annotations

import io

import torch
from torch import nn

from daic.models.networks import build


def state_dict_to_bytes(model_or_state: nn.Module | dict) -> bytes:
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    # DDP wraps the network in `.module`; store the plain names so any process can load them.
    plain = {k.removeprefix("module."): v.detach().cpu() for k, v in state.items()}
    buf = io.BytesIO()
    torch.save(plain, buf)
    return buf.getvalue()


def state_dict_from_bytes(data: bytes, source: str = "<bytes>") -> dict[str, torch.Tensor]:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for a bad archive
        raise ValueError(f"{source}: not a torch state_dict archive ({exc})") from exc


def network_from_bytes(arch: str, data: bytes, source: str = "<bytes>") -> nn.Module:
    """A network of ``arch`` with the stored weights, in eval mode, on CPU."""
    net = build(arch)
    state = state_dict_from_bytes(data, source)
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{source}: weights do not fit arch {arch!r}: {exc}") from exc
    return net.eval()
