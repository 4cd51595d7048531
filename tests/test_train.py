"""The training loop: outputs, reproducibility, and that the synthetic set is learnable."""

from __future__ import annotations

import csv

import pytest

from alexnet.config import RunConfig
from alexnet.train import fit


def _cfg(**kw):
    base = dict(device="cpu", batch_size=16, resolution=(65, 65), epochs=2, data="synthetic", init="xavier", momentum=0.9)
    base.update(kw)
    return RunConfig(**base)


def test_fit_writes_history_and_png(tmp_path):
    lines = []
    hist = fit(_cfg(), out=tmp_path / "run", synthetic_size=64, progress=False, log=lines.append)
    assert len(hist) == 2
    rows = list(csv.DictReader(open(tmp_path / "run" / "history.csv")))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    assert {"epoch", "train_loss", "val_loss", "val_acc"} <= set(rows[0])
    assert (tmp_path / "run" / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any("SYNTHETIC" in line for line in lines)
    epoch_lines = [line for line in lines if line.startswith("epoch ")]
    assert len(epoch_lines) == 2 and "images/s" in epoch_lines[0] and "data wait" in epoch_lines[0]


def test_existing_run_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    fit(_cfg(epochs=1), out=out, synthetic_size=32, progress=False, log=lambda s: None)
    first = (out / "history.csv").read_text()
    fit(_cfg(epochs=1, seed=1), out=out, synthetic_size=32, progress=False, log=lambda s: None)
    assert (out / "history.csv").read_text() == first
    assert (tmp_path / "run-2" / "history.csv").exists()


def test_seed_and_deterministic_give_identical_histories(tmp_path):
    cfg = _cfg(deterministic=True, seed=7)
    a = fit(cfg, out=tmp_path / "a", synthetic_size=48, progress=False, log=lambda s: None)
    b = fit(cfg, out=tmp_path / "b", synthetic_size=48, progress=False, log=lambda s: None)
    assert [(h.train_loss, h.val_loss, h.val_acc) for h in a] == [(h.train_loss, h.val_loss, h.val_acc) for h in b]


def test_unsupported_combination_is_refused():
    with pytest.raises(ValueError, match="fp16 autocast is not supported on CPU"):
        fit(_cfg(amp="fp16"), out=None, synthetic_size=16, progress=False, log=lambda s: None)


@pytest.mark.slow
def test_synthetic_set_is_learnable(tmp_path):
    """Xavier + momentum climbs well above chance (0.1) on the synthetic bars."""
    hist = fit(
        _cfg(batch_size=32, resolution=(65, 65), epochs=3),
        out=tmp_path / "learn",
        synthetic_size=1024,
        progress=False,
        log=lambda s: None,
    )
    assert hist[-1].val_acc >= 0.5, [h.val_acc for h in hist]
