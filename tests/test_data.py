"""Data: the real torchvision FashionMNIST loader on tiny IDX files, and the synthetic set."""

from __future__ import annotations

import pytest
import torch

from alexnet.data import FASHION_MNIST_FILES, load_data, synthetic_images, write_idx


@pytest.fixture
def tiny_fashion_root(tmp_path):
    """A FashionMNIST-format folder: 40 train and 20 test images written as IDX files."""
    raw = tmp_path / "FashionMNIST" / "raw"
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 40), ("t10k", 20)):
        write_idx(raw / f"{split}-images-idx3-ubyte", torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g))
        write_idx(raw / f"{split}-labels-idx1-ubyte", (torch.arange(n) % 10).to(torch.uint8))
    return tmp_path


def test_real_loader_reads_idx_files(tiny_fashion_root):
    from torchvision.datasets import FashionMNIST

    data = load_data("fashion-mnist", (96, 80), data_root=str(tiny_fashion_root))
    assert data.name == "fashion-mnist" and "FashionMNIST" in data.description
    assert isinstance(data.train, FashionMNIST)
    assert len(data.train) == 40 and len(data.val) == 20
    x, y = data.train[3]
    assert x.shape == (1, 96, 80) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y == 3


def test_missing_files_say_where_they_belong(tmp_path):
    with pytest.raises(ValueError) as err:
        load_data("fashion-mnist", (224, 224), data_root=str(tmp_path))
    msg = str(err.value)
    assert str(tmp_path / "FashionMNIST" / "raw") in msg and "--download" in msg
    assert all(f in msg for f in FASHION_MNIST_FILES)
    assert "\n" not in msg


def test_synthetic_is_deterministic_labelled_and_shaped_like_fashion_mnist():
    a, la = synthetic_images(50, seed=3)
    b, lb = synthetic_images(50, seed=3)
    assert torch.equal(a, b) and torch.equal(la, lb)
    assert a.shape == (50, 28, 28) and a.dtype == torch.uint8
    assert set(la.tolist()) == set(range(10))
    data = load_data("synthetic", (96, 96), synthetic_size=40)
    assert "SYNTHETIC" in data.description and "not FashionMNIST" in data.description
    assert getattr(data.train, "is_synthetic", False)
    x, _ = data.train[0]
    assert x.shape == (1, 96, 96)
    # Training and validation images are generated from different seeds.
    assert not torch.equal(data.train.data[:10], data.val.data[:10])


def test_synthetic_classes_have_spatial_structure():
    """Class means differ where the bars are: a linear probe on pixels separates them."""
    x, y = synthetic_images(400, seed=0)
    means = torch.stack([x[y == k].float().mean(0) for k in range(10)])
    # Horizontal classes are bright along rows, vertical ones along columns.
    row_profile = means[:5].mean(dim=2)  # (5, 28)
    assert row_profile.argmax(dim=1).tolist() == [4, 9, 14, 19, 24]
    col_profile = means[5:].mean(dim=1)
    assert col_profile.argmax(dim=1).tolist() == [4, 9, 14, 19, 24]


def test_real_loader_pixels_survive_the_seed_transform(tiny_fashion_root):
    """At 28x28 the seed's Resize is the identity: ToTensor gives the file's bytes / 255."""
    from torchvision.datasets import FashionMNIST

    raw = FashionMNIST(str(tiny_fashion_root), train=True)
    data = load_data("fashion-mnist", (28, 28), data_root=str(tiny_fashion_root))
    x, _ = data.train[5]
    assert torch.allclose(x[0], raw.data[5].float() / 255)
