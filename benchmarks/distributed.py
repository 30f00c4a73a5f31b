"""Data-parallel throughput: examples per second of the VAE and AutoRec fits on 1..N processes under torchrun.

Each configuration is the real command line, ``torchrun --standalone --nproc-per-node P -m
pyro_vi_zoo.fit ...``, with the same global batch, so P processes do the work of one in 1/P of the
steps' examples each, plus one all-reduce of the gradients per step. On the CPU every process gets
one thread (``--threads 1``, ``OMP_NUM_THREADS=1``), so 2 processes use 2 cores where 1 uses one; on
CUDA one GPU per process. Throughput is ``steps_per_s × global batch`` from the run's table (the fit's
wall time, warm-up included; scoring excluded and kept small); scaling efficiency is
``throughput(P) / (P × throughput(1))``. The issue's aim: at least 80% from 1 to 2 processes.
On the CPU the table also gives the machine's own ceiling: P independent one-process fits run at the
same time (no communication at all) and their efficiency, since cores that share caches, memory
bandwidth or a hyperthreaded core cannot give P times one process's speed to anybody.

Usage (about 5 minutes on 2 CPU cores with MNIST and MovieLens-100K)::

    python benchmarks/distributed.py [--mnist-dir DIR] [--movielens-dir DIR] [--processes 1,2] [--device cpu]

Without data folders it fits the embedded synthetic images and generated ratings.
"""

import argparse
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Dict, List, Tuple

import pandas as pd


def configurations(args) -> Dict[str, Tuple[List[str], List[int]]]:
    """Each model's command line without its batch size and process count, and the global batches to try
    (small scoring budgets: the fit is what is timed)."""
    vae = ["vae", "--guide", "mean_field", "--epochs", str(args.vae_epochs), "--test-limit", "100",
           "--is-samples", "10", "--eval-samples", "10"]
    vae += (["--dataset", "mnist", "--data-dir", args.mnist_dir, "--train-limit", str(args.mnist_limit)]
            if args.mnist_dir else [])
    autorec = ["autorec", "--guide", "mean_field", "--epochs", str(args.autorec_epochs), "--eval-samples", "10"]
    autorec += ["--dataset", "movielens-100k", "--data-dir", args.movielens_dir] if args.movielens_dir else []
    return {"vae": (vae, widths(args.vae_batches)), "autorec": (autorec, widths(args.autorec_batches))}


def widths(text: str) -> List[int]:
    return [int(part) for part in text.split(",")]


def command(argv: List[str], processes: int, device: str, out: Path) -> List[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
            "-m", "pyro_vi_zoo.fit", *argv, "--device", device, "--threads", "1", "--no-progress",
            "--seed", "0", "--out", str(out)]


def run_all(commands: List[List[str]]) -> None:
    """Run the commands at the same time; stop on the first failure."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    running = [subprocess.Popen(c, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
               for c in commands]
    for process, line in zip(running, commands):
        _, err = process.communicate()
        if process.returncode != 0:
            raise SystemExit(f"{' '.join(line)} failed:\n{err[-3000:]}")


def throughput(out: Path, model: str) -> Tuple[float, pd.Series]:
    (run_dir,) = (out / model).iterdir()
    row = pd.read_csv(run_dir / "results.csv").iloc[0]
    return row["steps_per_s"] * row["batch_size"], row


def measure(args) -> pd.DataFrame:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        for model, (argv, batches) in configurations(args).items():
            for batch in batches:
                line = argv + ["--batch-size", str(batch)]
                alone = None
                for processes in args.processes:
                    out = folder / f"{model}-{batch}-{processes}"
                    run_all([command(line, processes, args.device, out)])
                    examples, row = throughput(out, model)
                    alone = examples if processes == 1 else alone
                    ceiling = math.nan
                    if processes > 1 and args.device == "cpu":
                        # the machine's own limit: as many independent one-process fits at once
                        outs = [folder / f"{model}-{batch}-copy{i}" for i in range(processes)]
                        run_all([command(line, 1, args.device, o) for o in outs])
                        ceiling = sum(throughput(o, model)[0] for o in outs) / (processes * alone)
                    rows.append({"model": model, "data": row["dataset"], "global_batch": batch,
                                 "processes": processes, "steps": row["steps"], "examples_per_s": examples,
                                 "speedup": examples / alone, "efficiency": examples / (processes * alone),
                                 "ceiling": ceiling})
                    print(f"{model}, batch {batch}, {processes} process(es): {examples:.0f} examples/s",
                          file=sys.stderr)
    table = pd.DataFrame(rows)
    table["of_ceiling"] = table["efficiency"] / table["ceiling"]
    return table


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", default="1,2", help="process counts, comma-separated; must include 1")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda (one GPU per process)")
    parser.add_argument("--mnist-dir", help="folder with MNIST's idx files (default: embedded synthetic images)")
    parser.add_argument("--mnist-limit", type=int, default=20000, help="MNIST training images used")
    parser.add_argument("--movielens-dir", help="folder with MovieLens-100K (default: generated ratings)")
    parser.add_argument("--vae-batches", default="100,1000", help="global batches of the VAE, comma-separated")
    parser.add_argument("--vae-epochs", type=int, default=1)
    parser.add_argument("--autorec-batches", default="32,256", help="global batches of AutoRec, comma-separated")
    parser.add_argument("--autorec-epochs", type=int, default=5)
    parser.add_argument("--out", help="also write the table to this CSV file")
    args = parser.parse_args()
    args.processes = sorted({int(p) for p in args.processes.split(",")})
    if 1 not in args.processes:
        parser.error("--processes must include 1 (the baseline of the efficiency)")
    table = measure(args)
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print("aim: efficiency >= 0.8 from 1 to 2 processes. ceiling: the efficiency of as many independent "
          "one-process fits run at once (what the machine allows); of_ceiling = efficiency / ceiling")
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
