"""An interrupted run resumes where it stopped and ends where an uninterrupted one ends (CPU, same seed)."""

import numpy as np
import pandas as pd
import pytest
import torch

import pyro_vi_zoo as zoo
from pyro_vi_zoo.engine.step import SVIStep
from pyro_vi_zoo.errors import ZooError
from test_local_latents import ppca_family, problem  # noqa: F401  (the fixture)

SETTINGS = dict(epochs=6, seed=3, progress=False, draw_figures=False, num_is_samples=20)


def only_run(out):
    (run_dir,) = (out / "ppca").iterdir()
    return run_dir


def test_a_resumed_fit_takes_the_steps_an_uninterrupted_fit_takes(problem, tmp_path, monkeypatch, device):
    if device != "cpu":
        pytest.skip("bitwise equality is a CPU property")
    weight, bias, x, _ = problem
    family = ppca_family(weight, bias, x)
    whole = zoo.compare(family, out=tmp_path / "whole", **SETTINGS)
    expected = torch.load(only_run(tmp_path / "whole") / "parameters" / "encoder.pt")

    calls, real_call = [], SVIStep.__call__

    def interrupted(self):
        calls.append(1)
        if len(calls) == 4 * 3 + 2:  # two steps into the fourth epoch of four batches
            raise KeyboardInterrupt
        return real_call(self)

    monkeypatch.setattr(SVIStep, "__call__", interrupted)
    stopped = zoo.compare(family, out=tmp_path / "stopped", **SETTINGS)
    assert stopped.interrupted and stopped.table.empty
    run_dir = only_run(tmp_path / "stopped")
    assert (run_dir / "checkpoints" / "encoder.pt").exists()
    earlier = torch.load(run_dir / "checkpoints" / "encoder.pt", weights_only=False)["wall_time"]
    resumed_calls = []
    monkeypatch.setattr(SVIStep, "__call__", lambda self: (resumed_calls.append(1), real_call(self))[1])

    resumed = zoo.compare(family, out=tmp_path / "stopped", resume=run_dir, **SETTINGS)
    assert len(resumed_calls) == 6 * 4 - 3 * 4  # it continued after the third epoch's checkpoint
    assert not resumed.interrupted and list(resumed.table["guide"]) == ["encoder"]
    np.testing.assert_array_equal(resumed.fits["encoder"].losses, whole.fits["encoder"].losses)
    assert earlier > 0 and resumed.fits["encoder"].wall_time > earlier  # the time before the checkpoint counts
    got = torch.load(run_dir / "parameters" / "encoder.pt")
    assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in expected)
    assert not (run_dir / "checkpoints" / "encoder.pt").exists()  # removed when the fit finished
    again = zoo.compare(family, resume=run_dir, **SETTINGS)  # nothing left to run: the finished row is kept
    assert list(again.table["guide"]) == ["encoder"] and not again.fits
    assert pd.read_csv(run_dir / "results.csv")["test_elbo"].iloc[0] == pytest.approx(
        whole.table["test_elbo"].iloc[0], abs=1.0)


def test_resuming_with_other_settings_or_a_non_run_folder_is_one_clear_line(problem, tmp_path):
    weight, bias, x, _ = problem
    family = ppca_family(weight, bias, x)
    zoo.compare(family, out=tmp_path, **{**SETTINGS, "epochs": 1})
    run_dir = only_run(tmp_path)
    with pytest.raises(ZooError, match="was run with other settings; resume it with the same"):
        zoo.compare(family, resume=run_dir, **{**SETTINGS, "epochs": 2})
    with pytest.raises(ZooError, match="is not a run folder \\(no settings.json\\)"):
        zoo.compare(family, resume=tmp_path, **SETTINGS)


@pytest.mark.parametrize("damage, message", [
    (lambda run_dir: (run_dir / "settings.json").write_text('{"model": "pp'), "its settings.json cannot be read"),
    (lambda run_dir: (run_dir / "results.csv").write_text(""), "its results.csv cannot be read"),
    (lambda run_dir: (run_dir / "results.csv").write_text("a,b\n1,2\n"), r"its results.csv cannot be read \(KeyError"),
])
def test_resuming_a_damaged_run_folder_is_one_clear_line(problem, tmp_path, damage, message):
    weight, bias, x, _ = problem
    family = ppca_family(weight, bias, x)
    zoo.compare(family, out=tmp_path, **{**SETTINGS, "epochs": 1})
    run_dir = only_run(tmp_path)
    damage(run_dir)
    with pytest.raises(ZooError, match=message):
        zoo.compare(family, resume=run_dir, **{**SETTINGS, "epochs": 1})


def test_a_resumed_run_draws_its_figures_with_the_guides_finished_before(tmp_path, monkeypatch):
    """The rows finished before the interruption are rebuilt from ``fits/`` (no training) for the figures."""
    from pyro_vi_zoo import runner

    common = dict(guides=["mean_field", "auto_laplace", "auto_normal"], fast=True, seed=0, progress=False,
                  out=tmp_path)
    real, calls = runner.fit_choice, []

    def interrupted_on_third(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(runner, "fit_choice", interrupted_on_third)
    stopped = zoo.compare("bayes_regression", **common)
    assert stopped.interrupted and list(stopped.table["guide"]) == ["mean_field", "auto_laplace"]
    (run_dir,) = (tmp_path / "bayes_regression").iterdir()
    monkeypatch.setattr(runner, "fit_choice", real)
    resumed = zoo.compare("bayes_regression", resume=run_dir, **{k: v for k, v in common.items() if k != "out"})
    assert list(resumed.fits) == ["mean_field", "auto_laplace", "auto_normal"]
    assert list(resumed.draws) == list(resumed.fits) and set(resumed.figures) >= {"elbo_traces", "marginals"}
    for name in ("mean_field", "auto_laplace"):  # the same fit: its parameters (Laplace's after its finalize step)
        before, after = stopped.fits[name], resumed.fits[name]
        np.testing.assert_array_equal(after.losses, before.losses)
        assert after.wall_time == before.wall_time
        expected = before.parameters()
        assert expected and set(after.parameters()) == set(expected)
        assert all(torch.equal(value, expected[key]) for key, value in after.parameters().items())
