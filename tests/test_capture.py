"""Recording the SVI step as a CUDA graph: the choice and its refusals here; the recorded fits themselves
on a GPU (``pytest --device cuda``), against the exact posterior and the eager fit."""

import contextlib
import importlib
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
from pyro_vi_zoo.engine.capture import WARMUP_STEPS, CaptureFallback, GraphedUpdate, RecordingFailed, wants_capture
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
    "recording" runs the step once, as a real one would not; replays are counted, and so are the streams made
    current and restored, the synchronisation checks asked for and the random states put back."""

    replays = 0
    events: list = []

    class Stream:
        def wait_stream(self, other):
            pass

    class CUDAGraph:
        def replay(self):
            FakeCuda.replays += 1

    class Generator:
        def clone_state(self):
            return "the state before recording"

        def graphsafe_set_state(self, state):
            FakeCuda.events.append(("random state", state))

    default_generators = [Generator()]
    current_stream = staticmethod(lambda: FakeCuda.Stream())
    device = staticmethod(lambda device: contextlib.nullcontext())
    graph_pool_handle = staticmethod(lambda: (0, 1))
    get_sync_debug_mode = staticmethod(lambda: 0)

    @staticmethod
    def set_sync_debug_mode(mode):
        FakeCuda.events.append(("sync debug", mode))

    @staticmethod
    @contextlib.contextmanager
    def stream(stream):
        FakeCuda.events.append("stream made current")
        try:
            yield
        finally:
            FakeCuda.events.append("stream restored")

    @staticmethod
    def graph(graph, pool=None, stream=None):
        return contextlib.nullcontext()


@pytest.fixture
def fake_cuda(monkeypatch):
    monkeypatch.setattr(torch, "cuda", FakeCuda)
    monkeypatch.setattr(FakeCuda, "replays", 0)
    monkeypatch.setattr(FakeCuda, "events", [])
    return FakeCuda


@pytest.mark.parametrize("traffic", [None, "copy", "read", "moves", "sync"])
def test_the_graphed_update_warms_up_looks_for_host_traffic_then_records_once(traffic, fake_cuda):
    calls = []

    def update():
        calls.append(1)
        if traffic == "copy":  # meta stands in for the GPU: the recorder skips CPU tensors
            torch.tensor(2.0, device="meta")
        elif traffic == "read":
            print(torch.zeros(2, device="meta"))
        elif traffic == "moves":
            torch.ones(3).to(torch.zeros((), device="meta").device)
        elif traffic == "sync" and len(calls) == WARMUP_STEPS:  # what torch says in sync debug mode "warn"
            warnings.warn_explicit("called a synchronizing CUDA operation", UserWarning, "model.py", 12)
        warnings.warn("a warning of the model's own", UserWarning)
        return torch.tensor(float(len(calls)))

    graphed = GraphedUpdate(update, torch.device("cuda"))
    with pytest.warns(UserWarning, match="a warning of the model's own"):  # passes through the sync check
        assert [float(graphed()) for _ in range(WARMUP_STEPS)] == [1.0, 2.0, 3.0] and graphed.graph is None
    assert [event for event in fake_cuda.events if event[0] == "sync debug"] == [("sync debug", "warn"),
                                                                                ("sync debug", 0)]
    if traffic == "copy":
        assert graphed.refused.startswith("the step copies a number from the host at every step, tensor(2.0) in ")
    if traffic == "read":
        assert graphed.refused.startswith("the step reads a value back to the host at every step, __repr__() in ")
        assert "print(torch.zeros(2" in graphed.refused
    if traffic == "moves":
        assert graphed.refused.startswith("the step copies a number from the host at every step, to() of a CPU tensor")
    if traffic == "sync":
        assert graphed.refused.startswith("the step synchronises with the host inside torch at every step, at ")
        assert "test_capture.py" in graphed.refused and "warnings.warn_explicit(" in graphed.refused  # the user's line
        assert "(torch.linalg.cholesky and inv check" in graphed.refused
        return
    if traffic:
        assert "test_capture.py" in graphed.refused
        return
    assert graphed.refused is None
    with pytest.warns(UserWarning):
        assert float(graphed()) == 4.0 and graphed.graph is not None and FakeCuda.replays == 1  # recorded, replayed
    assert graphed() is graphed.static_loss and len(calls) == 4 and FakeCuda.replays == 2  # replays only


def test_other_warnings_pass_the_synchronisation_check_even_when_the_step_fails(fake_cuda):
    from pyro_vi_zoo.engine.capture import synchronisations

    with pytest.warns(UserWarning, match="a warning of the model's own"), pytest.raises(ValueError):
        with synchronisations() as found:
            warnings.warn("a warning of the model's own", UserWarning)
            raise ValueError("the step failed")
    assert found == [] and fake_cuda.events[-1] == ("sync debug", 0)  # the debug mode is put back


def test_a_failed_recording_says_what_cuda_first_objected_to_and_puts_the_stream_and_random_state_back(
        fake_cuda, monkeypatch):
    """Ending a recording that failed raises a second, vaguer error from inside ``torch.cuda.graph`` and leaves
    its stream current; the step must report the first and go on eagerly on the stream it had."""

    class FailingGraph:
        def __enter__(self):
            FakeCuda.events.append("recording")

        def __exit__(self, *exc):  # what capture_end says after an illegal call
            raise RuntimeError("CUDA error: operation failed due to a previous error during capture")

    monkeypatch.setattr(FakeCuda, "graph", staticmethod(lambda graph, pool=None, stream=None: FailingGraph()))

    def update():
        if "recording" in FakeCuda.events:
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore detail")
        return torch.zeros(())

    graphed = GraphedUpdate(update, torch.device("cuda"))
    for _ in range(WARMUP_STEPS):
        graphed()
    FakeCuda.events.clear()
    with pytest.raises(RecordingFailed, match=r"^CUDA error: operation not permitted when stream is capturing$"):
        graphed()
    assert FakeCuda.events == ["stream made current", "recording", "stream restored",
                               ("random state", "the state before recording")]
    assert graphed.graph is None


@pytest.fixture
def recorded_on_the_cpu(monkeypatch):
    """SVIStep's recorded branch on the CPU: Adam's capturable path allowed there, ``wants_capture`` true, and
    the recording a stand-in that runs the step as :class:`GraphedUpdate` would (warm-ups with the host-traffic
    check, then the recorded update), or refuses, or fails, as told."""
    from pyro_vi_zoo.engine import step as step_module

    class StandIn:
        refuse, fail = None, None

        def __init__(self, update, device):
            self.update, self.graph, self.refused, self.calls = update, None, None, 0

        def __call__(self):
            self.calls += 1
            if self.calls == WARMUP_STEPS:
                self.refused = StandIn.refuse
            if self.calls == WARMUP_STEPS + 1 and StandIn.fail:
                raise RecordingFailed(StandIn.fail)
            return self.update()

    monkeypatch.setattr(importlib.import_module("torch.optim.adam"), "_get_capturable_supported_devices",
                        lambda supports_xla=True: ["cuda", "cpu"])
    monkeypatch.setattr(step_module, "wants_capture", lambda *args, **kwargs: True)
    monkeypatch.setattr(step_module, "GraphedUpdate", StandIn)
    return StandIn


def regression_step(seed=0, **options):
    from pyro_vi_zoo.engine import make_step
    from pyro_vi_zoo.registry import get_family
    from pyro_vi_zoo.runner import guide_choice

    family = get_family("bayes_regression")
    dataset = family.load_data(None)
    setup = family.setup(dataset)
    settings = resolve_settings(family.settings, FitSettings(**{**dict(steps=200, seed=seed, device="cpu", lr_decay=0.1,
                                                                       progress=False), **options}))
    pyro.set_rng_seed(seed)
    step = make_step(setup.model, guide_choice("mean_field", setup, family).build, dataset.train, settings,
                     max_plate_nesting=setup.max_plate_nesting)
    return step, settings


def run(step, steps, start=0, losses=None):
    from pyro_vi_zoo.engine import run_steps

    losses = torch.zeros(start + steps) if losses is None else losses
    run_steps(step, steps, losses, start)
    return losses


@pytest.mark.parametrize("optimizer", ["adam", "clipped_adam"])
@pytest.mark.parametrize("elbo", ["trace", "meanfield", "stl"])
def test_the_recorded_branch_of_the_step_takes_the_eager_steps(elbo, optimizer, device, request):
    """Capturable Adam with its learning rate a tensor decayed inside the step, and the recorded step's gradient
    bookkeeping, against the fused Adam and ExponentialLR of the eager step: the same losses to float tolerance."""
    if device != "cpu":
        pytest.skip("the stand-in runs the recorded branch on the CPU")
    eager, settings = regression_step(elbo=elbo, optimizer=optimizer)
    expected = run(eager, settings.steps)
    request.getfixturevalue("recorded_on_the_cpu")
    recorded, _ = regression_step(elbo=elbo, optimizer=optimizer)
    assert recorded.graphed is not None and recorded.optimizer.param_groups[0]["capturable"]
    losses = run(recorded, settings.steps)
    torch.testing.assert_close(losses, expected, rtol=1e-2, atol=0)
    lr = recorded.optimizer.param_groups[0]["lr"]
    assert isinstance(lr, torch.Tensor) and float(lr) == pytest.approx(settings.lr * settings.lr_decay, rel=1e-4)


@pytest.mark.parametrize("how", ["refused", "failed"])
def test_a_step_that_cannot_be_recorded_goes_on_eagerly_with_adams_state(how, recorded_on_the_cpu, device):
    if device != "cpu":
        pytest.skip("the stand-in runs the recorded branch on the CPU")
    recorded_on_the_cpu.refuse = "the step reads a value back" if how == "refused" else None
    recorded_on_the_cpu.fail = "operation not permitted when stream is capturing" if how == "failed" else None
    step, settings = regression_step()
    with pytest.warns(CaptureFallback, match="running eagerly: " + ("the step reads a value back" if how == "refused"
                                                                     else "recording the step as a CUDA graph failed "
                                                                          r"\(operation not permitted")):
        losses = run(step, settings.steps)
    assert step.graphed is None and not step.optimizer.param_groups[0]["capturable"]
    assert not isinstance(step.optimizer.param_groups[0]["lr"], torch.Tensor)
    monkeypatch = pytest.MonkeyPatch()
    with monkeypatch.context() as patch:
        patch.setattr("pyro_vi_zoo.engine.step.wants_capture", lambda *args, **kwargs: False)
        eager, _ = regression_step()
        expected = run(eager, settings.steps)
    # the refused step ran its warm-up recorded; the failed one lost no step: Adam's moments and the decayed
    # learning rate carried over, so the fit goes on as if nothing happened
    torch.testing.assert_close(losses, expected, rtol=1e-2, atol=0)
    assert step.optimizer.param_groups[0]["lr"] == pytest.approx(settings.lr * settings.lr_decay, rel=1e-4)


@pytest.mark.parametrize("direction", ["eager to recorded", "recorded to eager"])
def test_a_checkpoint_resumes_whether_or_not_either_step_is_recorded(direction, recorded_on_the_cpu, device,
                                                                     monkeypatch):
    """A checkpoint written on the CPU (eager) resumes on a GPU (recorded), and the other way round: Adam's
    state and the decayed learning rate carry over, and the resumed fit takes the uninterrupted one's steps."""
    from pyro_vi_zoo.engine.checkpoints import fit_state, load_fit_state

    if device != "cpu":
        pytest.skip("the stand-in runs the recorded branch on the CPU")
    import pyro_vi_zoo.engine.step as step_module

    record = {"eager to recorded": (False, True), "recorded to eager": (True, False)}[direction]
    wants = step_module.wants_capture
    steps = lambda recorded: regression_step() if recorded else _eager_step(monkeypatch, wants)
    first, settings = steps(record[0])
    losses = run(first, 100)
    state = {**fit_state(first), "optimizer": first.optimizer_state()}
    random_state = pyro.util.get_rng_state()
    losses = run(first, 100, start=100, losses=torch.cat([losses, torch.zeros(100)]))

    second, _ = steps(record[1])
    load_fit_state(second, state)
    second.load_optimizer_state(state["optimizer"])
    pyro.util.set_rng_state(random_state)
    resumed = run(second, 100, start=100, losses=torch.zeros(200))
    torch.testing.assert_close(resumed[100:], losses[100:], rtol=1e-2, atol=0)
    assert float(second.optimizer.param_groups[0]["lr"]) == pytest.approx(settings.lr * settings.lr_decay, rel=1e-4)


def _eager_step(monkeypatch, wants):
    with monkeypatch.context() as patch:
        patch.setattr("pyro_vi_zoo.engine.step.wants_capture", lambda *args, **kwargs: False)
        return regression_step()


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


def synchronises_each_step(x, y=None):
    """A user's model that waits for the device at every call: torch's sync debug mode does not see it, and
    recording it fails."""
    torch.cuda.synchronize()
    weight = pyro.sample("weight", dist.Normal(x.new_zeros(()), x.new_ones(())))
    with pyro.plate("data", x.shape[0], device=x.device):
        pyro.sample("y", dist.Normal(weight * x, x.new_full((), 0.5)), obs=y)


@needs_cuda
def test_a_recording_that_fails_falls_back_and_leaves_the_device_usable():
    x = torch.linspace(-1, 1, 50, device="cuda")
    with pytest.warns(CaptureFallback, match=r"running eagerly: recording the step as a CUDA graph failed \("):
        result = fit(synchronises_each_step, "auto_normal", data=(x, 2 * x), steps=50, seed=0, progress=False,
                     device="cuda", capture="on")
    assert np.isfinite(result.losses).all()
    assert torch.randn(3, device="cuda").isfinite().all()  # the generator left its recording state
    assert torch.cuda.current_stream() == torch.cuda.default_stream()  # the recording's stream is no longer current


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
