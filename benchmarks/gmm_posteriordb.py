"""Distances of every gmm guide's posterior to posteriordb's reference draws of low_dim_gauss_mix.

Fits each guide to the whole data set (N = 1000 values, two components, Stan's
priors, ordered locations) and prints the runner's reference distances against
the 10 000 reference draws (Magnusson et al. 2023): marginal Wasserstein-1 and
mean error in reference sds, sd ratio, largest correlation error; and the ELBO
and PSIS k (Yao et al. 2018). Run::

    python benchmarks/gmm_posteriordb.py /path/to/low_dim_gauss_mix-low_dim_gauss_mix [--out runs] [--seed 0]
"""

import argparse
import sys

import pandas as pd
import torch

import pyro_vi_zoo as zoo

COLUMNS = ["guide", "status", "elbo", "pareto_k", "w1_sd", "mean_error_sd", "std_ratio", "corr_error", "wall_time_s"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("data_dir", help="the posteriordb folder holding data.json.zip and reference_draws.json.zip")
    parser.add_argument("--out", default=None, help="also write the run folder (table, figures) here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="SVI steps per guide (default: the model's)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = {} if args.steps is None else {"steps": args.steps}
    result = zoo.compare("gmm", guides="all", data="posteriordb:" + args.data_dir, out=args.out, seed=args.seed,
                         device=args.device, progress=False, **overrides)
    pd.set_option("display.width", 200)
    print(f"gmm on {result.dataset.name}: N = {result.dataset.num_train}, "
          f"{len(next(iter(result.reference.samples.values())))} reference draws")
    print(result.table[[c for c in COLUMNS if c in result.table]].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    if result.run_dir is not None:
        print(f"results: {result.run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
