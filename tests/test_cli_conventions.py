"""The command-line conventions of docs/cli.md, for every command: exit statuses, full option
names with suggestions, --version, the one --out policy, silenced third-party noise, and the
docs' literal examples against the tool's output. In-process (`cli_main`) unless a real process
is the point."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import COMMANDS, build_parser, version_line
from bench.cli.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE
from bench.cli.errors import UsageError
from bench.cli.outdir import MARKER, check_out_dir, write_out_dir
from tests.conftest import REPO

# The least a command needs for its own arguments to parse (required positionals and options).
REQUIRED = {"ab": ["a", "b"], "ddp": ["--nproc", "1"]}


def _one_line(r) -> str:
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    return lines[0]


def _subparsers():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sub.choices


# --- --version, full option names, suggestions ---------------------------------------------------


@pytest.mark.parametrize("args", [["--version"]] + [[c, "--version"] for c in COMMANDS])
def test_version_on_every_command(args, cli_main):
    r = cli_main(*args)
    assert r.returncode == 0 and r.stdout.strip() == version_line() and r.stdout.startswith("alexnet-bench ")


@pytest.mark.parametrize("command", COMMANDS)
def test_abbreviated_options_are_refused_with_the_full_name(command, cli_main):
    options = _subparsers()[command].option_names()
    # The longest option whose shortened form is no option itself.
    full = max((o for o in options if o not in ("--help", "--version")), key=len)
    short = full[:-2]
    assert short not in options
    r = cli_main(command, *REQUIRED.get(command, []), short, "1")
    assert r.returncode == EXIT_USAGE
    line = _one_line(r)
    assert line.startswith(f"alexnet-bench {command}: error: unrecognized arguments: {short}"), line
    assert "did you mean" in line and full in line, line


def _typos(name: str) -> list[str]:
    """A key pressed twice, and two neighbouring letters swapped (where that changes the word)."""
    i = len(name) // 2
    swapped = name[:i - 1] + name[i] + name[i - 1] + name[i + 1:]
    return [name + name[-1]] + ([swapped] if swapped != name and len(name) > 2 else [])


@pytest.mark.parametrize("command", COMMANDS)
def test_a_mistyped_command_gets_a_suggestion(command, cli_main):
    for typo in _typos(command):
        assert typo not in COMMANDS
        r = cli_main(typo)
        assert r.returncode == EXIT_USAGE
        line = _one_line(r)
        assert f"no command {typo!r}; did you mean {command}" in line, line


def test_a_word_like_no_command_gets_no_suggestion_but_the_list(cli_main):
    line = _one_line(cli_main("zzzz"))
    assert "did you mean" not in line and ", ".join(COMMANDS) in line


def test_no_option_that_means_nothing_where_it_appears(cli_main):
    assert "--batch-size" not in _subparsers()["max-batch"].option_names()  # the search finds the batch
    line = _one_line(cli_main("max-batch", "--batch-size", "4"))
    assert "unrecognized arguments: --batch-size" in line


# --- exit statuses -------------------------------------------------------------------------------


def test_compare_refuses_an_unwritable_markdown_path_before_any_work(cli_main, tmp_path):
    # The runs do not exist: had compare loaded them first, the error would name them.
    for path in ("/nonexistent/dir/x.md", str(tmp_path / "a-file" / "x.md")):
        (tmp_path / "a-file").write_text("")
        r = cli_main("compare", "no-such-run-a", "no-such-run-b", "--markdown", path)
        assert r.returncode == EXIT_USAGE and r.stdout == ""
        line = _one_line(r)
        assert line.startswith("alexnet-bench compare: error: --markdown") and "no-such-run" not in line, line


@pytest.mark.parametrize("value, ok", [("5%", 0.05), ("0.05", 0.05), ("0", 0.0)])
def test_threshold_as_percent_or_fraction(value, ok):
    from bench.cli.commands.compare import fraction

    assert fraction(value) == pytest.approx(ok)


@pytest.mark.parametrize("value, needle", [("5", "write 5% for 5 percent (or the fraction 0.05)"),
                                           ("150%", "between 0% and 100%"), ("x", "e.g. 5% or 0.05")])
def test_a_threshold_that_is_not_clear_says_how_to_write_it(value, needle, cli_main):
    for command in ("compare", "history"):
        line = _one_line(cli_main(command, "--threshold", value))
        assert line.startswith(f"alexnet-bench {command}: error: argument --threshold") and needle in line, line


@pytest.mark.parametrize("value, needle", [("10", "a bare number is bytes: write a unit, e.g. 10GiB"),
                                           ("1MiB", "below 64 MiB"), ("8XB", "such as 8GiB")])
def test_max_batch_memory_limit_needs_a_sane_size(value, needle, cli_main):
    r = cli_main("max-batch", "--device", "cpu", "--memory-limit", value)
    assert r.returncode == EXIT_USAGE and needle in _one_line(r)


def test_max_batch_memory_limit_units():
    from bench.cli.commands.max_batch import parse_bytes

    assert parse_bytes("1.5GiB") == 3 * 2**29 and parse_bytes("800MB") == 800 * 10**6
    assert parse_bytes(str(2**30)) == 2**30  # a bare number is bytes


@pytest.fixture
def summary_run(monkeypatch):
    """Make ``summary``'s run do what the test says (the parser reads ``run`` when it is built)."""
    from bench.cli.commands import summary

    def use(fn):
        monkeypatch.setattr(summary, "run", fn)

    return use


@pytest.mark.parametrize("exc, code, word", [(KeyboardInterrupt(), EXIT_INTERRUPTED, "interrupted"),
                                             (RuntimeError("a bug"), EXIT_FAILED, "internal error RuntimeError: a bug")])
def test_interrupts_and_bugs_never_exit_1(exc, code, word, summary_run, cli_main):
    def run(args):
        raise exc

    summary_run(run)
    r = cli_main("summary")
    assert r.returncode == code
    assert r.stderr.strip().splitlines()[-1] == f"alexnet-bench summary: {'error: ' if code == EXIT_FAILED else ''}{word}"


def test_sigterm_exits_143_after_cleanup(tmp_path):
    """A real process: SIGTERM becomes status 143, and the output folder's cleanup runs."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from bench.cli.commands import summary\n"
        "from bench.cli.outdir import write_out_dir\n"
        "def run(args):\n"
        "    def build(tmp):\n"
        "        print(tmp, flush=True)\n"
        "        time.sleep(60)\n"
        f"    write_out_dir(Path({str(tmp_path / 'out')!r}), 'summary', build)\n"
        "summary.run = run\n"
        "from bench.cli import main\n"
        "sys.exit(main(['summary']))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    partial = Path(proc.stdout.readline().strip())
    assert partial.is_dir() and partial.name.endswith(".partial")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == EXIT_TERMINATED, err
    assert err.strip().splitlines()[-1] == "alexnet-bench summary: terminated"
    assert list(tmp_path.iterdir()) == []  # neither the partial folder nor the one made for it


# --- the one --out policy ------------------------------------------------------------------------


def _build(files: dict[str, str]):
    def build(tmp: Path) -> Path:
        for name, text in files.items():
            (tmp / name).write_text(text)
        return tmp / "index.html"

    return build


def test_out_dir_replaces_only_its_own_earlier_output(tmp_path):
    out = tmp_path / "deep" / "out"
    check_out_dir(out, "report", "report")
    assert write_out_dir(out, "report", _build({"index.html": "1", "a.png": "x"})).name == "index.html"
    assert json.loads((out / MARKER).read_text()) == {"command": "report", "files": ["a.png", "index.html"]}
    check_out_dir(out, "report", "report")
    write_out_dir(out, "report", _build({"index.html": "2"}))
    assert sorted(p.name for p in out.iterdir()) == [MARKER, "index.html"] and (out / "index.html").read_text() == "2"
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]  # no partial or old folder left
    with pytest.raises(UsageError, match="holds no history page: it holds the output of alexnet-bench report"):
        check_out_dir(out, "history", "history page")
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="also notes.txt, which it did not write"):
        check_out_dir(out, "report", "report")


@pytest.mark.parametrize("setup, needle", [
    (lambda d: (d / "f").write_text(""), "is a file, not a folder"),
    (lambda d: ((d / "f").mkdir(), (d / "f" / "notes.txt").write_text("")), "holds no profile (it already holds notes.txt)"),
])
def test_out_dir_refuses_what_it_did_not_write(tmp_path, setup, needle):
    setup(tmp_path)
    with pytest.raises(UsageError, match=re.escape(needle)):
        check_out_dir(tmp_path / "f", "profile", "profile")


def test_out_dir_under_a_file_is_refused(tmp_path):
    (tmp_path / "f").write_text("")
    with pytest.raises(UsageError, match="is not a folder"):
        check_out_dir(tmp_path / "f" / "sub" / "out", "train", "training run")


@pytest.mark.parametrize("exc", [RuntimeError("bug while drawing"), KeyboardInterrupt()])
def test_a_failed_or_interrupted_build_leaves_the_earlier_output(tmp_path, exc):
    out = tmp_path / "out"
    write_out_dir(out, "report", _build({"index.html": "earlier"}))

    def build(tmp: Path) -> Path:
        (tmp / "index.html").write_text("half")
        raise exc

    with pytest.raises(type(exc)):
        write_out_dir(out, "report", build)
    assert (out / "index.html").read_text() == "earlier" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.parametrize("command, args", [
    ("train", ["--data", "synthetic", "--device", "cpu"]),
    ("profile", ["--device", "cpu", "--resolution", "65", "--batch-size", "2"]),
    ("report", []),
    ("history", []),
])
def test_every_folder_writing_command_refuses_a_foreign_folder_before_any_work(command, args, tmp_path, cli_main):
    from tests.report_runs import synthetic_run, write_run

    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    if command in ("report", "history"):
        args = [str(write_run(synthetic_run([({}, 100.0)]), tmp_path / "runs", 1, "synthetic"))]
    r = cli_main(command, *args, "--out", out)
    assert r.returncode == EXIT_USAGE and r.stdout == ""
    line = _one_line(r)
    assert line.startswith(f"alexnet-bench {command}: error: --out") and "holds no" in line and "notes.txt" in line
    assert [p.name for p in out.iterdir()] == ["notes.txt"]
    assert {p.name for p in tmp_path.iterdir()} <= {"mine", "runs"}  # nothing built beside it


@pytest.mark.parametrize("command", ["train", "profile", "report", "history"])
def test_every_folder_writing_command_names_the_policy_in_its_help(command, cli_main):
    from bench.cli.outdir import POLICY

    r = cli_main(command, "--help")
    assert r.returncode == 0 and " ".join(POLICY.split()) in " ".join(r.stdout.split())


def test_history_has_a_default_out(cli_main):
    from bench.cli.commands.history import DEFAULT_OUT

    args = build_parser().parse_args(["history"])
    assert args.out == DEFAULT_OUT and f"{DEFAULT_OUT}/" in (REPO / ".gitignore").read_text().splitlines()


# --- noise ---------------------------------------------------------------------------------------


def test_torch_cuda_home_warning_is_silenced_and_others_are_not(caplog):
    from bench.cli.noise import silence_third_party_noise

    silence_third_party_noise()
    log = logging.getLogger("torch.utils.cpp_extension")
    with caplog.at_level(logging.WARNING):
        log.warning("No CUDA runtime is found, using CUDA_HOME='%s'", "/usr/local/cuda")
        log.warning("a real warning")
    assert [r.getMessage() for r in caplog.records] == ["a real warning"]


def test_profiler_usdt_lines_are_dropped_and_other_stderr_kept(capfd):
    from bench.instruments.profiling import _without_usdt_lines

    with _without_usdt_lines():
        os.write(2, b"USDT:2026-01-01 00:00:00 1:1 SyncActivityProfilerHandler.cpp:39] profiler_start\n")
        os.write(2, b"warning: a real one\n")
        print("to stdout", flush=True)
    out, err = capfd.readouterr()
    assert err == "warning: a real one\n" and out == "to stdout\n"


def test_profile_reports_the_cpu_share_of_the_machine():
    from bench.cli.commands.profile import _telemetry_lines

    tel = {"kind": "psutil", "interval_s": 0.1, "window_s": 1.0, "notes": [],
           "summary": {"cpu_percent_mean": 216.0, "system_cpu_percent_mean": 97.0, "cpu_count": 2,
                       "rss_peak_bytes": 2**30}}
    line = _telemetry_lines(tel, steps=1, images=2)[0]
    assert "of the machine (2 cores): this process 100%, all processes 97%" in line and "core of" not in line
    assert all(int(p) <= 100 for p in re.findall(r"(\d+)%", line))


# --- the docs' literal examples ------------------------------------------------------------------

_CONSOLE_RE = re.compile(r"```console\n\$ alexnet-bench (summary[^\n]*)\n(.*?)```", re.S)


def test_docs_summary_examples_match_the_tool(cli_main):
    """Every ``$ alexnet-bench summary ...`` console block in README.md and docs/: its literal lines
    (not ``...``) are lines the tool prints, in order."""
    blocks = [(path, m) for path in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
              for m in _CONSOLE_RE.finditer(path.read_text(encoding="utf-8"))]
    assert blocks, "no summary example found in the docs"
    for path, m in blocks:
        r = cli_main(*m.group(1).split())
        assert r.returncode == 0, r.stderr
        printed = iter(r.stdout.splitlines())
        for line in m.group(2).splitlines():
            if line.strip() in ("", "..."):
                continue
            assert line in printed, f"{path.name}: {line!r} is not what `alexnet-bench {m.group(1)}` prints"


def test_compare_help_agrees_with_the_judged_thresholds(cli_main):
    from reports.compare.judgement import DEFAULT_THRESHOLD, DUET_THRESHOLD

    text = " ".join(cli_main("compare", "--help").stdout.split())
    assert f"default: {DUET_THRESHOLD:.1%} for duet sessions, {DEFAULT_THRESHOLD:.0%} otherwise" in text
    assert f"| `--threshold` | duet sessions: `{DUET_THRESHOLD:.1%}`; otherwise `{DEFAULT_THRESHOLD:.0%}`" in (
        REPO / "docs" / "compare.md").read_text()


def test_readme_states_the_exit_statuses_of_errors_py():
    from bench.cli import errors

    text = " ".join((REPO / "README.md").read_text().split())
    assert (f"{errors.EXIT_REGRESSION} a regression and nothing else, {errors.EXIT_USAGE} bad input" in text
            and f"{errors.EXIT_FAILED} the work failed, {errors.EXIT_INTERRUPTED}/{errors.EXIT_TERMINATED} interrupted"
            in text)

