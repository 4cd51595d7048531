"""The seed's training loop: d2l's ``Trainer.fit`` with ``Classifier`` semantics.

Per epoch: a training pass (SGD on cross-entropy, dropout on), then a validation pass
(eval mode, no gradients) that reports loss and accuracy averaged over images. As in d2l,
the model is an ``AlexNet(lr)``, the data ``FashionMNIST(batch_size, resize)`` and the
trainer ``Trainer(max_epochs)``; everything comes from one `RunConfig`.

Each epoch line also gives images/s of the training pass and how its wall time split between
waiting for the next batch (``data wait``) and the step itself. The step is synchronised
before the clock is read, so on a GPU the split is measured, not inferred.
"""

from __future__ import annotations

import csv
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from alexnet.config import RunConfig
from alexnet.data import load_data
from alexnet.pipeline import make_pipeline, timed_batches
from alexnet.runtime import StepRunner, autocast_context, backend_switches, seed_everything, synchronize, unsupported_reason

__all__ = ["EpochStats", "fit", "free_out_dir", "plot_history"]

HISTORY_COLUMNS = ("epoch", "train_loss", "val_loss", "val_acc", "images_per_s", "epoch_time_s", "data_wait_fraction")
PROGRESS_DELAY_S = 3.0  # epochs shorter than this never show a progress bar


@dataclass
class EpochStats:
    epoch: int
    train_loss: float
    val_loss: float
    val_acc: float
    images_per_s: float
    epoch_time_s: float
    data_wait_fraction: float


def free_out_dir(out: str | Path | None) -> Path:
    """The output folder; an existing one that already holds a run is never overwritten."""
    if out is None:
        out = Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
    base = Path(out)
    path, n = base, 1
    while (path / "history.csv").exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    if path != base:
        print(f"note: {base} already holds a run; writing to {path} instead", file=sys.stderr)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _progress(iterable, *, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    try:
        from tqdm import tqdm
    except ImportError:  # a progress bar is a nicety: a box without tqdm trains without one
        return iterable

    # disable=None: tqdm turns itself off when stderr is not a terminal (logs, CI).
    return tqdm(
        iterable, total=total, desc=desc, leave=False, delay=PROGRESS_DELAY_S, file=sys.stderr, unit="batch", disable=None
    )


def _train_epoch(runner: StepRunner, loader, *, desc: str, progress: bool) -> tuple[float, int, float, float]:
    """One training pass: (mean loss, images, wall seconds, seconds spent waiting for data)."""
    runner.eager_model.train()
    loss_sum = torch.zeros((), device=runner.cfg.device)
    images = 0
    wait = 0.0
    start = time.perf_counter()
    for x, y, wait_s in timed_batches(_progress(loader, total=len(loader), desc=desc, enabled=progress), runner):
        wait += wait_s
        loss = runner.train_step(x, y)
        loss_sum += loss.float() * x.shape[0]
        images += x.shape[0]
        synchronize(runner.cfg.device)
    elapsed = time.perf_counter() - start
    return float(loss_sum) / max(images, 1), images, elapsed, wait


@torch.no_grad()
def _validate(runner: StepRunner, loader) -> tuple[float, float]:
    """d2l's validation: mean loss and accuracy over all validation images."""
    runner.eager_model.eval()
    loss_sum, correct, n = 0.0, 0, 0
    for x, y in loader:
        x, y = runner.prepare(x, y)
        with autocast_context(runner.cfg):
            logits = runner.model(x)
            loss = runner.loss_fn(logits, y)
        loss_sum += float(loss) * x.shape[0]
        correct += int((logits.argmax(dim=1) == y).sum())
        n += x.shape[0]
    return loss_sum / max(n, 1), correct / max(n, 1)


def plot_history(history: list[EpochStats], path: Path, *, title: str) -> Path:
    """d2l's curves, each on its own axes: train and val loss (left), val accuracy (right), per whole epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [h.epoch for h in history]
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(8, 3.5), dpi=120)
    loss_ax.plot(epochs, [h.train_loss for h in history], "-o", label="train loss")
    loss_ax.plot(epochs, [h.val_loss for h in history], "--o", label="validation loss")
    loss_ax.set_ylabel("cross-entropy loss")
    loss_ax.legend()
    acc_ax.plot(epochs, [h.val_acc * 100 for h in history], "-o", color="tab:green", label="validation accuracy")
    acc_ax.set_ylabel("validation accuracy, %")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.set_xlim(0.8, max(epochs) + 0.2)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # whole epochs only: no 1.2, 1.4 ticks
        ax.grid(True, alpha=0.3)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _write_history(history: list[EpochStats], out_dir: Path, *, title: str) -> None:
    """``history.csv`` and ``curves.png`` for the epochs so far, each written beside and renamed
    over the last (``os.replace``): a reader, or an interrupt, never sees half a file."""
    import os

    tmp_csv = out_dir / ".history.csv.tmp"
    with open(tmp_csv, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=HISTORY_COLUMNS)
        writer.writeheader()
        for h in history:
            writer.writerow({k: v for k, v in asdict(h).items() if k in HISTORY_COLUMNS})
    os.replace(tmp_csv, out_dir / "history.csv")
    tmp_png = out_dir / ".curves.tmp.png"
    plot_history(history, tmp_png, title=title)
    os.replace(tmp_png, out_dir / "curves.png")


def fit(
    cfg: RunConfig,
    *,
    out: str | Path | None = None,
    download: bool = False,
    synthetic_size: int | None = None,
    progress: bool = True,
    log=print,
    out_name: str | Path | None = None,
) -> list[EpochStats]:
    """Train ``cfg.epochs`` epochs; write ``history.csv`` and ``curves.png`` to ``out`` after every
    epoch (an interrupted run keeps the epochs it finished).

    ``out_name``: the name the files are announced under, when ``out`` is a temporary folder the
    caller renames into place after this returns (the command line's ``--out`` policy)."""
    if cfg.mode != "train":
        raise ValueError(f"mode {cfg.mode!r} is not valid for training; use train")
    reason = unsupported_reason(cfg, allow_emulated_bf16=True)
    if reason:
        raise ValueError(f"unsupported combination: {reason}")
    seed_everything(cfg.seed)
    data = load_data(
        cfg.data, cfg.resolution, data_root=cfg.data_root, download=download, synthetic_size=synthetic_size, seed=cfg.seed
    )
    out_dir = free_out_dir(out)
    log(data.description)
    log(
        f"model: {cfg.variant} AlexNet, init {cfg.init}; SGD lr {cfg.lr} momentum {cfg.momentum} "
        f"weight_decay {cfg.weight_decay}; batch {cfg.batch_size}; device {cfg.device}; amp {cfg.amp}; "
        f"compile {cfg.compile}; channels_last {cfg.channels_last}; pipeline {cfg.pipeline}"
        + (f" ({cfg.workers} workers)" if cfg.pipeline == "dataloader" else " (resize on the device)")
    )
    if cfg.amp == "bf16" and not cfg.is_cuda and unsupported_reason(cfg) is not None:
        log("warning: bf16 on this CPU is emulated and very slow")
    history: list[EpochStats] = []
    with backend_switches(cfg):
        seed_everything(cfg.seed)  # the model's initial weights depend only on the seed
        runner = StepRunner.build(cfg)
        # Shuffle order comes from a generator seeded with cfg.seed: same seed, same batches.
        train_loader = make_pipeline(data.train, cfg, shuffle=True, seed=cfg.seed)
        val_loader = make_pipeline(data.val, cfg, shuffle=False)
        for epoch in range(1, cfg.epochs + 1):
            t0 = time.perf_counter()
            train_loss, images, train_s, wait_s = _train_epoch(
                runner, train_loader, desc=f"epoch {epoch}/{cfg.epochs}", progress=progress
            )
            val_loss, val_acc = _validate(runner, val_loader)
            epoch_s = time.perf_counter() - t0
            stats = EpochStats(
                epoch=epoch,
                train_loss=train_loss,
                val_loss=val_loss,
                val_acc=val_acc,
                images_per_s=images / train_s if train_s > 0 else math.nan,
                epoch_time_s=epoch_s,
                data_wait_fraction=wait_s / train_s if train_s > 0 else math.nan,
            )
            history.append(stats)
            # After every epoch, each file replaced whole: an interrupted run keeps its finished epochs.
            _write_history(history, out_dir, title=f"{cfg.case_id()} [{data.name}]")
            log(
                f"epoch {epoch}/{cfg.epochs}  train_loss {train_loss:.4f}  val_loss {val_loss:.4f}  "
                f"val_acc {val_acc:.3f}  {stats.images_per_s:,.1f} images/s  {epoch_s:.1f} s  "
                f"data wait {100 * stats.data_wait_fraction:.1f}% of the training pass"
            )
    shown = Path(out_name) if out_name is not None else out_dir
    log(f"wrote {shown / 'history.csv'} and {shown / 'curves.png'}")
    return history
