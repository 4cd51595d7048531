"""``alexnet-bench train``: the seed's training recipe (d2l Trainer + Classifier).

``--out`` follows the one output-folder policy (`bench.cli.outdir`, docs/cli.md): the run is
written into a temporary sibling and renamed into place when training is done; an earlier
training run in that folder is replaced, a folder holding anything else is refused before any
work. Without ``--out`` every run gets a new folder under ``runs/``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench.cli.commands.options import add_config_options, config_from_args, option_defaults
from bench.cli.outdir import POLICY, check_out_dir, write_out_dir
from alexnet.config import DATASETS, PIPELINES

NAME = "train"
HELP = "train AlexNet with the chapter's recipe (SGD, cross-entropy, FashionMNIST resized to 224)"

# The seed: AlexNet(lr=0.01), FashionMNIST(batch_size=128, resize=(224, 224)), max_epochs=10.
SEED_DEFAULTS = option_defaults(device="cpu", batch_size=128, resolution=(224, 224), lr=0.01, epochs=10)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_options(p, defaults=SEED_DEFAULTS, recipe=True)
    g = p.add_argument_group("data and output")
    g.add_argument("--epochs", type=int, default=SEED_DEFAULTS.epochs, help="max epochs (default 10, the seed's)")
    g.add_argument("--data", default="fashion-mnist", help=f"{' | '.join(DATASETS)} (default fashion-mnist)")
    g.add_argument("--data-root", default=None, help="folder holding FashionMNIST/raw/*-ubyte(.gz) (fashion-mnist only)")
    g.add_argument("--download", action="store_true", help="let torchvision download FashionMNIST into --data-root")
    g.add_argument("--synthetic-size", type=int, default=None, help="synthetic training images (default 2048; val is a quarter)")
    g.add_argument("--pipeline", default="dataloader", help=f"{' | '.join(PIPELINES)} (default dataloader)")
    g.add_argument("--workers", type=int, default=0, help="DataLoader workers (default 0; the book uses 4)")
    g.add_argument("--out", default=None, metavar="DIR",
                   help=f"folder for history.csv and curves.png (default: a new runs/train-<time>): {POLICY}")
    g.add_argument("--no-progress", action="store_true", help="never show a progress bar")


def default_out() -> Path:
    """A new folder ``runs/train-<time>`` (``-2``, ``-3`` ... when that one exists): the default never replaces."""
    base = Path("runs") / time.strftime("train-%Y%m%d-%H%M%S")
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


def run(args: argparse.Namespace) -> int:
    from alexnet.train import fit

    cfg = config_from_args(
        args, epochs=args.epochs, data=args.data, data_root=args.data_root, pipeline=args.pipeline, workers=args.workers
    )
    out = Path(args.out).expanduser() if args.out else default_out()
    check_out_dir(out.absolute(), NAME, "training run")
    try:
        write_out_dir(out.absolute(), NAME, lambda tmp: fit(
            cfg, out=tmp, out_name=out, download=args.download, synthetic_size=args.synthetic_size,
            progress=not args.no_progress), keep_on_interrupt=True)
    except BaseException as exc:  # SIGINT or SIGTERM: say, in the command's one line, what was kept
        kept = getattr(exc, "kept_in", None)
        if isinstance(exc, Exception) or kept is None or not (kept / "history.csv").exists():
            raise
        import csv

        with open(kept / "history.csv", newline="") as f:
            epochs = sum(1 for _ in csv.DictReader(f))
        raise type(exc)(f"the {epochs} finished epoch(s) are kept in {kept} (history.csv, curves.png)") from None
    return 0
