"""The guide-comparison notebook runs top to bottom in its fast mode (PYRO_VI_ZOO_FAST=1)."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).parent.parent / "notebooks"


def test_bayes_regression_notebook_executes(monkeypatch, cache):
    monkeypatch.setenv("PYRO_VI_ZOO_FAST", "1")
    notebook = nbformat.read(NOTEBOOKS / "bayes_regression.ipynb", as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [output for output in outputs if output.get("output_type") == "error"]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 3  # marginals, predictive band, ELBO traces
