"""`alexnet-bench report` and the reports package, as a user meets them.

The main tests build a report from a small REAL run of the tiny preset (the session's shared
run, ``shared_tiny_run`` in tests/conftest.py). Synthetic runs (labelled so) cover what a tiny run cannot:
compile x AMP sweeps and speedups with known numbers.
"""

from __future__ import annotations

import json
import math
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.cli import main
from reports.figures import draw_all
from reports.html import build_report
from reports.load import RunLoadError, config_axes, load_run, load_runs, read_frame_csv, resolve_run_paths, runs_to_frame
from reports.headlines import headlines
from tests.conftest import run_cli
from tests.report_runs import edited_copy, synthetic_run, write_run

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HOSTILE = "<script>alert(1)</script>"


@pytest.fixture(scope="session")
def real_run(shared_tiny_run) -> Path:
    return shared_tiny_run.path


class _Page(HTMLParser):
    """Collects what a browser would fetch or run: images, scripts, links, and the text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.images: list[str] = []
        self.scripts = 0
        self.links: list[str] = []
        self.text: list[str] = []
        self.headings: list[str] = []
        self._in_heading = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "img":
            self.images.append(attrs["src"])
        elif tag == "script":
            self.scripts += 1
        elif tag in ("a", "link") and attrs.get("href"):
            self.links.append(attrs["href"])
        self._in_heading = tag in ("h1", "h2", "h3")

    def handle_endtag(self, tag):
        if tag in ("h1", "h2", "h3"):
            self._in_heading = False

    def handle_data(self, data):
        self.text.append(data)
        if self._in_heading:
            self.headings.append(data.strip())


def parse(index: Path) -> _Page:
    page = _Page()
    page.feed(index.read_text(encoding="utf-8"))
    page.close()
    return page


def assert_valid_pngs(report: Path, page: _Page) -> None:
    assert page.images, "the report has no figures"
    for src in page.images:
        png = report / src
        assert png.is_file(), f"{src} is referenced but missing"
        assert png.read_bytes()[:8] == PNG_MAGIC, f"{src} is not a PNG"
        with Image.open(png) as img:
            img.load()
            assert img.width > 100 and img.height > 100, f"{src} is {img.size}"


def report_cli(*args: str) -> tuple:
    """``alexnet-bench report ARGS`` in a new process, as a user runs it."""
    r = run_cli("report", *args, timeout=300)
    return r, r.stdout.splitlines(), r.stderr.splitlines()


def report_main(capsys, *args: str) -> tuple[int, list[str], list[str]]:
    """The same CLI entry point in this process (saves a Python + torch start-up per call)."""
    try:
        code = main(["report", *args])
    except SystemExit as exc:
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out.splitlines(), captured.err.splitlines()


@pytest.fixture(scope="module")
def real_report(real_run, tmp_path_factory) -> tuple[Path, list[str]]:
    """One report (with --csv) of the real run, made by a separate process."""
    base = tmp_path_factory.mktemp("real-report")
    out = base / "r"
    r, stdout, _ = report_cli(str(real_run), "--out", str(out), "--csv")
    assert r.returncode == 0, r.stderr
    return out, stdout, base


# --- the real run ----------------------------------------------------------------------------


def test_report_from_a_real_run(real_run, real_report):
    out, stdout, base = real_report
    index = out / "index.html"
    assert stdout[-1] == str(index), "the report's path must be the last line printed"
    page = parse(index)
    assert_valid_pngs(out, page)
    assert page.scripts == 0
    # Offline: every link and image is local (no CDN, no http).
    assert all("://" not in href for href in page.links + page.images), page.links + page.images

    run = load_run(real_run)
    text = " ".join(page.text)
    for bench in run.benchmarks:
        assert bench["extra_info"]["case_id"] in text
    assert str(run.machine_info["torch_version"]) in text
    assert any(h.startswith("Best configuration") for h in page.headings) and "All cases" in page.headings
    # No figure for an axis the run did not sweep.
    frame = runs_to_frame([run])
    drawn = {Path(src).stem for src in page.images}
    if frame["batch_size"].nunique() < 2:
        assert "throughput_vs_batch" not in drawn and "memory_vs_batch" not in drawn
    if frame["resolution"].nunique() < 2:
        assert "throughput_vs_resolution" not in drawn
    assert "step_time_distributions" in drawn  # raw samples are always saved
    # Nothing is left beside the report: no temp dirs, the report dir is complete.
    assert sorted(p.name for p in base.iterdir()) == ["r"]


def test_csv_round_trips(real_run, real_report):
    out = real_report[0]
    frame = runs_to_frame([load_run(real_run)])
    back = read_frame_csv(out / "cases.csv")
    assert list(back.columns) == list(frame.columns)
    assert len(back) == len(frame) == len(load_run(real_run).benchmarks)
    for col in frame.columns:
        ours, theirs = frame[col], back[col]
        if pd.api.types.is_numeric_dtype(ours) and not pd.api.types.is_bool_dtype(ours):
            np.testing.assert_array_equal(ours.to_numpy(dtype=float), theirs.to_numpy(dtype=float), err_msg=col)
        else:
            norm = lambda s: ["" if (v is None or (isinstance(v, float) and math.isnan(v))) else str(v) for v in s]
            assert norm(ours) == norm(theirs), col


def test_hostile_names_and_skips_are_escaped(real_run, tmp_path, capsys):
    def edit(doc):
        doc["benchmarks"][0]["name"] = HOSTILE
        doc["benchmarks"][0]["extra_info"]["case_id"] = HOSTILE
        doc["machine_info"]["cpu_model"] = HOSTILE
        # The only skip: the real run's own fp16 skips would show the same heading and case ids.
        doc.setdefault("alexnet", {})["skipped"] = [
            {"name": "test_step[x]", "fullname": "bench/x", "case_id": "train-d2l-b2-65x65-fp16-cpu",
             "config": {}, "reason": f"fp16 autocast is not supported on cpu {HOSTILE}"}]
        # Cut short by a signal: the page says so at the top.
        doc["alexnet"]["interrupted"] = {"signal": "SIGTERM", "not_run": [HOSTILE, "train-x"], "collected": 5}

    run_file = edited_copy(real_run, tmp_path / "0001_hostile.json", edit)
    out = tmp_path / "r"
    code, _, err = report_main(capsys, str(run_file), "--out", str(out))
    assert code == 0, err
    html = (out / "index.html").read_text(encoding="utf-8")
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = parse(out / "index.html")
    assert page.scripts == 0
    text = " ".join(page.text)
    assert HOSTILE in text  # shown to the reader as text, not run
    assert "Skipped cases" in page.headings
    assert "fp16 autocast is not supported on cpu" in text and "train-d2l-b2-65x65-fp16-cpu" in text
    assert "Interrupted run:" in text and "stopped by SIGTERM after 3 of 5 cases; 2 not run" in " ".join(text.split())
    assert html.index("Interrupted run:") < html.index('id="environment"')  # at the top


def test_two_runs_get_a_comparison_section(real_run, tmp_path):
    second = edited_copy(real_run, tmp_path / "0002_again.json", lambda doc: None)
    out = tmp_path / "r"
    out.mkdir()
    index = build_report([load_run(real_run), load_run(second)], out_dir=out)
    page = parse(index)
    heading = [h for h in page.headings if h.startswith("Comparison")]
    assert heading, page.headings
    text = " ".join(page.text)
    # Either the comparison or a visible note saying why there is none; never silence.
    assert "regression" in text.lower() or "Comparison unavailable" in text or "No comparison" in text


# --- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, needle",
    [
        (None, "not found"),
        ("{\"machine_info\": {", "corrupt JSON"),
        (json.dumps({"hello": "world"}), "not a pytest-benchmark run"),
        (json.dumps([1, 2]), "not a pytest-benchmark run"),
    ],
    ids=["missing", "corrupt", "not-a-run", "not-an-object"],
)
def test_bad_run_file_exits_2_with_one_line_and_keeps_the_old_report(tmp_path, capsys, content, needle):
    bad = tmp_path / "0001_bad.json"
    if content is not None:
        bad.write_text(content)
    out = tmp_path / "r"
    out.mkdir()
    (out / "index.html").write_text("earlier report")
    code, _, stderr = report_main(capsys, str(bad), "--out", str(out))
    assert code == 2
    assert len(stderr) == 1 and needle in stderr[0] and str(bad) in stderr[0], stderr
    assert sorted(p.name for p in out.iterdir()) == ["index.html"]
    assert (out / "index.html").read_text() == "earlier report"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["r"] + ([bad.name] if content else []))


def test_no_runs_found_exits_2(tmp_path, capsys):
    code, _, stderr = report_main(capsys, "--storage", str(tmp_path / "empty"), "--out", str(tmp_path / "r"))
    assert code == 2
    assert len(stderr) == 1 and "no runs found" in stderr[0]
    assert not (tmp_path / "r").exists()


def test_out_dir_with_other_files_is_refused(real_run, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    code, _, stderr = report_main(capsys, str(real_run), "--out", str(out))
    assert code == 2 and len(stderr) == 1 and "holds no report" in stderr[0]
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def test_missing_run_file_as_a_user_meets_it(tmp_path):
    r, stdout, stderr = report_cli("/nonexistent.json", "--out", str(tmp_path / "r"))
    assert r.returncode == 2
    assert stderr == ["alexnet-bench report: error: run file '/nonexistent.json' not found"]
    assert not (tmp_path / "r").exists()


# --- loading ---------------------------------------------------------------------------------


def test_runs_resolve_by_path_id_name_and_latest(real_run, tmp_path):
    storage = tmp_path / "st"
    first = edited_copy(real_run, storage / "Linux-CPython-3.11-64bit" / "0001_alpha.json", lambda d: None)
    second = edited_copy(real_run, storage / "Linux-CPython-3.11-64bit" / "0002_beta.json", lambda d: None)
    assert resolve_run_paths([], storage=storage) == [second]
    assert resolve_run_paths(["1"], storage=storage) == [first]
    assert resolve_run_paths(["0002", "alpha"], storage=storage) == [second, first]
    assert resolve_run_paths([str(first)], storage=Path("/nonexistent")) == [first]
    assert resolve_run_paths(["2"], storage=f"file://{storage}") == [second]
    runs = load_runs(["1", "2"], storage=storage)
    assert [(r.run_id, r.name) for r in runs] == [("0001", "alpha"), ("0002", "beta")]
    frame = runs_to_frame(runs)
    n = len(runs[0].benchmarks)
    assert len(frame) == 2 * n
    assert list(frame["run_id"]) == ["0001"] * n + ["0002"] * n
    # Every config axis, the metrics and the environment are columns.
    for col in [*runs[0].benchmarks[0]["extra_info"]["config"], "images_per_s", "step_time_s", "stats_median",
                "env_torch_version", "env_commit_id"]:
        assert col in frame, col
    with pytest.raises(RunLoadError, match="run id '7' not found"):
        resolve_run_paths(["7"], storage=storage)


# --- figures and the summary, on SYNTHETIC runs ----------------------------------------------


def _synthetic(tmp_path, cases, **kw):
    return load_run(write_run(synthetic_run(cases, **kw), tmp_path / "st", 1, "synthetic"))


def test_best_config_speedup_is_against_fp32_eager_of_the_same_workload(tmp_path):
    run = _synthetic(tmp_path, [
        ({}, 100.0),                                                  # the seed's fp32 eager, batch 8
        ({"amp": "bf16"}, 150.0),
        ({"compile": "default"}, 120.0),
        ({"amp": "bf16", "compile": "default"}, 210.0),               # fastest train: 2.10x
        ({"batch_size": 16}, 130.0),                                  # another workload's baseline
        ({"mode": "inference"}, 400.0),
        ({"mode": "inference", "channels_last": True}, 500.0),        # fastest inference: 1.25x
    ])
    frame = runs_to_frame([run])
    best = {h.mode: h for h in headlines(frame, config_axes([run]), [run]) if h.question.startswith("Best")}
    assert best["train"].answers[0].case_id == "train-d2l-b8-65x65-bf16-compile_default-cpu"
    assert best["train"].answers[0].baseline_case_id == "train-d2l-b8-65x65-fp32-cpu"
    assert best["train"].speedup == pytest.approx(2.1)
    assert best["inference"].speedup == pytest.approx(1.25)
    assert best["train"].note is None


def test_figures_only_for_swept_axes(tmp_path):
    out = tmp_path / "figs"
    out.mkdir()
    one_point = _synthetic(tmp_path, [({}, 100.0), ({"mode": "inference"}, 300.0)])
    # One batch size, one resolution, no compile x AMP sweep, no layers, no telemetry: only the
    # step-time distributions have data.
    drawn = {f.file for f in draw_all([one_point], runs_to_frame([one_point]), config_axes([one_point]), out_dir=out)}
    assert drawn == {"step_time_distributions.png"}

    swept = _synthetic(tmp_path, [
        ({}, 100.0), ({"amp": "bf16"}, 150.0), ({"compile": "default"}, 120.0), ({"batch_size": 16}, 130.0),
        ({"resolution": "81x81"}, 80.0),
        ({"_extra": {"layers": [{"index": 0, "layer": "conv1", "fwd_ms": 1.0, "bwd_ms": 2.0}],
                     "mfu": 0.1, "peak_memory_bytes": 2**28}}, 101.0),
        ({"pipeline": "device", "_extra": {"kind": "loop", "data_wait_fraction": 0.25}}, 90.0),
    ])
    for png in out.iterdir():
        png.unlink()
    drawn = {f.file for f in draw_all([swept], runs_to_frame([swept]), config_axes([swept]), out_dir=out)}
    assert {"speedup_heatmap.png", "throughput_vs_batch.png", "throughput_vs_resolution.png", "layers.png",
            "mfu.png", "step_time_distributions.png"} <= drawn
    assert "memory_vs_batch.png" not in drawn  # memory was recorded at one batch size only
    assert "data_wait.png" in drawn
    assert "telemetry.png" not in drawn  # no telemetry series were saved
    assert drawn == {p.name for p in out.iterdir()}
