"""The report's headlines ("which settings make it faster?"), figures' labels and the multi-run page.

All on SYNTHETIC saved runs (tests/report_runs.py), built in-process: no benchmark runs here.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from matplotlib import colormaps

from alexnet.config import RunConfig
from reports.figures import _text_color, _timeline_label, draw_mfu
from reports.headlines import SEED_WORKLOAD, headlines
from reports.html import build_report
from reports.load import config_axes, load_run, runs_to_frame
from tests.report_runs import synthetic_run, write_run


def _run(tmp_path, cases, *, run_id=1, spread: dict[int, float] | None = None, edit=None):
    """A synthetic run; ``spread`` {case index: IQR/median} gives that case wide rounds."""
    doc = synthetic_run(cases)
    for i, rel in (spread or {}).items():
        stats = doc["benchmarks"][i]["stats"]
        step = stats["median"]
        stats["data"] = [step * (1 + rel * (-0.75 + 0.5 * (k % 4))) for k in range(len(stats["data"]))]
    if edit:
        edit(doc)
    return load_run(write_run(doc, tmp_path / "st", run_id, f"syn{run_id}"))


def _heads(*runs):
    return {(h.mode, h.question.split()[0]): h for h in headlines(runs_to_frame(runs), config_axes(runs), runs)}


SWEEP = [
    ({}, 100.0),                                      # the seed's settings at batch 8, 65x65
    ({"amp": "bf16"}, 150.0),
    ({"amp": "bf16", "compile": "default"}, 210.0),   # best settings: 2.10x
    ({"batch_size": 16}, 330.0),                      # fastest overall: a bigger batch, seed's settings
    ({"mode": "inference"}, 400.0),
    ({"mode": "inference", "channels_last": True}, 500.0),  # 1.25x: inside one run's drift
]


def test_seed_workload_is_the_configs_default():
    seed = RunConfig(device="cpu")
    assert SEED_WORKLOAD == {"variant": seed.variant, "batch_size": seed.batch_size, "resolution": seed.resolution_str}


def test_best_settings_are_set_against_the_seed_at_the_same_workload_never_itself(tmp_path):
    heads = _heads(_run(tmp_path, SWEEP))
    best = heads[("train", "Best")]
    assert best.settings == "amp=bf16, compile=default"
    assert best.answers[0].baseline_case_id == "train-d2l-b8-65x65-fp32-cpu"
    assert best.answers[0].case_id != best.answers[0].baseline_case_id
    assert best.resolved and best.speedup == pytest.approx(2.1)
    # The preset did not hold the seed's workload: the headline names the one it answers at.
    assert best.workload == "d2l batch 8 65x65 cpu" and "was not measured" in best.workload_note
    fastest = heads[("train", "Fastest")]
    assert "batch 16 instead of 8 (a bigger batch is a setting too)" in fastest.settings
    assert fastest.speedup == pytest.approx(3.3)
    # 1.25x lies inside the drift two worker processes show: not resolved, and it says why.
    inf = heads[("inference", "Best")]
    assert inf.settings == "channels_last" and not inf.resolved
    assert "95% interval" in inf.reason and "includes 1" in inf.reason


def test_the_seeds_own_workload_is_used_when_measured(tmp_path):
    seed = {"batch_size": 128, "resolution": "224x224"}
    heads = _heads(_run(tmp_path, [*SWEEP, ({**seed}, 50.0), ({**seed, "amp": "bf16"}, 110.0)]))
    best = heads[("train", "Best")]
    assert best.workload == "d2l batch 128 224x224 cpu" and best.workload_note == "the seed's own workload"
    assert best.settings == "amp=bf16" and best.speedup == pytest.approx(2.2)


def test_the_seeds_own_case_fastest_prints_no_ratio(tmp_path):
    heads = _heads(_run(tmp_path, [({}, 200.0), ({"amp": "bf16"}, 100.0)]))
    fastest = heads[("train", "Fastest")]
    assert not fastest.answers and "seed's own settings" in fastest.note
    assert heads[("train", "Best")].speedup == pytest.approx(0.5)


def test_wide_rounds_are_not_resolved(tmp_path):
    heads = _heads(_run(tmp_path, SWEEP, spread={2: 0.46}))
    best = heads[("train", "Best")]
    assert not best.resolved and "spread 4" in best.reason and "above the 10%" in best.reason


def test_two_runs_that_disagree_are_not_resolved(tmp_path):
    fast = _run(tmp_path, [({}, 100.0), ({"channels_last": True}, 200.0)], run_id=1)
    slow = _run(tmp_path, [({}, 100.0), ({"channels_last": True}, 40.0)], run_id=2)
    best = _heads(fast, slow)[("train", "Best")]
    assert [a.resolved for a in best.answers] == [True, True]
    assert not best.resolved and "the runs disagree" in best.reason
    agree = _heads(fast, _run(tmp_path, [({}, 100.0), ({"channels_last": True}, 210.0)], run_id=3))
    assert agree[("train", "Best")].resolved


def test_page_with_three_runs_says_what_is_compared(tmp_path):
    runs = [_run(tmp_path, SWEEP, run_id=i) for i in (1, 2, 3)]
    out = tmp_path / "r"
    out.mkdir()
    html = build_report(runs, out_dir=out).read_text(encoding="utf-8")
    assert "each later run is compared against the first, 0001_syn1" in html
    assert html.count("against 0001_syn1</h3>") == 2
    # Verdict and ratio come before the figures in ms and MiB; no raw field names.
    assert html.index("time verdict") < html.index("time ratio") < html.index("baseline ms")
    assert "baseline_median_s" not in html and "e+0" not in html


def test_heatmap_labels_contrast_with_their_cell():
    cmap = colormaps["RdYlGn"]
    assert _text_color(cmap(0.0)) == "white" and _text_color(cmap(1.0)) == "white"  # dark red, dark green
    assert _text_color(cmap(0.5)) == "black"                                         # yellow


def test_telemetry_axes_are_plain_words_with_units():
    assert _timeline_label("system_cpu_percent") == "machine CPU, % of all cores"
    assert _timeline_label("rss_bytes").endswith("MiB")
    assert _timeline_label("fan_speed_percent") == "fan speed, %"


def test_mfu_above_the_peak_is_marked_with_its_saved_reason(tmp_path):
    reason = "fp32 convolutions may run as Winograd (a planted reason)"
    run = _run(tmp_path, [({"_extra": {"mfu": 1.3, "warnings": [f"MFU 1.30 above 1 against the fp32 peak: {reason}"]}}, 100.0),
                          ({"amp": "bf16", "_extra": {"mfu": 0.4}}, 100.0)])
    frame = runs_to_frame([run])
    fig, caption = draw_mfu(frame, config_axes([run]), [run])
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert len(texts) == 1 and texts[0].startswith("130%, above the peak: fp32 convolutions")
    assert reason in caption


def test_curves_have_loss_and_accuracy_on_their_own_axes_and_whole_epochs(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from alexnet.train import EpochStats, plot_history

    fields = {f.name for f in dataclasses.fields(EpochStats)}
    history = [EpochStats(**{k: v for k, v in dict(epoch=e, train_loss=2.0 / e, val_loss=2.1 / e, val_acc=0.1 * e,
                                                      images_per_s=1.0, epoch_time_s=1.0,
                                                      data_wait_fraction=0.0).items() if k in fields})
               for e in (1, 2, 3)]
    seen = []
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: seen.append(self))
    plot_history(history, tmp_path / "curves.png", title="t")
    axes = seen[0].axes
    assert [ax.get_ylabel() for ax in axes] == ["cross-entropy loss", "validation accuracy, %"]
    for ax in axes:
        ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
        assert ticks and all(float(t).is_integer() for t in ticks) and ax.get_xlabel() == "epoch"
    assert math.isclose(max(axes[1].lines[0].get_ydata()), 30.0)
