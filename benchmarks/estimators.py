"""Gradient estimators compared: variance at the same parameters, and the fit each one gives.

For Bayesian linear regression (400 points of the cubic data, known noise: exact posterior) and the BNN
(1 000 points), each estimator — score function (REINFORCE), Trace_ELBO's reparameterised gradient, the
mean-field ELBO with analytic KL, sticking the landing — is measured twice: the total variance and median
SNR of its per-draw gradient at one fitted guide (a Trace_ELBO fit, so all see the same parameters), and a
fit from scratch with that estimator, scored by KL to the exact posterior (regression) or ELBO and held-out
log density (BNN). With --vae, the VAE's encoder trained with IWAE (k = 50) against DReG (k = 50): test NLL.

    python benchmarks/estimators.py [--steps 2000] [--draws 200] [--vae] [--vae-epochs 10]
"""

import argparse
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ESTIMATORS = ("score", "trace", "meanfield", "stl")
KNOWN = {"noise": "known"}  # the noise at its least-squares estimate: an exact Gaussian posterior to compare with


def regression_rows(args):
    import pyro_vi_zoo as zoo
    from pyro_vi_zoo.data.regression import cubic_arrays
    from pyro_vi_zoo.demos.estimators import variance_table

    rows = []
    for family, guide, data, fit_options in (
        ("bayes_regression", "mean_field", cubic_arrays(400, seed=3), dict(lr=0.05, lr_decay=0.002, model_options=KNOWN)),
        ("bayes_regression", "auto_mvn", cubic_arrays(400, seed=3), dict(lr=0.05, lr_decay=0.002, model_options=KNOWN)),
        ("bnn_regression", "mean_field", cubic_arrays(1000, seed=3), dict(lr=0.01, lr_decay=0.1)),
    ):
        common = dict(data=data, steps=args.steps, seed=0, progress=False, num_particles=1, **fit_options)
        anchor = zoo.fit(family, guide, **common)
        variances = variance_table(anchor, ESTIMATORS, args.draws).set_index("estimator")
        for estimator in ESTIMATORS:
            start = time.perf_counter()
            table = zoo.compare(family, [guide], elbo=estimator, draw_figures=False, num_elbo_particles=500, **common).table
            row = table.iloc[0].to_dict()
            rows.append({"model": family, "guide": guide, "estimator": estimator,
                         **variances.loc[estimator].to_dict(),
                         "final_elbo": row.get("elbo"), "kl_to_exact": row.get("kl_to_exact"),
                         "test_lpd": row.get("test_lpd"), "status": row["status"],
                         "seconds": time.perf_counter() - start})
            print(f"  {family}/{guide}/{estimator}: {rows[-1]['seconds']:.0f} s", file=sys.stderr, flush=True)
    return pd.DataFrame(rows)


def vae_rows(args):
    """The encoder trained with IWAE's and with DReG's gradient of the k = 50 bound: test NLL ± its standard error
    over test images, and the paired difference (the same images, log-likelihoods estimated again per image)."""
    import pyro_vi_zoo as zoo
    from pyro_vi_zoo.scoring.local_latents import local_bounds

    rows, per_image = [], {}
    for name, elbo in (("iwae_50", "iwae"), ("dreg_50", "iwae_dreg")):
        comparison = zoo.compare("vae", ["mean_field"], elbo=elbo, num_particles=50, epochs=args.vae_epochs, seed=0,
                                 progress=False, draw_figures=False, num_is_samples=args.is_samples)
        row = comparison.table.iloc[0].to_dict()
        rows.append({"estimator": name, **{k: row.get(k) for k in ("test_nll", "test_log_likelihood_se", "test_elbo",
                                                                    "wall_time_s")}})
        fit = comparison.fits["mean_field"]
        with fit.activate(), torch.no_grad():
            per_image[name] = local_bounds(fit.score_model, fit.guide, (comparison.dataset.test[0],),
                                           args.is_samples).log_likelihood.double().cpu()
    difference = per_image["iwae_50"] - per_image["dreg_50"]  # NLL(DReG) - NLL(IWAE), per image
    print(f"paired: DReG's test NLL minus IWAE's {float(difference.mean()):+.2f} ± "
          f"{float(difference.std() / len(difference) ** 0.5):.2f} nats over {len(difference)} test images")
    return pd.DataFrame(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=2000, help="SVI steps per fit")
    parser.add_argument("--draws", type=int, default=200, help="gradient draws for the variance")
    parser.add_argument("--vae", action="store_true", help="also IWAE against DReG on the VAE (synthetic images)")
    parser.add_argument("--vae-epochs", type=int, default=10)
    parser.add_argument("--is-samples", type=int, default=1000)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    pd.set_option("display.width", 200)
    table = regression_rows(args)
    print(table.drop(columns=["status"]).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if args.vae:
        print(vae_rows(args).to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
