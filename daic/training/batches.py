"""Getting a batch of training examples onto the training device.

Two strategies (``TrainConfig.data_on_device``):

* ``DeviceBatches``: the whole training set is copied to the device once (through pinned memory
  on CUDA), each epoch's index order is copied once, and each batch is gathered there with one
  ``index_select`` of a slice of that order. MNIST's 55,000 images are
  172 MB in float32, nothing for a GPU, and this removes every per-step host-to-device copy --
  for a model this small those copies, not arithmetic, bound a GPU's throughput (DESIGN.md).
* ``PinnedHostBatches``: the set stays in host memory; each batch is gathered into one of two
  pinned staging buffers and copied asynchronously (``non_blocking``); a CUDA event per buffer
  stops the next gather from overwriting a buffer whose copy is still in flight. On CPU this is
  a plain gather.
"""
from __future__ import annotations

import numpy as np
import torch


def as_tensors(images: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> tuple[torch.Tensor, ...]:
    # np.require copies only what is read-only (load_split's cached arrays) or of another dtype.
    x = torch.from_numpy(np.require(images, np.float32, ["C", "W"])).unsqueeze(1)  # (N, 1, 28, 28)
    y = torch.from_numpy(np.require(labels, np.int64, ["C", "W"]))
    w = torch.from_numpy(np.require(weights, np.float32, ["C", "W"]))
    return x, y, w


class DeviceBatches:
    def __init__(self, images: np.ndarray, labels: np.ndarray, weights: np.ndarray, device: torch.device) -> None:
        tensors = as_tensors(images, labels, weights)
        if device.type == "cuda":
            tensors = tuple(t.pin_memory() for t in tensors)
        self.device = device
        self.x, self.y, self.w = (t.to(device, non_blocking=True) for t in tensors)

    def get(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(index).to(self.device, non_blocking=True)
        return self.gather(idx)

    def gather(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.x.index_select(0, idx), self.y.index_select(0, idx), self.w.index_select(0, idx)

    def epoch(self, order: np.ndarray, bounds: list[tuple[int, int]]):
        """Batches of one epoch: the whole index order goes to the device in one (pinned) copy and
        each batch is a slice of it there -- no host-to-device traffic per step."""
        idx = torch.from_numpy(np.ascontiguousarray(order, dtype=np.int64))
        if self.device.type == "cuda":
            idx = idx.pin_memory()
        idx = idx.to(self.device, non_blocking=True)
        for start, stop in bounds:
            yield self.gather(idx[start:stop])


class PinnedHostBatches:
    def __init__(self, images: np.ndarray, labels: np.ndarray, weights: np.ndarray, device: torch.device,
                 max_batch: int) -> None:
        self.x, self.y, self.w = as_tensors(images, labels, weights)
        self.device = device
        self.cuda = device.type == "cuda"
        if self.cuda:
            self._buffers = [
                (torch.empty((max_batch, *self.x.shape[1:]), dtype=self.x.dtype).pin_memory(),
                 torch.empty(max_batch, dtype=self.y.dtype).pin_memory(),
                 torch.empty(max_batch, dtype=self.w.dtype).pin_memory())
                for _ in range(2)
            ]
            self._events: list[torch.cuda.Event | None] = [None, None]
            self._turn = 0

    def epoch(self, order: np.ndarray, bounds: list[tuple[int, int]]):
        for start, stop in bounds:
            yield self.get(order[start:stop])

    def get(self, index: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        idx = torch.from_numpy(np.ascontiguousarray(index))
        if not self.cuda:
            return self.x.index_select(0, idx), self.y.index_select(0, idx), self.w.index_select(0, idx)
        slot = self._turn
        self._turn ^= 1
        if self._events[slot] is not None:
            self._events[slot].synchronize()  # the copy out of this buffer has finished
        n = len(index)
        bx, by, bw = (b[:n] for b in self._buffers[slot])
        torch.index_select(self.x, 0, idx, out=bx)
        torch.index_select(self.y, 0, idx, out=by)
        torch.index_select(self.w, 0, idx, out=bw)
        out = tuple(b.to(self.device, non_blocking=True) for b in (bx, by, bw))
        event = torch.cuda.Event()
        event.record()
        self._events[slot] = event
        return out
