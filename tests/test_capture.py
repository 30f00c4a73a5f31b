"""Recording the SVI step as a CUDA graph: the choice and its refusals here; the recorded fits themselves
on a GPU (``pytest --device cuda``), against the exact posterior and the eager fit."""

import contextlib
import warnings

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from pyro_vi_zoo import FitSettings, fit
from pyro_vi_zoo.cli import main
from pyro_vi_zoo.data.regression import cubic_arrays
from pyro_vi_zoo.engine import resolve_settings
from pyro_vi_zoo.engine.capture import WARMUP_STEPS, CaptureFallback, GraphedUpdate, wants_capture
from pyro_vi_zoo.errors import ZooError

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_capture_on_without_cuda_exits_2_with_one_line(capsys, tmp_path):
    assert main(["bayes_regression", "--capture", "on", "--device", "cpu", "--fast", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "--capture on records the step as a CUDA graph, but this fit runs on cpu" in error
    assert not list(tmp_path.rglob("settings.json"))  # no run folder is left that holds nothing else


def test_auto_records_on_cuda_only_and_refuses_elbos_and_checks_that_read_back_to_the_host():
    assert not wants_capture("auto", torch.device("cpu"), "trace")
    assert wants_capture("auto", torch.device("cuda"), "trace") and wants_capture("on", torch.device("cuda:0"), "stl")
    assert not wants_capture("off", torch.device("cuda"), "trace")
    with pytest.warns(CaptureFallback, match="running eagerly: --elbo renyi reads values back to the host"):
        assert not wants_capture("auto", torch.device("cuda"), "renyi")
    with pytest.warns(CaptureFallback, match="running eagerly: --validate checks every distribution's arguments"):
        assert not wants_capture("auto", torch.device("cuda"), "trace", validate=True)
    with pytest.raises(ZooError, match="--capture on cannot record a step that --validate checks on the host"):
        wants_capture("on", torch.device("cuda"), "trace", validate=True)
    with pytest.raises(ZooError, match="unknown capture 'always'"):
        resolve_settings({}, FitSettings(capture="always"))


def test_the_command_line_says_why_a_step_runs_eagerly_in_one_line(capsys, tmp_path, monkeypatch):
    """A fallback (here forced: the CPU never records) is one ``note:`` line per reason, and the fit goes on."""
    def falls_back(*args, **kwargs):
        warnings.warn("running eagerly: a reason", CaptureFallback)
        return False

    monkeypatch.setattr("pyro_vi_zoo.engine.step.wants_capture", falls_back)
    assert main(["bayes_regression", "--guide", "mean_field", "--guide", "auto_normal", "--fast", "--no-progress",
                 "--device", "cpu", "--out", str(tmp_path)]) == 0
    error = capsys.readouterr().err
    assert error.splitlines().count("note: running eagerly: a reason") == 1, error
    assert "warnings.warn" not in error and "CaptureFallback" not in error


def test_a_step_that_may_be_recorded_takes_its_plate_rows_from_outside(monkeypatch):
    """On CUDA (forced here) a plate's minibatch is shuffled epochs of row indices, copied into the step's
    input before each step, not a random draw inside a step that would be recorded once."""
    from pyro_vi_zoo import runner

    records_on_cuda, calls = runner.records_on_cuda, []
    monkeypatch.setattr(runner, "fit_guide", lambda *args, **kwargs: calls.append(kwargs["batches"]))
    for on_cuda in (False, True):
        monkeypatch.setattr(runner, "records_on_cuda", lambda settings, dataset, on_cuda=on_cuda: on_cuda)
        fit("bnn_regression", "mean_field", data=cubic_arrays(500, seed=4), steps=10, batch_size=64, seed=0,
            progress=False, device="cpu")
    assert calls[0] is None  # the CPU: the plate draws its own rows
    batches = calls[1]
    args, kwargs = batches.make_batch(torch.arange(64))
    assert batches.batch_size == 64 and torch.equal(kwargs["subsample"], torch.arange(64)) and len(args) == 2
    on = lambda capture, device: records_on_cuda(resolve_settings({}, FitSettings(capture=capture)),
                                                 type("Data", (), {"device": torch.device(device)})())
    assert on("auto", "cuda") and on("on", "cuda:1") and not on("off", "cuda") and not on("auto", "cpu")


class FakeCuda:
    """Enough of ``torch.cuda`` for :class:`GraphedUpdate`'s bookkeeping on the CPU: streams do nothing, and a
    "recording" runs the step once, as a real one would not; replays are counted."""

    replays = 0

    class Stream:
        def wait_stream(self, other):
            pass

    class CUDAGraph:
        def replay(self):
            FakeCuda.replays += 1

    stream = staticmethod(lambda stream: contextlib.nullcontext())
    graph = staticmethod(lambda graph: contextlib.nullcontext())
    current_stream = staticmethod(lambda: FakeCuda.Stream())


@pytest.mark.parametrize("traffic", [None, "copy", "read"])
def test_the_graphed_update_warms_up_looks_for_host_traffic_then_records_once(traffic, monkeypatch):
    monkeypatch.setattr(torch, "cuda", FakeCuda)
    monkeypatch.setattr(FakeCuda, "replays", 0)
    calls = []

    def update():
        calls.append(1)
        if traffic == "copy":  # meta stands in for the GPU: the recorder skips CPU tensors
            torch.tensor(2.0, device="meta")
        elif traffic == "read":
            print(torch.zeros(2, device="meta"))
        return torch.tensor(float(len(calls)))

    graphed = GraphedUpdate(update)
    assert [float(graphed()) for _ in range(WARMUP_STEPS)] == [1.0, 2.0, 3.0] and graphed.graph is None
    if traffic == "copy":
        assert graphed.refused.startswith("the step copies a number from the host at every step, tensor(2.0) in ")
    if traffic == "read":
        assert graphed.refused.startswith("the step reads a value back to the host at every step, __repr__() in ")
        assert "print(torch.zeros(2" in graphed.refused
    if traffic:
        assert "test_capture.py" in graphed.refused
        return
    assert graphed.refused is None
    assert float(graphed()) == 4.0 and graphed.graph is not None and FakeCuda.replays == 1  # recorded, replayed
    assert graphed() is graphed.static_loss and len(calls) == 4 and FakeCuda.replays == 2  # replays only


def test_auto_on_the_cpu_fits_eagerly_without_a_warning(device):
    if device != "cpu":
        pytest.skip("the CPU path")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaptureFallback)
        result = fit("bayes_regression", "mean_field", data=cubic_arrays(200), steps=20, progress=False, device="cpu")
    assert np.isfinite(result.losses).all()


@needs_cuda
@pytest.mark.parametrize("guide", ["mean_field", "auto_normal"])
def test_a_captured_fit_reaches_what_the_eager_fit_reaches(guide):
    common = dict(data=cubic_arrays(2000, seed=4), steps=1500, lr=0.05, seed=0, progress=False, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error", CaptureFallback)
        captured = fit("bayes_regression", guide, capture="on", **common)
    eager = fit("bayes_regression", guide, capture="off", **common)
    assert np.isfinite(captured.losses).all()
    assert captured.losses[-100:].mean() == pytest.approx(eager.losses[-100:].mean(), rel=0.02)
    for name, value in captured.sample_posterior(2000).items():
        reference = eager.sample_posterior(2000)[name]
        assert torch.allclose(value.mean(0), reference.mean(0), atol=0.05), name


@needs_cuda
def test_a_captured_minibatch_fit_refills_its_inputs():
    result = fit("bnn_regression", "mean_field", data=cubic_arrays(2000, seed=4), steps=300, batch_size=128,
                 seed=0, progress=False, device="cuda", capture="on")
    assert np.isfinite(result.losses).all() and result.losses[-30:].mean() < result.losses[:30].mean()


def copies_a_number_each_step(x, y=None):
    """A user's model with a Python number in a distribution: torch makes tensor(0.5) on x's device each call."""
    weight = pyro.sample("weight", dist.Normal(x.new_zeros(()), 1.0))
    with pyro.plate("data", x.shape[0], device=x.device):
        pyro.sample("y", dist.Normal(weight * x, 0.5), obs=y)


@needs_cuda
def test_a_model_that_copies_from_the_host_runs_eagerly_and_names_its_line():
    x = torch.linspace(-1, 1, 50)
    with pytest.warns(CaptureFallback, match=r"copies a number from the host at every step, tensor\((1\.0|0\.5)\) in "
                                             r".*test_capture\.py"):
        result = fit(copies_a_number_each_step, "auto_normal", data=(x, 2 * x), steps=50, seed=0, progress=False,
                     device="cuda", capture="on")
    assert np.isfinite(result.losses).all()


def reads_a_value_each_step(x, y=None):
    """A user's model that branches on a tensor: its value is read back to the host at every call."""
    weight = pyro.sample("weight", dist.Normal(x.new_zeros(()), x.new_ones(())))
    sign = 1.0 if weight > 0 else -1.0
    with pyro.plate("data", x.shape[0], device=x.device):
        pyro.sample("y", dist.Normal(sign * weight * x, x.new_full((), 0.5)), obs=y)


@needs_cuda
def test_a_model_that_reads_back_to_the_host_runs_eagerly_and_names_its_line():
    x = torch.linspace(-1, 1, 50, device="cuda")
    with pytest.warns(CaptureFallback, match=r"reads a value back to the host at every step, __bool__\(\) in "
                                             r".*test_capture\.py"):
        result = fit(reads_a_value_each_step, "auto_normal", data=(x, 2 * x), steps=50, seed=0, progress=False,
                     device="cuda", capture="on")
    assert np.isfinite(result.losses).all()
