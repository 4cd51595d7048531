"""Two input pipelines that feed the model the same images.

``dataloader`` (the seed's): torchvision ``Resize`` + ``ToTensor`` run on PIL images inside
DataLoader workers (``--workers N``); batches are then copied to the device, from pinned
memory when the device is a GPU.

``device``: the 28x28 uint8 dataset is copied to the device once; each batch is gathered
there and resized with ``torch.nn.functional.interpolate``. No workers, no per-batch copies.

Same values for the same sample: PIL's bilinear resize (what ``Resize`` does on a PIL image)
writes uint8 pixels, so the device pipeline interpolates in the 0..255 range and rounds to
whole levels before dividing by 255, as ``ToTensor`` does. For upsampling (28 -> 96 or 224)
PIL and ``interpolate(mode="bilinear", align_corners=False)`` then agree to within one
level: measured on 200 synthetic images at 65x65, 96x96, 224x224 and 224x244, the largest
difference was 1/255 and the mean 0.17-0.18 levels (``tests/test_pipeline.py`` pins both).
Downsampling differs more (PIL antialiases); every resolution this suite uses is >= 65 > 28.
"""

from __future__ import annotations

import time
from typing import Iterator

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from alexnet.config import RunConfig

__all__ = ["DevicePipeline", "dataloader_pipeline", "make_pipeline", "timed_batches"]


class DevicePipeline:
    """Batches resized on the device from a uint8 copy of the whole dataset held there."""

    def __init__(self, dataset: Dataset, cfg: RunConfig, *, shuffle: bool, seed: int = 0) -> None:
        data = getattr(dataset, "data", None)
        targets = getattr(dataset, "targets", None)
        if data is None or targets is None:
            raise ValueError("the device pipeline needs a dataset with uint8 .data and .targets (FashionMNIST-like)")
        self.cfg = cfg
        # Copied to the device once: (N, 28, 28) uint8 is 47 MB for FashionMNIST's 60k images.
        self.data = torch.as_tensor(data).to(cfg.device)
        self.targets = torch.as_tensor(targets).long().to(cfg.device)
        self.shuffle = shuffle
        self.generator = torch.Generator().manual_seed(seed)
        self.batch_size = cfg.batch_size

    def __len__(self) -> int:
        return (len(self.targets) + self.batch_size - 1) // self.batch_size

    def transform(self, images_u8: torch.Tensor) -> torch.Tensor:
        """(B, 28, 28) uint8 on the device -> (B, 1, H, W) float in [0, 1], like Resize+ToTensor."""
        x = images_u8.unsqueeze(1).float()
        x = F.interpolate(x, size=self.cfg.resolution, mode="bilinear", align_corners=False, antialias=False)
        return x.round_().clamp_(0, 255).div_(255)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.targets)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.cfg.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.transform(self.data[idx]), self.targets[idx]


def dataloader_pipeline(dataset: Dataset, cfg: RunConfig, *, shuffle: bool, seed: int = 0) -> DataLoader:
    """The seed's DataLoader: the transform runs in workers; pinned memory on a GPU."""
    return DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=shuffle,
        generator=torch.Generator().manual_seed(seed) if shuffle else None,
        num_workers=cfg.workers,
        pin_memory=cfg.is_cuda,
        persistent_workers=cfg.workers > 0,
    )


def make_pipeline(dataset: Dataset, cfg: RunConfig, *, shuffle: bool, seed: int = 0):
    """An iterable of (x, y) batches for ``cfg.pipeline``; x is already resized."""
    if cfg.pipeline == "device":
        if cfg.workers:
            raise ValueError(f"workers {cfg.workers} is not valid with --pipeline device; it uses no workers (use 0)")
        return DevicePipeline(dataset, cfg, shuffle=shuffle, seed=seed)
    return dataloader_pipeline(dataset, cfg, shuffle=shuffle, seed=seed)


def timed_batches(batches, runner) -> Iterator[tuple[torch.Tensor, torch.Tensor, float]]:
    """Yield ``(x, y, wait_s)``: each batch on the device and the seconds spent getting it.

    ``wait_s`` covers fetching the batch (waiting on workers, or gathering and resizing on the
    device) and moving it to the device, synchronised so that queued GPU work is counted where
    it belongs. The caller synchronises after its step, so step time is measured too.
    """
    from alexnet.runtime import synchronize

    it = iter(batches)
    while True:
        t0 = time.perf_counter()
        try:
            x, y = next(it)
        except StopIteration:
            return
        x, y = runner.prepare(x, y)
        synchronize(runner.cfg.device)
        yield x, y, time.perf_counter() - t0
