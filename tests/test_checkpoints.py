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
    resumed_calls = []
    monkeypatch.setattr(SVIStep, "__call__", lambda self: (resumed_calls.append(1), real_call(self))[1])

    resumed = zoo.compare(family, out=tmp_path / "stopped", resume=run_dir, **SETTINGS)
    assert len(resumed_calls) == 6 * 4 - 3 * 4  # it continued after the third epoch's checkpoint
    assert not resumed.interrupted and list(resumed.table["guide"]) == ["encoder"]
    np.testing.assert_array_equal(resumed.fits["encoder"].losses, whole.fits["encoder"].losses)
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
