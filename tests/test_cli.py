"""The command line: every option runs with tiny settings, bad input exits 2 with one clear line,
Ctrl-C keeps finished rows, and a coverage test fails when a flag gains no test (Pyro examples' habit)."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pyro_vi_zoo.fit import build_parser, main

runner = sys.modules["pyro_vi_zoo.compare"]  # the module; the package exports the function of that name

TESTS = Path(__file__).parent


def run_cli(*argv):
    return main([str(a) for a in argv])


def only_run_dir(out: Path) -> Path:
    (run_dir,) = (out / "bayes_regression").iterdir()
    return run_dir


def test_list_names_models_and_guides(capsys):
    assert run_cli("--list") == 0
    text = capsys.readouterr().out
    assert "bayes_regression" in text and "auto_mvn" in text and "--noise" in text


def test_default_guides_fast_writes_the_whole_run(tmp_path, capsys, device):
    assert run_cli("bayes_regression", "--fast", "--out", tmp_path, "--no-progress", "--device", device,
                   "--threads", "1") == 0
    printed = capsys.readouterr().out
    run_dir = only_run_dir(tmp_path)
    table = pd.read_csv(run_dir / "results.csv")
    assert list(table["guide"]) == ["mean_field", "auto_normal", "auto_diag_normal", "auto_mvn",
                                    "auto_lowrank_mvn", "auto_iaf", "auto_delta", "auto_laplace"]
    assert (table["status"] == "ok").all() and (table["steps"] == 60).all()
    assert json.loads((run_dir / "results.json").read_text())[0]["guide"] == "mean_field"
    assert json.loads((run_dir / "settings.json").read_text())["settings"]["steps"] == 60
    for figure in ("elbo_traces.png", "marginals.png", "predictive_band.png"):
        assert (run_dir / figure).stat().st_size > 1000
    assert "auto_laplace" in printed and "kl_to_exact" in printed


def test_every_fit_option_runs(tmp_path, device):
    status = run_cli(
        "bayes_regression", "--guide", "mean_field", "--guide", "auto_normal", "--steps", 12, "--lr", 0.01,
        "--lr-decay", 0.5, "--optimizer", "clipped_adam", "--num-particles", 2, "--elbo", "meanfield",
        "--batch-size", 256, "--restarts", 2, "--seed", 7, "--device", device, "--out", tmp_path,
        "--eval-samples", 40, "--no-progress", "--features", "poly5", "--noise", "known", "--validate",
    )
    assert status == 0
    table = pd.read_csv(only_run_dir(tmp_path) / "results.csv")
    row = table.iloc[0]
    assert (row["steps"], row["lr"], row["lr_decay"], row["optimizer"], row["num_particles"]) == (12, 0.01, 0.5, "clipped_adam", 2)
    assert (row["elbo_kind"], row["batch_size"], row["restarts"], row["seed"], row["features"]) == ("meanfield", 256, 2, 7, "poly5")
    assert row["validate"]


def test_all_guides_with_user_csv_and_learned_noise(tmp_path, device, cache):
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, size=120)
    frame = pd.DataFrame({"x": x, "label": ["a"] * 120, "y": 1.5 * x + rng.normal(0, 0.5, 120)})
    frame.to_csv(tmp_path / "mine.csv", index=False)
    status = run_cli("bayes_regression", "--data", tmp_path / "mine.csv", "--target", "y", "--features", "linear",
                     "--noise", "learned", "--guide", "all", "--fast", "--out", tmp_path / "runs", "--no-progress",
                     "--device", device)
    assert status == 0
    table = pd.read_csv(only_run_dir(tmp_path / "runs") / "results.csv")
    assert len(table) == 8 and table["dataset"].eq("mine").all()
    assert table["w1_sd"].notna().all()  # scored against the NUTS reference, cached:
    assert len(list((cache / "references").glob("nuts-*.pt"))) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["nope"], "unknown model 'nope'; choose one of: bayes_regression"),
        (["bayes_regression", "--guide", "nope"], "unknown guide 'nope' for bayes_regression; choose from: mean_field"),
        (["bayes_regression", "--steps", "0"], "steps must be a positive integer"),
        (["bayes_regression", "--lr", "-0.1"], "lr must be positive"),
        (["bayes_regression", "--threads", "0"], "--threads must be at least 1"),
        (["bayes_regression", "--data", "/no/such/file.csv", "--target", "y"], "does not exist; check the path"),
    ],
)
def test_bad_input_exits_2_with_one_clear_line(argv, message, capsys, tmp_path):
    assert run_cli(*argv, "--out", tmp_path, "--fast", "--no-progress") == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and re.search(message, error), error


def test_cuda_without_cuda_exits_2(capsys, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("CUDA is present here")
    assert run_cli("bayes_regression", "--device", "cuda", "--out", tmp_path, "--fast") == 2
    assert "CUDA is not available" in capsys.readouterr().err


def test_unwritable_output_folder_exits_2(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert run_cli("bayes_regression", "--out", blocker, "--fast", "--no-progress") == 2
    assert "pass a writable --out folder" in capsys.readouterr().err


def test_ctrl_c_keeps_the_finished_guides(tmp_path, monkeypatch, capsys):
    real = runner.fit_prepared
    calls = []

    def interrupted_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "fit_prepared", interrupted_on_second)
    status = run_cli("bayes_regression", "--guide", "mean_field", "--guide", "auto_normal", "--fast", "--out",
                     tmp_path, "--no-progress")
    assert status == 130
    table = pd.read_csv(only_run_dir(tmp_path) / "results.csv")
    assert list(table["guide"]) == ["mean_field"]
    assert "interrupted: kept 1" in capsys.readouterr().err


def test_module_and_console_script_entry_points(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pyro_vi_zoo.fit", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--num-particles" in done.stdout
    bad = subprocess.run([sys.executable, "-m", "pyro_vi_zoo", "nope", "--out", str(tmp_path)],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.startswith("error: unknown model 'nope'")
    script = shutil.which("pyro-vi-zoo")
    assert script is not None, "the console script is installed by pip install -e ."
    listed = subprocess.run([script, "--list"], capture_output=True, text=True)
    assert listed.returncode == 0 and "bayes_regression" in listed.stdout


def test_every_cli_flag_is_exercised_by_a_test():
    """Fails when a flag is added to the command line without a test that passes it."""
    texts = "\n".join(path.read_text() for path in TESTS.glob("test_*.py"))
    flags = {flag for action in build_parser()._actions for flag in action.option_strings if flag.startswith("--")}
    untested = sorted(flag for flag in flags - {"--help"} if f'"{flag}"' not in texts)
    assert not untested, f"no test passes {untested}"
