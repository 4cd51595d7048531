"""Data: real FashionMNIST through torchvision, and a synthetic, learnable stand-in.

Both give 1x28x28 uint8 images with labels 0..9, and both are resized the seed's way:
d2l's ``FashionMNIST(resize=(224, 224))`` applies ``transforms.Resize(resize)`` then
``transforms.ToTensor()`` (no normalisation) inside the DataLoader.

The synthetic set is **not** FashionMNIST. It exists so training works offline. Its classes
are spatial patterns a convolution can pick up (random-noise prototypes per class did not learn
within a small budget, bars with jitter did: docs/measurement-notes.md, "Training the seed's
recipe on the synthetic set"): class ``k`` is a bright bar,
horizontal for k < 5 and vertical for k >= 5, centred on one of five positions, with random
positional jitter, random length and brightness, and pixel noise. Everything is generated from
a seed, so the set is deterministic.
"""

from __future__ import annotations

import gzip
import struct
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import Dataset

__all__ = [
    "DataBundle",
    "FASHION_MNIST_FILES",
    "SyntheticFashionMNIST",
    "load_data",
    "seed_transform",
    "synthetic_images",
    "write_idx",
]

# torchvision.datasets.FashionMNIST looks for these, uncompressed, in <root>/FashionMNIST/raw/.
FASHION_MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist/tree/master/data/fashion"

NUM_CLASSES = 10
SIDE = 28
# Centres of the five bar positions; 5 px apart so +-1 px jitter never makes classes overlap.
_BAR_CENTRES = (4, 9, 14, 19, 24)
_BAR_HALF_WIDTH = 1  # bars are 3 px thick
_JITTER = 1  # px of random shift of the bar centre
_NOISE_STD = 30.0  # in uint8 units
_DEFAULT_SYNTHETIC_TRAIN = 2048


def seed_transform(resolution: tuple[int, int]):
    """The seed's transform: ``Resize(resize)`` then ``ToTensor()`` (floats in [0, 1])."""
    from torchvision import transforms

    return transforms.Compose([transforms.Resize(resolution), transforms.ToTensor()])


def synthetic_images(n: int, *, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` synthetic images (uint8, N x 28 x 28) and labels (int64), deterministic in ``seed``."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % NUM_CLASSES
    labels = labels[torch.randperm(n, generator=g)]
    imgs = torch.rand(n, SIDE, SIDE, generator=g) * 40.0  # dim textured background
    jitter = torch.randint(-_JITTER, _JITTER + 1, (n,), generator=g)
    start = torch.randint(0, 8, (n,), generator=g)  # bar extent along its length varies
    length = torch.randint(14, SIDE - 2, (n,), generator=g)
    bright = torch.randint(170, 256, (n,), generator=g).float()
    for i in range(n):
        k = int(labels[i])
        c = _BAR_CENTRES[k % 5] + int(jitter[i])
        lo, hi = c - _BAR_HALF_WIDTH, c + _BAR_HALF_WIDTH + 1
        a, b = int(start[i]), min(SIDE, int(start[i]) + int(length[i]))
        if k < 5:  # horizontal bar: rows lo..hi
            imgs[i, lo:hi, a:b] = bright[i]
        else:  # vertical bar: columns lo..hi
            imgs[i, a:b, lo:hi] = bright[i]
    imgs += torch.randn(n, SIDE, SIDE, generator=g) * _NOISE_STD
    return imgs.clamp_(0, 255).round_().to(torch.uint8), labels.long()


class SyntheticFashionMNIST(Dataset):
    """A synthetic dataset shaped like FashionMNIST, served the way torchvision serves it.

    ``__getitem__`` turns the uint8 image into a PIL "L" image and applies ``transform``,
    exactly as ``torchvision.datasets.FashionMNIST`` does, so the seed's Resize/ToTensor run
    on it unchanged. ``.data`` and ``.targets`` mirror torchvision's attributes.
    """

    is_synthetic = True

    def __init__(self, n: int, *, seed: int, transform=None) -> None:
        self.data, self.targets = synthetic_images(n, seed=seed)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        img = Image.fromarray(self.data[i].numpy(), mode="L")
        if self.transform is not None:
            img = self.transform(img)
        return img, int(self.targets[i])


@dataclass
class DataBundle:
    train: Dataset
    val: Dataset
    name: str  # "synthetic" or "fashion-mnist"
    description: str  # printed at the start of every run: says which data is used


def _missing_fashion_mnist(root: Path) -> list[str]:
    raw = root / "FashionMNIST" / "raw"
    return [f for f in FASHION_MNIST_FILES if not (raw / f).exists()]


def load_data(
    data: str,
    resolution: tuple[int, int],
    *,
    data_root: str | None = None,
    download: bool = False,
    synthetic_size: int | None = None,
    seed: int = 0,
    transform: bool = True,
) -> DataBundle:
    """Training and validation sets with the seed's Resize + ToTensor transform.

    ``transform=False`` leaves the sets untransformed (their ``.data`` uint8 images are what the
    ``device`` pipeline reads): the synthetic set then needs no torchvision at all.
    """
    transform = seed_transform(resolution) if transform else None
    h, w = resolution
    if data == "synthetic":
        n = _DEFAULT_SYNTHETIC_TRAIN if synthetic_size is None else synthetic_size
        if n < NUM_CLASSES:
            raise ValueError(f"synthetic size {n} is too small; it must be >= {NUM_CLASSES}")
        n_val = max(NUM_CLASSES, n // 4)
        # Different seeds: validation images are never training images.
        train = SyntheticFashionMNIST(n, seed=seed * 2 + 1, transform=transform)
        val = SyntheticFashionMNIST(n_val, seed=seed * 2 + 2, transform=transform)
        desc = (
            f"data: SYNTHETIC (generated bars, not FashionMNIST): {n} train / {n_val} val images, "
            f"1x28x28 uint8 resized to {h}x{w}"
        )
        return DataBundle(train, val, "synthetic", desc)
    if data != "fashion-mnist":
        raise ValueError(f"data {data!r} is not valid; choose from synthetic, fashion-mnist")
    if data_root is None:
        raise ValueError("--data fashion-mnist needs --data-root DIR (the folder that holds FashionMNIST/raw/)")
    from torchvision.datasets import FashionMNIST

    root = Path(data_root).expanduser()
    missing = _missing_fashion_mnist(root)
    if missing and not download:
        raise ValueError(
            f"FashionMNIST files missing in {root / 'FashionMNIST' / 'raw'}: {', '.join(missing)}; "
            f"add --download to fetch them, or put the uncompressed IDX files there (from {FASHION_MNIST_URL})"
        )
    train = FashionMNIST(str(root), train=True, transform=transform, download=download)
    val = FashionMNIST(str(root), train=False, transform=transform, download=download)
    desc = f"data: FashionMNIST from {root}: {len(train)} train / {len(val)} val images, resized to {h}x{w}"
    return DataBundle(train, val, "fashion-mnist", desc)


def write_idx(path: str | Path, array: torch.Tensor, *, compress: bool = False) -> Path:
    """Write a uint8 tensor as an IDX file (the MNIST/FashionMNIST format).

    Header: two zero bytes, the type code 0x08 (unsigned byte), the number of dimensions,
    then each dimension as a big-endian int32. Used by the tests to exercise the real
    torchvision loader without the internet.
    """
    if array.dtype != torch.uint8:
        raise ValueError(f"IDX writer takes uint8 tensors, got {array.dtype}")
    header = struct.pack(">BBBB", 0, 0, 0x08, array.dim()) + b"".join(struct.pack(">i", d) for d in array.shape)
    payload = header + array.contiguous().numpy().tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path
