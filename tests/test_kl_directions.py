"""Forward vs reverse KL: the fits, the Monte Carlo estimators, the figure, and the notebook."""

import math
import os

import numpy as np
import pytest
import torch
import pyro.distributions as dist

from pyro_vi_zoo.demos import kl_directions as kl
from pyro_vi_zoo.runs import save_figure

NOTEBOOK = os.path.join(os.path.dirname(__file__), os.pardir, "notebooks", "kl_directions.ipynb")
COMPONENT_MEANS = np.array([[0.0, 0.0], [1.0, 1.0]])
COMPONENT_VARIANCES = np.array([[0.25**2, 0.5**2], [0.25**2, 0.25**2]])


@pytest.fixture(scope="module")
def fits():
    return kl.kl_directions_experiment(fast=True, seed=0)


def test_reverse_kl_fits_end_at_different_modes(fits):
    nearest = []
    for name in ("reverse_from_lower_left", "reverse_from_upper_right"):
        distances = np.linalg.norm(COMPONENT_MEANS - fits[name].mean, axis=1)
        assert distances.min() < 0.15, (name, fits[name].mean)
        nearest.append(int(distances.argmin()))
    assert sorted(nearest) == [0, 1]


def test_reverse_kl_fit_pays_about_log_two_for_the_ignored_mode(fits):
    for name in ("reverse_from_lower_left", "reverse_from_upper_right"):
        estimate, error = fits[name].kl["reverse"]
        assert 0.55 < estimate < math.log(2) + 4 * error
        assert fits[name].kl["forward"][0] > 2.0


def test_forward_kl_fit_covers_both_modes(fits):
    forward = fits["forward"]
    assert np.all(forward.mean > 0.3) and np.all(forward.mean < 0.7)
    variances = np.diag(forward.covariance)
    assert np.all(variances > COMPONENT_VARIANCES.max(0))
    exact = kl.moment_matched_gaussian(kl.mixture_target(), covariance="diagonal")
    assert forward.mean == pytest.approx(exact.loc.numpy(), abs=0.05)
    assert variances == pytest.approx(exact.covariance_matrix.diag().numpy(), rel=0.1)
    assert forward.kl["forward"][0] < min(fits[name].kl["forward"][0] for name in fits if name != "forward")


def test_moment_matched_gaussian_of_the_default_mixture():
    exact = kl.moment_matched_gaussian(kl.mixture_target())
    expected = np.array([[0.3125, 0.25], [0.25, 0.40625]])
    assert exact.loc.numpy() == pytest.approx([0.5, 0.5])
    assert exact.covariance_matrix.numpy() == pytest.approx(expected)


def test_monte_carlo_kl_estimators_agree_with_the_closed_form():
    p = dist.MultivariateNormal(torch.tensor([0.0, 1.0]), torch.tensor([[1.0, 0.3], [0.3, 0.5]]))
    q = dist.MultivariateNormal(torch.tensor([0.5, 0.0]), torch.tensor([[0.7, 0.0], [0.0, 1.2]]))
    reverse, reverse_error = kl.reverse_kl_estimate(q, p.log_prob, num_samples=20000)
    forward, forward_error = kl.forward_kl_estimate(p, q, num_samples=20000)
    assert 0 < reverse_error < 0.05 and 0 < forward_error < 0.05
    assert reverse == pytest.approx(torch.distributions.kl_divergence(q, p).item(), abs=4 * reverse_error)
    assert forward == pytest.approx(torch.distributions.kl_divergence(p, q).item(), abs=4 * forward_error)
    assert forward != pytest.approx(reverse, abs=0.1)


def test_figure_has_a_panel_per_fit_and_saves_as_png(fits, tmp_path):
    figure = kl.plot_kl_directions(kl.mixture_target(), fits, grid_size=40)
    assert len(figure.axes) == 3
    assert "KL(q||p)" in figure.axes[0].get_title()
    path = save_figure(figure, tmp_path / "figures" / "kl.png")
    with open(path, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"
    assert kl.figure_png(figure).startswith(b"\x89PNG")


def test_fast_mode_reads_the_environment(monkeypatch):
    monkeypatch.setenv(kl.FAST_ENV, "1")
    assert kl.fast_mode()
    monkeypatch.setenv(kl.FAST_ENV, "0")
    assert not kl.fast_mode()
    monkeypatch.delenv(kl.FAST_ENV)
    assert not kl.fast_mode()


def test_unknown_covariance_is_an_error():
    with pytest.raises(kl.ZooError, match="covariance must be one of"):
        kl.fit_reverse_kl(kl.mixture_target(), (0.0, 0.0), covariance="banded")


def test_notebook_runs_in_fast_mode(monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv(kl.FAST_ENV, "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(notebook, kernel_name="python3", timeout=300,
                                     resources={"metadata": {"path": os.path.dirname(NOTEBOOK)}})
    client.execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    assert sum("image/png" in output.get("data", {}) for output in outputs) == 2
    printed = "".join(output.get("text", "") for output in outputs)
    assert "reverse_from_lower_left" in printed and "fast mode: True" in printed
