"""MovieLens benchmark of the ``autorec`` family: test RMSE per row over standard splits, beside published anchors.

Protocol (the prior scale is never chosen on a test split):

1. Validation, on 10% of the *training* ratings of the first split (``validation_split``, seed 0):
   MAP (``auto_delta``, noise fixed at 1) for each weight decay ``lambda`` in ``--lambdas``; the
   lowest validation RMSE picks ``lambda*``, and that RMSE is the noise ``sigma`` (the Gaussian
   maximum-likelihood noise of MAP's held-out errors). The MAP row then uses ``sigma`` fixed and the
   prior scale ``s* = sigma sqrt(2 / lambda*)``: the paper's objective with ``lambda*``.
2. The Bayesian rows keep that sigma fixed (``--bayesian-noise learned`` gives sigma a HalfNormal(1)
   prior instead) and choose their weight prior scale from ``s* x --scale-factors`` on the same
   validation part (by validation RMSE); ``auto_normal`` takes ``mean_field``'s choice (the same
   variational family).
3. Test, on every split: each row fitted on the split's training ratings with the fit settings
   below, and scored on its test ratings (cold starts get the midpoint rating 3).

Every row is timed, beside a hand-written PyTorch AutoRec in the same process with the same
objective, optimiser, batches and epochs (no Pyro): ``time_per_epoch`` ratios against it say what
the PPL costs. Prints the mean ± standard error over splits of each row's scores and the anchors.

Usage (about 10 minutes on one CPU thread for MovieLens-100K u1..u5)::

    python benchmarks/autorec.py --data-dir /path/to/ml-100k [--ml1m-dir /path/to/ml-1m] [--out results.csv]
"""

import argparse
import math
import sys
import time
from typing import Dict, List, Sequence

import pandas as pd
import torch

from pyro_vi_zoo.data.ratings import RatingsDataset, load_ratings, validation_split
from pyro_vi_zoo.families.autorec import (
    BIAS_PRIOR_SCALE,
    FAMILY,
    held_out_ratings,
    item_mean_baseline,
    popularity_labels,
    prediction_scores,
    predictions_from_draws,
)
from pyro_vi_zoo.models.autorec import prior_scale_for_weight_decay
from pyro_vi_zoo.runner import compare

ANCHORS = (  # test RMSE as quoted in issue 11
    ("I-AutoRec, Sedhain et al. 2015 (paper)", "ML-1M, 90/10 random", 0.831),
    ("Surprise SVD", "ML-100K, 5-fold", 0.934),
    ("Cornac biased MF", "ML-100K, 80/20", 0.8998),
    ("GLocal-K, Han et al. 2021", "ML-100K", 0.8889),
)
BAYESIAN_ROWS = ("mean_field", "last_layer")
SHOWN = ("rmse", "mae", "test_lpd", "coverage_90", "width_90", "rmse_rarest", "time_per_epoch_s")


# ----------------------------------------------------------------------------------------------- the PyTorch floor


class TorchAutoRec(torch.nn.Module):
    """I-AutoRec in plain PyTorch: the same network and negative log joint as ``auto_delta`` with sigma fixed."""

    def __init__(self, num_columns: int, hidden: int, prior_scale: float, noise_scale: float, output_bias: float):
        super().__init__()
        self.encoder = torch.nn.Linear(num_columns, hidden)
        self.decoder = torch.nn.Linear(hidden, num_columns)
        torch.nn.init.constant_(self.decoder.bias, output_bias)
        self.prior_scale, self.noise_scale = prior_scale, noise_scale

    def forward(self, inputs):
        return self.decoder(torch.sigmoid(self.encoder(inputs)))

    def loss(self, inputs, mask, scale: float):
        squared_error = (self(inputs) - inputs).masked_fill(~mask, 0.0).pow(2).sum()
        weights = self.encoder.weight.pow(2).sum() + self.decoder.weight.pow(2).sum()
        biases = self.encoder.bias.pow(2).sum() + self.decoder.bias.pow(2).sum()
        return (scale * squared_error / (2 * self.noise_scale**2) + weights / (2 * self.prior_scale**2)
                + biases / (2 * BIAS_PRIOR_SCALE**2))


def torch_autorec(dataset: RatingsDataset, prior_scale: float, noise_scale: float, settings: Dict) -> Dict:
    """Train :class:`TorchAutoRec` by shuffled epochs (last partial batch dropped, as the engine does) and score it."""
    inputs, _, mask = dataset.train
    torch.manual_seed(settings["seed"])
    net = TorchAutoRec(dataset.num_columns, settings["hidden"], prior_scale, noise_scale, float(inputs[mask].mean()))
    optimizer = torch.optim.Adam(net.parameters(), lr=settings["lr"])
    batch = min(settings["batch_size"], dataset.num_rows)
    per_epoch = max(1, dataset.num_rows // batch)
    steps = settings["epochs"] * per_epoch
    schedule = torch.optim.lr_scheduler.ExponentialLR(optimizer, settings["lr_decay"] ** (1 / steps))
    start = time.perf_counter()
    for _ in range(settings["epochs"]):
        order = torch.randperm(dataset.num_rows)
        for position in range(per_epoch):
            rows = order[position * batch:(position + 1) * batch]
            optimizer.zero_grad()
            net.loss(inputs[rows], mask[rows], dataset.num_rows / batch).backward()
            optimizer.step()
            schedule.step()
    wall_time = time.perf_counter() - start
    ratings = held_out_ratings(dataset)
    with torch.no_grad():
        means = net(inputs)[ratings.rows, ratings.columns].unsqueeze(0)
    predictions = predictions_from_draws(means, torch.tensor([noise_scale]), ratings, dataset.rating_min,
                                         dataset.rating_max)
    return {**prediction_scores(predictions, ratings), "wall_time_s": wall_time,
            "time_per_epoch_s": wall_time / settings["epochs"]}


# ----------------------------------------------------------------------------------------------- fitting rows


def fit_row(row: str, dataset: RatingsDataset, prior_scale: float, noise_scale, settings: Dict) -> Dict:
    """One row of the family fitted to ``dataset`` and scored on its test part, as a flat dict."""
    if row == "item_mean":
        start = time.perf_counter()
        scores = item_mean_baseline(dataset, None, None).row
        return {**scores, "wall_time_s": time.perf_counter() - start}
    comparison = compare(FAMILY, guides=[row], data=dataset, draw_figures=False, progress=False,
                         model_options={"hidden": settings["hidden"], "prior_scale": prior_scale,
                                        "noise_scale": noise_scale},
                         num_eval_samples=settings["eval_samples"], seed=settings["seed"], epochs=settings["epochs"],
                         batch_size=settings["batch_size"], lr=settings["lr"], lr_decay=settings["lr_decay"])
    record = comparison.table.iloc[0].to_dict()
    if record["status"] != "ok":
        raise RuntimeError(f"{row} did not finish: {record.get('error')}")
    return record


def choose_weight_decay(validation: RatingsDataset, lambdas: Sequence[float], settings: Dict, log) -> Dict:
    """MAP at noise 1 for each lambda on the validation part; the best lambda, its RMSE as sigma, and s*."""
    results = {}
    for weight_decay in lambdas:
        record = fit_row("auto_delta", validation, prior_scale_for_weight_decay(weight_decay, 1.0), 1.0, settings)
        results[weight_decay] = record["rmse"]
        log(f"  validation auto_delta lambda={weight_decay:g}: RMSE {record['rmse']:.4f}")
    best = min(results, key=results.get)
    sigma = results[best]
    return {"lambda": best, "sigma": sigma, "prior_scale": prior_scale_for_weight_decay(best, sigma),
            "validation_rmse": results}


def choose_bayesian_scales(validation: RatingsDataset, base_scale: float, factors: Sequence[float], noise,
                           settings: Dict, log) -> Dict[str, float]:
    """Each Bayesian row's weight prior scale from ``base_scale x factors``, by validation RMSE, at noise ``noise``."""
    chosen = {}
    for row in BAYESIAN_ROWS:
        scores = {}
        for factor in factors:
            scale = base_scale * factor
            scores[scale] = fit_row(row, validation, scale, noise, settings)["rmse"]
            log(f"  validation {row} s={scale:.4f}: RMSE {scores[scale]:.4f}")
        chosen[row] = min(scores, key=scores.get)
    chosen["auto_normal"] = chosen["mean_field"]
    return chosen


def run_split(dataset: RatingsDataset, choice: Dict, scales: Dict[str, float], rows: Sequence[str], settings: Dict,
              log, bayesian_noise="fixed") -> List[Dict]:
    """Every row on one split, with the PyTorch AutoRec; one flat record per row."""
    records = []
    rarest = f"rmse_items_{popularity_labels()[0]}"
    for row in rows:
        if row == "torch_autorec":
            record = torch_autorec(dataset, choice["prior_scale"], choice["sigma"], settings)
        else:
            scale = scales.get(row, choice["prior_scale"])
            noise = "learned" if row in scales and bayesian_noise == "learned" else choice["sigma"]
            record = fit_row(row, dataset, scale, noise, settings)
        record = {"split": dataset.name, "row": row, **{k: v for k, v in record.items() if k != "guide"}}
        record["rmse_rarest"] = record.get(rarest, math.nan)
        records.append(record)
        log(f"  {dataset.name} {row}: RMSE {record['rmse']:.4f}, coverage {record.get('coverage_90', math.nan):.3f}, "
            f"{record.get('time_per_epoch_s', math.nan):.3f} s/epoch")
    return records


# ----------------------------------------------------------------------------------------------- the report


def summary(records: pd.DataFrame) -> pd.DataFrame:
    """Mean ± standard error over splits of each row's scores; time per epoch also as a ratio to PyTorch's."""
    torch_time = records.loc[records["row"] == "torch_autorec"].set_index("split")["time_per_epoch_s"]
    records = records.assign(ratio_to_torch=records["time_per_epoch_s"] / records["split"].map(torch_time))
    table = {}
    for row, group in records.groupby("row", sort=False):
        entry = {"splits": len(group)}
        for column in SHOWN + ("ratio_to_torch",):
            values = group[column].astype(float).dropna() if column in group else pd.Series(dtype=float)
            if len(values) == 0:
                entry[column] = "–"
                continue
            error = values.std(ddof=1) / math.sqrt(len(values)) if len(values) > 1 else math.nan
            entry[column] = f"{values.mean():.4f} ± {error:.4f}" if column == "rmse" else f"{values.mean():.4g}"
        table[row] = entry
    return pd.DataFrame(table).T


def anchors_text() -> str:
    lines = ["anchors (published test RMSE):"]
    lines += [f"  {name:42s} {where:22s} {value:.4f}" for name, where, value in ANCHORS]
    return "\n".join(lines)


def differences_text(settings: dict, selected_on: str) -> str:
    """Where this run's protocol differs from the anchors' (printed beside them)."""
    return "\n".join([
        "how this protocol differs from the anchors:",
        f"  - ours: MovieLens-100K's official folds (80/20 each; ML-1M's 90/10 random splits with --ml1m-dir), "
        f"Adam for {settings['epochs']} epochs of item "
        f"minibatches, {settings['hidden']} hidden units; the paper's I-AutoRec figure is on ML-1M with a 90/10 "
        "random split, and the other anchors use other splits or folds;",
        f"  - the weight decay and the Bayesian prior scales are chosen once, on 10% of {selected_on}'s training "
        "ratings, which hold test ratings of the other folds (u2..u5 test sets lie inside u1.base): for those "
        "folds a few scalars saw about a tenth of their test ratings;",
        "  - predictions are clipped to the 1..5 stars, and users or items unseen in training get 3.",
    ])


def aims_text(records: pd.DataFrame) -> str:
    """Whether the aims of issue 11 were met on these splits (from the per-split records)."""
    means = records.groupby("row")[["rmse", "rmse_rarest", "coverage_90"]].mean()
    lines = []
    if "auto_delta" in means.index:
        value = means.loc["auto_delta", "rmse"]
        lines.append(f"auto_delta mean test RMSE {value:.4f} <= 0.90: {'met' if value <= 0.90 else 'NOT met'}")
    for row in [r for r in ("mean_field", "last_layer", "auto_normal") if r in means.index and "auto_delta" in means.index]:
        as_accurate = means.loc[row, "rmse"] <= means.loc["auto_delta", "rmse"]
        rarer = means.loc[row, "rmse_rarest"] < means.loc["auto_delta", "rmse_rarest"]
        covered = 0.88 <= means.loc[row, "coverage_90"] <= 0.92
        lines.append(f"{row}: RMSE <= MAP's {'yes' if as_accurate else 'no'} ({paired_text(records, row, 'rmse')}); "
                     f"better on the rarest items {'yes' if rarer else 'no'} "
                     f"({paired_text(records, row, 'rmse_rarest')}); 90% coverage "
                     f"{means.loc[row, 'coverage_90']:.4f} in [0.88, 0.92] {'yes' if covered else 'no'}")
    return "\n".join(lines)


def paired_text(records: pd.DataFrame, row: str, column: str) -> str:
    """``row`` minus MAP in ``column``, split by split: mean ± standard error of the paired differences."""
    table = records.pivot(index="split", columns="row", values=column)
    difference = (table[row] - table["auto_delta"]).dropna()
    error = difference.std(ddof=1) / math.sqrt(len(difference)) if len(difference) > 1 else math.nan
    return f"minus MAP's: {difference.mean():+.4f} ± {error:.4f}"


# ----------------------------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True, help="MovieLens 100K folder (u1.base ... u5.test)")
    parser.add_argument("--ml1m-dir", help="MovieLens 1M folder (ratings.dat): adds 5 seeded 90/10 splits")
    parser.add_argument("--splits", default="u1,u2,u3,u4,u5", help="MovieLens 100K splits (default: u1..u5)")
    parser.add_argument("--rows", default="auto_delta,mean_field,auto_normal,last_layer,item_mean,torch_autorec")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--lr-decay", type=float, default=0.1)
    parser.add_argument("--hidden", type=int, default=500)
    parser.add_argument("--eval-samples", type=int, default=100, help="posterior draws for the predictive")
    parser.add_argument("--lambdas", default="25,50,100,200,400", help="weight decays tried on validation")
    parser.add_argument("--bayesian-noise", choices=("fixed", "learned"), default="fixed",
                        help="the Bayesian rows' noise: MAP's validation sigma, fixed, or learned")
    parser.add_argument("--scale-factors", default="1,1.4,2",
                        help="multiples of MAP's prior scale the Bayesian rows try on validation")
    parser.add_argument("--lambda", dest="fixed_lambda", type=float,
                        help="skip validation: use this lambda (and --sigma) for every row")
    parser.add_argument("--sigma", type=float, default=1.0, help="the noise with --lambda")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", help="CSV file for the per-split records")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    log = lambda text: print(text, flush=True)
    settings = dict(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, lr_decay=args.lr_decay,
                    hidden=args.hidden, eval_samples=args.eval_samples, seed=args.seed)
    rows = args.rows.split(",")
    splits = [load_ratings("movielens-100k", args.data_dir, split=split) for split in args.splits.split(",")]
    start = time.perf_counter()
    if args.fixed_lambda is not None:
        scale = prior_scale_for_weight_decay(args.fixed_lambda, args.sigma)
        choice, scales = {"lambda": args.fixed_lambda, "sigma": args.sigma, "prior_scale": scale}, {}
    else:
        log(f"validation: 10% of {splits[0].name}'s training ratings")
        validation = validation_split(splits[0], 0.1, seed=0)
        choice = choose_weight_decay(validation, [float(v) for v in args.lambdas.split(",")], settings, log)
        log(f"chosen: lambda {choice['lambda']:g}, sigma {choice['sigma']:.4f}, "
            f"prior scale {choice['prior_scale']:.4f}")
        noise = choice["sigma"] if args.bayesian_noise == "fixed" else "learned"
        scales = choose_bayesian_scales(validation, choice["prior_scale"],
                                        [float(v) for v in args.scale_factors.split(",")], noise, settings, log)
        log(f"chosen Bayesian prior scales (sigma {args.bayesian_noise}): "
            + ", ".join(f"{k} {v:.4f}" for k, v in scales.items()))
    records = []
    for dataset in splits:
        records += run_split(dataset, choice, scales, rows, settings, log, args.bayesian_noise)
    if args.ml1m_dir:
        for seed in range(5):
            records += run_split(load_ratings("movielens-1m", args.ml1m_dir, seed=seed), choice, scales, rows,
                                 settings, log, args.bayesian_noise)
    frame = pd.DataFrame(records)
    if args.out:
        frame.to_csv(args.out, index=False)
    settings_text = ", ".join(f"{k}={v}" for k, v in settings.items())
    log(f"\nsettings: {settings_text}; lambda {choice['lambda']:g}, sigma {choice['sigma']:.4f}, "
        f"MAP prior scale {choice['prior_scale']:.4f}; Bayesian prior scales {scales} (sigma {args.bayesian_noise})")
    for name, group in frame.groupby(frame["split"].str.split(":").str[0], sort=False):
        names = ", ".join(group["split"].str.split(":").str[1].unique())
        log(f"\n{name} ({names}): mean ± standard error over splits")
        log(summary(group).to_string())
        log(aims_text(group))
    log("\n" + anchors_text())
    if args.fixed_lambda is None:
        log(differences_text(settings, splits[0].name))
    log(f"\ntotal time {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
