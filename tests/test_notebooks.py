"""Every notebook runs top to bottom in its fast mode (PYRO_VI_ZOO_FAST=1) and shows its figures; the
committed copies carry their outputs (re-made by ``python notebooks/execute.py``)."""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"
FIGURES = {"bayes_regression.ipynb": 4, "bnn_regression.ipynb": 2, "gmm.ipynb": 2, "estimators.ipynb": 3, "vae.ipynb": 4, "autorec.ipynb": 3}
ALL = sorted([*FIGURES, "kl_directions.ipynb"])  # test_kl_directions.py executes the last


def outputs(notebook):
    return [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]


@pytest.mark.parametrize("name", sorted(FIGURES))
def test_notebook_executes_in_fast_mode(name, monkeypatch, cache):
    monkeypatch.setenv("PYRO_VI_ZOO_FAST", "1")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    shown = outputs(notebook)
    assert not [output for output in shown if output.get("output_type") == "error"]
    assert len([output for output in shown if "image/png" in output.get("data", {})]) >= FIGURES[name]


def test_every_notebook_is_executed_here():
    """The notebooks folder sits beside the tests (a checkout, or the sdist), and none is left out of them."""
    assert sorted(path.name for path in NOTEBOOKS.glob("*.ipynb")) == ALL, \
        f"no notebooks in {NOTEBOOKS}, or one is missing from FIGURES"


@pytest.mark.parametrize("name", ALL)
def test_committed_notebooks_carry_their_outputs(name):
    path = NOTEBOOKS / name
    notebook = nbformat.read(path, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code" and cell.source.strip()]
    assert code and all(cell.get("execution_count") for cell in code), \
        f"{path.name} has cells that were not run: python notebooks/execute.py {path.name}"
    assert any("image/png" in output.get("data", {}) for output in outputs(notebook)), f"{path.name} shows no figure"
