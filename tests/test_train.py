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


@pytest.mark.slow
def test_an_interrupted_training_run_keeps_its_finished_epochs_and_never_replaces_a_complete_one(
        tmp_path, cli_main, monkeypatch):
    """history.csv and curves.png are written after every epoch; Ctrl-C in epoch 3 keeps epochs
    1-2 in --out (its marker says interrupted) and the command says so in one line, exit 130. An
    interrupted run into a folder holding a complete earlier run goes beside it, never over it."""
    import json

    import alexnet.train as train_mod

    real_fit = train_mod.fit

    def fit_until_epoch_3(cfg, **kw):
        def log(line: str) -> None:
            if line.startswith("epoch 2/"):
                raise KeyboardInterrupt  # as a Ctrl-C during epoch 3
        return real_fit(cfg, **{**kw, "log": log})

    args = ("train", "--data", "synthetic", "--synthetic-size", "32", "--batch-size", "16", "--resolution", "65",
            "--device", "cpu", "--epochs", "4", "--no-progress", "--out", tmp_path / "run")
    monkeypatch.setattr(train_mod, "fit", fit_until_epoch_3)
    r = cli_main(*args)
    assert r.returncode == 130, r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line == f"alexnet-bench train: interrupted; the 2 finished epoch(s) are kept in {tmp_path / 'run'} " \
                   "(history.csv, curves.png)"
    assert (tmp_path / "run" / "history.csv").read_text().count("\n") == 3  # header + 2 epochs
    assert json.loads((tmp_path / "run" / ".alexnet-bench-out.json").read_text())["interrupted"] is True
    monkeypatch.setattr(train_mod, "fit", real_fit)
    assert cli_main(*args).returncode == 0  # a complete run replaces the command's partial one
    assert (tmp_path / "run" / "history.csv").read_text().count("\n") == 5
    monkeypatch.setattr(train_mod, "fit", fit_until_epoch_3)
    r = cli_main(*args)
    assert r.returncode == 130 and f"kept in {tmp_path / 'run-interrupted'}" in r.stderr
    assert (tmp_path / "run" / "history.csv").read_text().count("\n") == 5  # the complete run is untouched
