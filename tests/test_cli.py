"""The command line: every option runs with tiny settings, bad input exits 2 with one clear line,
Ctrl-C keeps finished rows, and a coverage test fails when a flag gains no test (Pyro examples' habit)."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import pyro_vi_zoo.cli as cli
from pyro_vi_zoo.cli import build_parser, main
from pyro_vi_zoo.runner import Comparison
from pyro_vi_zoo.errors import DivergenceError, ZooError
from pyro_vi_zoo.registry import get_family

import pyro_vi_zoo.runner as runner

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
    for figure in ("elbo_traces.png", "marginals.png", "predictive_band.png", "mean_band.png"):
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


def test_options_that_take_a_value_may_come_before_the_model(tmp_path, capsys):
    assert run_cli("--out", tmp_path, "--seed", "3", "bayes_regression", "--guide", "mean_field", "--fast",
                   "--no-progress") == 0
    run_dir = only_run_dir(tmp_path)
    assert pd.read_csv(run_dir / "results.csv")["seed"].iloc[0] == 3
    mask = os.umask(0)
    os.umask(mask)
    for path in (run_dir / "results.csv", run_dir / "settings.json", run_dir / "elbo_traces.png"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~mask, path  # an ordinary file, not mkstemp's private one


def test_a_guide_that_fails_fails_its_row_and_the_others_run(tmp_path, monkeypatch, capsys):
    real, calls = runner.fit_choice, []

    def second_fails(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("an unexpected failure\nwith more lines")
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "fit_choice", second_fails)
    assert run_cli("bayes_regression", "--guide", "mean_field", "--guide", "auto_normal", "--guide", "auto_delta",
                   "--fast", "--out", tmp_path, "--no-progress") == 0
    run_dir = only_run_dir(tmp_path)
    table = pd.read_csv(run_dir / "results.csv")
    assert list(table["status"]) == ["ok", "failed", "ok"]
    assert table["error"].iloc[1] == "RuntimeError: an unexpected failure"
    assert "bayes_regression/auto_normal failed: RuntimeError: an unexpected failure" in capsys.readouterr().err
    assert (run_dir / "elbo_traces.png").exists() and (run_dir / "parameters" / "auto_delta.pt").exists()


def test_a_laplace_fit_without_a_mode_says_so(tmp_path, capsys):
    assert run_cli("gmm", "--guide", "auto_laplace", "--steps", "5", "--fast", "--out", tmp_path,
                   "--no-progress") == 1
    error = capsys.readouterr().err
    assert "gmm/auto_laplace failed: the Laplace approximation needs a positive-definite Hessian" in error
    assert "error: no guide finished (auto_laplace: failed)" in error


def test_ctrl_c_before_any_guide_finished_is_one_line(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "prepare", interrupted)
    assert run_cli("bayes_regression", "--fast", "--out", tmp_path, "--no-progress") == 130
    assert capsys.readouterr().err.strip() == "interrupted: no guide had finished"


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
    real = runner.fit_choice
    calls = []

    def interrupted_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "fit_choice", interrupted_on_second)
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


COMMON_FLAGS = {  # flag -> (its arguments, a check of what reached compare())
    "--guide": (["auto_normal"], lambda call: call["guides"] == ["auto_normal"]),
    "--data": (["table.csv"], lambda call: call["data"] == "table.csv"),
    "--steps": (["12"], lambda call: call["steps"] == 12),
    "--lr": (["0.01"], lambda call: call["lr"] == 0.01),
    "--lr-decay": (["0.5"], lambda call: call["lr_decay"] == 0.5),
    "--optimizer": (["clipped_adam"], lambda call: call["optimizer"] == "clipped_adam"),
    "--num-particles": (["2"], lambda call: call["num_particles"] == 2),
    "--elbo": (["meanfield"], lambda call: call["elbo"] == "meanfield"),
    "--batch-size": (["64"], lambda call: call["batch_size"] == 64),
    "--epochs": (["4"], lambda call: call["epochs"] == 4),
    "--restarts": (["3"], lambda call: call["restarts"] == 3),
    "--validate": ([], lambda call: call["validate"] is True),
    "--seed": (["7"], lambda call: call["seed"] == 7),
    "--device": (["cpu"], lambda call: call["device"] == "cpu"),
    "--capture": (["off"], lambda call: call["capture"] == "off"),
    "--threads": (["1"], lambda call: torch.get_num_threads() == 1),
    "--out": (["elsewhere"], lambda call: call["out"] == "elsewhere"),
    "--eval-samples": (["40"], lambda call: call["num_eval_samples"] == 40),  # explicit beats --fast's 100
    "--is-samples": (["30"], lambda call: call["num_is_samples"] == 30),
    "--fast": ([], lambda call: call["fast"] is True and call["num_elbo_particles"] == 100),
    "--no-progress": ([], lambda call: call["progress"] is False),
    "--arviz": ([], lambda call: call["arviz"] is True),
    "--resume": (["runs/x"], lambda call: call["resume"] == "runs/x"),
    "--dist-timeout": (["30"], lambda call: call["dist_timeout"] == 30.0),
}
FAMILY_FLAGS = {
    "bayes_regression": {
        "--features": (["poly5"], lambda call: call["data_options"]["features"] == "poly5"),
        "--target": (["y"], lambda call: call["data_options"]["target"] == "y"),
        "--noise": (["learned"], lambda call: call["model_options"]["noise"] == "learned"),
    },
    "bnn_regression": {
        "--dataset": (["uci:yacht"], lambda call: call["data_options"]["dataset"] == "uci:yacht"),
        "--split": (["3"], lambda call: call["data_options"]["split"] == 3),
        "--data-dir": (["folder"], lambda call: call["data_options"]["data_dir"] == "folder"),
        "--hidden": (["20,10"], lambda call: call["model_options"]["hidden"] == "20,10"),
        "--prior-scale": (["0.5"], lambda call: call["model_options"]["prior_scale"] == 0.5),
    },
    "gmm": {
        "--components": (["3"], lambda call: call["model_options"]["components"] == 3),
        "--assignments": (["enumerated"], lambda call: call["model_options"]["assignments"] == "enumerated"),
        "--ordered": (["yes"], lambda call: call["model_options"]["ordered"] == "yes"),
    },
    "vae": {
        "--dataset": (["mnist"], lambda call: call["data_options"]["dataset"] == "mnist"),
        "--data-dir": (["folder"], lambda call: call["data_options"]["data_dir"] == "folder"),
        "--binarization": (["fixed"], lambda call: call["data_options"]["binarization"] == "fixed"),
        "--train-limit": (["500"], lambda call: call["data_options"]["train_limit"] == 500),
        "--test-limit": (["100"], lambda call: call["data_options"]["test_limit"] == 100),
        "--latent-dim": (["2"], lambda call: call["model_options"]["latent_dim"] == 2),
        "--hidden": (["100,100"], lambda call: call["model_options"]["hidden"] == "100,100"),
        "--activation": (["relu"], lambda call: call["model_options"]["activation"] == "relu"),
    },
    "autorec": {
        "--dataset": (["movielens-100k"], lambda call: call["data_options"]["dataset"] == "movielens-100k"),
        "--split": (["u2"], lambda call: call["data_options"]["split"] == "u2"),
        "--data-dir": (["folder"], lambda call: call["data_options"]["data_dir"] == "folder"),
        "--orientation": (["user"], lambda call: call["data_options"]["orientation"] == "user"),
        "--hidden": (["100"], lambda call: int(call["model_options"]["hidden"]) == 100),
        "--prior-scale": (["0.2"], lambda call: call["model_options"]["prior_scale"] == 0.2),
        "--noise-scale": (["learned"], lambda call: call["model_options"]["noise_scale"] == "learned"),
        "--activation": (["tanh"], lambda call: call["model_options"]["activation"] == "tanh"),
        "--output-activation": (["sigmoid"], lambda call: call["model_options"]["output_activation"] == "sigmoid"),
    },
}


@pytest.mark.parametrize("model", sorted(FAMILY_FLAGS))
def test_every_flag_reaches_the_runner(model, monkeypatch):
    """Runs the command line with every flag given at once and checks each value where it lands;
    fails when the parser gains a flag this table does not exercise."""
    calls = []

    def recording_compare(family, **call):
        calls.append(call)
        return Comparison(pd.DataFrame(), {}, None, None)

    monkeypatch.setattr(cli, "compare", recording_compare)
    flags = {**COMMON_FLAGS, **FAMILY_FLAGS[model]}
    argv = [model] + [part for flag, (values, _) in flags.items() for part in [flag, *values]]
    assert main(argv) == 0
    (call,) = calls
    call = {**call, **{k: v for k, v in call.items() if k in ("data_options", "model_options")}}
    failed = [flag for flag, (_, check) in flags.items() if not check(call)]
    assert not failed, f"these flags did not reach the runner as given: {failed}"
    every_flag = {flag for action in build_parser()._actions for flag in action.option_strings if flag.startswith("--")}
    covered = set(COMMON_FLAGS).union(*FAMILY_FLAGS.values()) | {"--help", "--list"}
    assert every_flag <= covered, f"add {sorted(every_flag - covered)} to the flags this test runs"
    own = {option.flag for option in get_family(model).options}
    assert own <= set(FAMILY_FLAGS[model]), f"add {model}'s {sorted(own - set(FAMILY_FLAGS[model]))} to FAMILY_FLAGS"


def test_every_family_has_its_flags_in_the_table():
    from pyro_vi_zoo.registry import MODELS

    assert set(FAMILY_FLAGS) == set(MODELS)


def test_help_gives_the_defaults_that_apply(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "2000 (bayes_regression), 5000 (bnn_regression), 1500 (gmm)" in text  # --steps
    assert "with --fast: 60 (bayes_regression)" in text
    assert "(default: 1000; with --fast: 100)" in text  # --eval-samples


def test_a_run_where_every_guide_diverged_exits_1_and_says_why(tmp_path, monkeypatch, capsys):
    def diverging(choice, *args, **kwargs):
        raise DivergenceError(3, f"the loss became nan at step 3 for {choice.name}")

    monkeypatch.setattr(runner, "fit_choice", diverging)
    status = run_cli("bayes_regression", "--guide", "mean_field", "--guide", "auto_normal", "--fast", "--out",
                     tmp_path, "--no-progress")
    assert status == 1
    err = capsys.readouterr().err
    assert "no guide finished (mean_field: diverged; auto_normal: diverged)" in err
    assert "bayes_regression/auto_normal diverged: the loss became nan" in err
    table = pd.read_csv(only_run_dir(tmp_path) / "results.csv")
    assert list(table["status"]) == ["diverged", "diverged"] and table["error"].str.contains("step 3").all()


def test_arviz_export_writes_inference_data_per_guide(tmp_path):
    arviz = pytest.importorskip("arviz")
    assert run_cli("bayes_regression", "--guide", "mean_field", "--guide", "auto_delta", "--fast", "--arviz",
                   "--eval-samples", "50", "--out", tmp_path, "--no-progress") == 0
    run_dir = only_run_dir(tmp_path)
    data = arviz.from_netcdf(run_dir / "inference_data" / "mean_field.nc")
    assert data.posterior["weight"].shape == (1, 50, 3) and data.posterior["bias"].shape == (1, 50)
    assert data.posterior_predictive["y"].shape == (1, 50, 8000) and data.observed_data["y"].shape == (8000,)
    assert (run_dir / "inference_data" / "auto_delta.nc").exists()


def test_arviz_missing_is_one_clear_line(monkeypatch):
    import builtins

    from pyro_vi_zoo import fit
    from pyro_vi_zoo.data.regression import cubic_arrays

    real_import = builtins.__import__
    monkeypatch.setattr(builtins, "__import__", lambda name, *args, **kwargs: (
        (_ for _ in ()).throw(ImportError(name)) if name == "arviz" else real_import(name, *args, **kwargs)))
    result = fit("bayes_regression", "auto_normal", data=cubic_arrays(100), steps=5, progress=False)
    with pytest.raises(ZooError, match=r"ArviZ export needs arviz: pip install arviz \(or the extra, pip install 'pyro_vi_zoo\[arviz\]'\)"):
        result.to_inference_data(10)


@pytest.mark.parametrize("argv0, program", [("/venv/bin/pyro-vi-zoo", "pyro-vi-zoo"),
                                            ("/repo/pyro_vi_zoo/fit.py", "python -m pyro_vi_zoo.fit")])
def test_usage_names_the_command_the_user_typed(argv0, program, monkeypatch):
    monkeypatch.setattr(sys, "argv", [argv0])
    assert build_parser().format_usage().startswith(f"usage: {program} ")


def test_a_fit_result_prints_in_one_line_without_its_data():
    import pyro_vi_zoo as zoo

    x = torch.linspace(-1.0, 1.0, 300)
    result = zoo.fit("bayes_regression", "mean_field", data=(x.unsqueeze(-1), 2 * x), steps=20, seed=0, progress=False,
                     device="cpu")
    text = repr(result)
    assert text.startswith("FitResult('bayes_regression', guide='mean_field', steps=20, final_loss=")
    assert "\n" not in text and "tensor" not in text and "device='cpu'" in text
