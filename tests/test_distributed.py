"""Data-parallel SVI: two gloo processes launched by torchrun fit what one process fits.

The multi-process tests run the real command line under ``torchrun --standalone`` on the CPU (a few
seconds each); the sharding itself is checked in-process with a stand-in for the process group.
"""

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pyro_vi_zoo.cli import main
from pyro_vi_zoo.engine import distributed
from pyro_vi_zoo.engine.batches import EpochBatches
from pyro_vi_zoo.engine.step import SVIStep
from pyro_vi_zoo.errors import ZooError

AUTOREC = ["autorec", "--fast", "--guide", "auto_delta", "--hidden", "8", "--no-progress", "--device", "cpu",
           "--eval-samples", "10"]


class SharedOrder(distributed.World):
    """A replica whose 'broadcast' keeps its own tensor: with the same seed every replica draws rank 0's order."""

    def broadcast(self, tensor):
        return tensor


def torchrun(argv, processes=2, timeout=240, module=True):
    """Run ``python -m pyro_vi_zoo.fit argv`` (or a script) under torchrun with ``processes`` gloo workers."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    command += (["-m", "pyro_vi_zoo.fit"] if module else []) + [str(part) for part in argv]
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)


def cli(argv):
    """The command line in this process (one replica)."""
    return main([str(part) for part in argv])


def only_run(out: Path, model: str) -> Path:
    (run_dir,) = (out / model).iterdir()
    return run_dir


def assert_same_parameters(got, expected, rtol=1e-5, atol=1e-6):
    assert set(got) == set(expected)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


# ----------------------------------------------------------------------------------------------- in one process


def test_replicas_share_each_global_batch_between_them():
    def make_batch(rows):
        return (rows,), {}

    whole = EpochBatches(make_batch, 20, 8, torch.device("cpu")).feeder()
    shares = [EpochBatches(make_batch, 20, 8, torch.device("cpu"), SharedOrder(rank, 2)).feeder() for rank in (0, 1)]
    for step in range(5):  # two batches per epoch: a new order at steps 0, 2, 4
        torch.manual_seed(step // 2)
        (expected,), _ = whole.batch(step)
        got = []
        for feeder in shares:
            torch.manual_seed(step // 2)
            (rows,), _ = feeder.batch(step)
            assert len(rows) == 4
            got.append(rows)
        assert torch.equal(torch.cat(got), expected)


@pytest.mark.parametrize("model_name", ["bayes_regression", "bnn_regression", "gmm"])
def test_regression_and_mixture_plates_take_rows_chosen_outside(model_name, device):
    """``subsample=`` indices reach the data plate: those rows are observed, scaled by n / their number."""
    import pyro

    from pyro_vi_zoo.registry import get_family

    family = get_family(model_name)
    dataset = family.load_data(None).to(device)
    setup = family.setup(dataset)
    rows = torch.tensor([5, 0, 3, 17], device=device)
    trace = pyro.poutine.trace(setup.model).get_trace(*dataset.train, **{setup.subsample_keyword: rows})
    (site,) = [s for s in trace.nodes.values() if s["type"] == "sample" and s["is_observed"]]
    observed = dataset.train[-1] if model_name != "gmm" else dataset.train[0]
    assert torch.equal(site["value"], observed[rows])
    assert site["scale"] == pytest.approx(dataset.num_train / 4)
    guide = setup.guides["mean_field"]()
    pyro.poutine.trace(guide).get_trace(*dataset.train, **{setup.subsample_keyword: rows})  # guides take it too


def test_a_batch_copies_what_changed_and_leaves_the_whole_data_set_alone():
    from pyro_vi_zoo.engine.batches import copy_into, snapshot

    data, rows = torch.arange(6.0), torch.tensor([0, 1])
    first = snapshot((data, rows))
    buffers = (data.clone(), rows.clone())
    buffers[0].fill_(-1.0)  # were the data copied, this would be overwritten
    copy_into(buffers, (data, torch.tensor([4, 5])), first=first)
    assert torch.equal(buffers[1], torch.tensor([4, 5])) and (buffers[0] == -1).all()
    copy_into(buffers, (data, torch.tensor([2, 3])))  # without the first batch, everything is copied
    assert torch.equal(buffers[0], data) and torch.equal(buffers[1], torch.tensor([2, 3]))


def test_a_batch_refilled_in_place_is_copied_and_one_of_another_shape_is_refused():
    """A ``make_batch`` that refills one tensor and returns it each time passes the same object with new values:
    copied all the same. A batch of another shape would broadcast silently into the step's inputs."""
    from pyro_vi_zoo.engine.batches import copy_into, snapshot

    reused = torch.zeros(2, 3)
    first = snapshot((reused,))
    buffers = (reused.clone(),)
    reused.fill_(7.0)  # the next batch, in the same tensor
    copy_into(buffers, (reused,), first=first)
    assert (buffers[0] == 7.0).all()
    with pytest.raises(ZooError, match=r"a batch's argument 0 is \(1, 3\), where the first batch's was \(2, 3\); "
                                       "batches must keep their shapes"):
        copy_into(buffers, (torch.ones(1, 3),))


def test_a_global_batch_that_does_not_split_evenly_is_one_clear_error():
    with pytest.raises(ZooError, match="does not split evenly over 3 processes; use a --batch-size that is a multiple"):
        EpochBatches(lambda rows: ((rows,), {}), 100, 32, torch.device("cpu"), SharedOrder(0, 3))


def test_one_process_is_one_replica_and_joins_no_group(monkeypatch):
    for name in distributed.TORCHRUN_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert distributed.world() == distributed.World(0, 1) and distributed.world().is_main
    assert not distributed.launched_by_torchrun()
    assert distributed.launch(torch.device("cpu")) == torch.device("cpu")
    tensors = [torch.arange(3.0)]
    distributed.World().average(tensors)
    assert torch.equal(tensors[0], torch.arange(3.0))


def test_rank_seeds_differ_by_rank_and_repeat_by_seed():
    seeds = [distributed.rank_seed(0, rank) for rank in range(8)]
    assert len(set(seeds)) == 8 and seeds == [distributed.rank_seed(0, rank) for rank in range(8)]
    assert distributed.rank_seed(0, 1) != distributed.rank_seed(1, 1) != distributed.rank_seed(1, 1, salt=5)


def test_capture_on_refuses_a_data_parallel_step():
    from pyro_vi_zoo.engine.capture import wants_capture

    assert not wants_capture("auto", torch.device("cpu"), "trace", replicas=2)
    if torch.cuda.is_available():
        with pytest.raises(ZooError, match="does not apply to a data-parallel fit"):
            wants_capture("on", torch.device("cuda"), "trace", replicas=2)


# ----------------------------------------------------------------------------------------------- under torchrun


def test_two_processes_take_the_steps_one_process_takes(tmp_path):
    """A deterministic guide (MAP) trained by epochs: the same global batches give the same parameters."""
    assert cli(AUTOREC + ["--out", tmp_path / "one"]) == 0
    launched = torchrun(AUTOREC + ["--out", tmp_path / "two"])
    assert launched.returncode == 0, launched.stderr[-3000:]
    one, two = only_run(tmp_path / "one", "autorec"), only_run(tmp_path / "two", "autorec")
    assert_same_parameters(torch.load(two / "parameters" / "auto_delta.pt"),
                           torch.load(one / "parameters" / "auto_delta.pt"))
    assert launched.stdout.count("results: ") == 1 and launched.stdout.count("auto_delta") == 1  # rank 0 prints
    table = pd.read_csv(two / "results.csv")
    assert table["processes"].tolist() == [2] and pd.read_csv(one / "results.csv")["processes"].tolist() == [1]
    assert not (two / "checkpoints" / "auto_delta.pt").exists()


def test_a_stochastic_guide_on_two_processes_reaches_the_one_process_answer(tmp_path):
    """Mean-field on linear regression by minibatches (each replica's plate takes its share of the global
    batch): both runs land on the same test score and ELBO, to about five and three times the spread seen
    across seeds of one process (0.002 nats, 1 nat)."""
    argv = ["bayes_regression", "--fast", "--steps", "1000", "--batch-size", "100", "--guide", "mean_field",
            "--no-progress", "--device", "cpu", "--eval-samples", "1000"]
    assert cli(argv + ["--out", tmp_path / "one"]) == 0
    launched = torchrun(argv + ["--out", tmp_path / "two"])
    assert launched.returncode == 0, launched.stderr[-3000:]
    one = pd.read_csv(only_run(tmp_path / "one", "bayes_regression") / "results.csv").iloc[0]
    two = pd.read_csv(only_run(tmp_path / "two", "bayes_regression") / "results.csv").iloc[0]
    assert two["test_lpd"] == pytest.approx(one["test_lpd"], abs=0.01)
    assert two["elbo"] == pytest.approx(one["elbo"], abs=3.0)
    assert two["kl_to_exact"] < 5 and two["mean_error_sd"] < 1  # where one process lands with any seed
    assert two["processes"] == 2 and two["batch_size"] == 100


def test_a_run_interrupted_on_one_process_resumes_on_two(tmp_path, monkeypatch, capsys):
    """The checkpoint holds the global batches' order: resumed on two processes, MAP ends where an
    uninterrupted single-process run ends."""
    argv = AUTOREC + ["--epochs", "4"]
    assert cli(argv + ["--out", tmp_path / "whole"]) == 0
    expected = torch.load(only_run(tmp_path / "whole", "autorec") / "parameters" / "auto_delta.pt")

    calls, real_call = [], SVIStep.__call__
    per_epoch = None

    def interrupted(self):
        nonlocal per_epoch
        per_epoch = per_epoch or self.feeder.batches.batches_per_epoch
        calls.append(1)
        if len(calls) == 2 * per_epoch + 1:  # one step into the third epoch
            raise KeyboardInterrupt
        return real_call(self)

    monkeypatch.setattr(SVIStep, "__call__", interrupted)
    assert cli(argv + ["--out", tmp_path / "stopped"]) == 130
    run_dir = only_run(tmp_path / "stopped", "autorec")
    assert (run_dir / "checkpoints" / "auto_delta.pt").exists()
    launched = torchrun(argv + ["--out", tmp_path / "stopped", "--resume", run_dir])
    assert launched.returncode == 0, launched.stderr[-3000:]
    assert_same_parameters(torch.load(run_dir / "parameters" / "auto_delta.pt"), expected)
    assert pd.read_csv(run_dir / "results.csv")["processes"].tolist() == [2]


PYTHON_API = """
import torch
import pyro_vi_zoo as zoo
from pyro_vi_zoo.engine import distributed
fit = zoo.fit("autorec", guide="mean_field", model_options={"hidden": 8}, fast=True, seed=1, device="cpu",
              progress=False)
total = sum(float(p.double().sum()) for p in fit.parameters().values())
print(f"rank {distributed.world().rank} of {distributed.world().size}: {total!r} {len(fit.losses)}", flush=True)
"""


def test_fit_from_python_joins_the_group_and_keeps_every_replica_identical(tmp_path):
    """A stochastic guide: each replica draws its own noise, yet the averaged steps keep the parameters equal."""
    script = tmp_path / "fit.py"
    script.write_text(PYTHON_API)
    launched = torchrun([script], module=False)
    assert launched.returncode == 0, launched.stderr[-3000:]
    # the two processes share one stdout, and their lines can interleave
    reports = sorted(re.findall(r"rank (\d) of 2: (\S+) (\d+)", launched.stdout))
    assert [rank for rank, _, _ in reports] == ["0", "1"]
    assert reports[0][1:] == reports[1][1:]


HANGING_REPLICA = """
import sys, time, torch
from pyro_vi_zoo.engine import distributed
distributed.launch(torch.device("cpu"), timeout_s=3)
world = distributed.world()
if world.rank == 1:
    time.sleep(20)  # a replica that hangs
    sys.exit(0)
start = time.perf_counter()
try:
    world.average([torch.ones(3)])
except distributed.DistributedError as error:
    print(f"waited {time.perf_counter() - start:.1f} s: {error}", flush=True)
    sys.exit(1)
"""


def test_a_hanging_replica_stops_the_others_with_a_clear_error_within_the_timeout(tmp_path):
    script = tmp_path / "hang.py"
    script.write_text(HANGING_REPLICA)
    start = time.perf_counter()
    launched = torchrun([script], module=False)
    assert launched.returncode != 0 and time.perf_counter() - start < 20  # torchrun stops the hanging rank too
    (line,) = [line for line in launched.stdout.splitlines() if line.startswith("waited")]
    waited = float(line.split()[1])
    assert 2.5 <= waited <= 10
    assert "rank 0: averaging gradients failed" in line and "another process probably died or hung" in line
    assert "--dist-timeout" in line


def test_two_gpus_take_the_steps_one_takes(tmp_path, device):
    if device == "cpu" or torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    argv = [a if a != "cpu" else "cuda" for a in AUTOREC]
    assert cli(argv + ["--out", tmp_path / "one"]) == 0
    launched = torchrun(argv + ["--out", tmp_path / "two"])
    assert launched.returncode == 0, launched.stderr[-3000:]
    got = torch.load(only_run(tmp_path / "two", "autorec") / "parameters" / "auto_delta.pt", map_location="cpu")
    expected = torch.load(only_run(tmp_path / "one", "autorec") / "parameters" / "auto_delta.pt", map_location="cpu")
    assert_same_parameters(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_equal(pd.read_csv(only_run(tmp_path / "two", "autorec") / "results.csv")["processes"], [2])
