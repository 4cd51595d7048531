"""The command line as a user meets it: output, help, and one-line errors with status 2."""

from __future__ import annotations

import pytest

from bench.cli import COMMANDS
from tests.conftest import run_cli

GOLDEN = __import__("pathlib").Path(__file__).parent / "golden" / "summary_d2l_224x244.txt"


@pytest.fixture(scope="module")
def summary_224x244():
    """``python -m bench summary --resolution 224x244``, once for the tests that read it."""
    return run_cli("summary", "--resolution", "224x244")


@pytest.mark.slow
def test_summary_prints_the_seed_table_then_params_and_flops(summary_224x244):
    r = summary_224x244
    assert r.returncode == 0, r.stderr
    out = r.stdout.splitlines()
    assert out[:21] == GOLDEN.read_text().splitlines()
    assert out[20] == "Linear output shape:\t torch.Size([1, 10])"
    tail = "\n".join(out[21:])
    assert "Parameters:" in tail and "GFLOP" in tail


@pytest.mark.parametrize(
    "args, needle",
    [
        (["summary", "--resolution", "64"], "65x65"),
        (["summary", "--variant", "resnet"], "d2l, torchvision"),
        (["summary", "--resolution", "2x3x4"], "N or HxW"),
        (["train", "--batch-size", "0"], "batch size 0"),
        (["train", "--device", "tpu"], "auto, cpu, cuda"),
        (["train", "--amp", "int8"], "off, bf16, fp16"),
        (["train", "--compile", "turbo"], "reduce-overhead"),
        (["train", "--batch-size", "x"], "invalid int value"),
        (["train", "--data", "fashion-mnist", "--data-root", "/nonexistent/fm", "--device", "cpu"], "--download"),
        (["nosuchcommand"], "invalid choice"),
    ],
)
def test_bad_input_one_line_exit_2(args, needle, cli_main):
    r = cli_main(*args)
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert needle in lines[0]
    assert "Traceback" not in r.stderr


def test_bad_input_from_a_real_process_is_one_line_exit_2():
    """The cases above run `bench.cli.main` in this process; one goes through ``python -m bench``."""
    r = run_cli("summary", "--resolution", "64")
    assert r.returncode == 2, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "65x65" in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_every_subcommand_has_help():
    for name in COMMANDS:
        r = run_cli(name, "--help")
        assert r.returncode == 0 and "usage:" in r.stdout, name


@pytest.mark.slow
def test_python_m_alexnet_and_console_script_agree(summary_224x244):
    import shutil
    import subprocess

    exe = shutil.which("alexnet-bench")
    if exe is None:
        pytest.skip("alexnet-bench console script not installed in this environment (pip install -e .)")
    a = subprocess.run([exe, "summary", "--resolution", "224x244"], capture_output=True, text=True)
    b = summary_224x244
    assert a.returncode == b.returncode == 0 and a.stdout == b.stdout
