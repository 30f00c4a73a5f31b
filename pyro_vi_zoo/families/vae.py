"""The ``vae`` family: a variational autoencoder on binary images, and the gaps between its guides.

The model (:mod:`pyro_vi_zoo.models.vae`) is the one-stochastic-layer VAE of
Burda, Grosse & Salakhutdinov, "Importance weighted autoencoders", ICLR 2016:
z ~ N(0, I) (50), two hidden layers of 200 tanh units, 784 Bernoulli logits. Its
rows (guides) separate the parts of the inference gap (Cremer, Li & Duvenaud,
"Inference suboptimality in variational autoencoders", ICML 2018):

* ``mean_field``: the amortised encoder, a diagonal Normal per image (Kingma & Welling 2014);
* ``auto_normal``: Pyro's ``AutoNormal``, one free Normal per *training* image
  (``create_plates``), trained jointly with the decoder; no encoder, so it cannot
  see test images: its test scores come from a free Normal per test image fitted
  with its decoder frozen (column ``test_scores_from``);
* ``iaf``: the encoder with two inverse autoregressive flows (Kingma et al. 2016),
  a richer amortised family;
* ``iwae_5``, ``iwae_50``: the mean-field encoder trained on the importance-weighted
  bound with k = 5 and 50 (Burda et al.; the engine's ``--elbo iwae``).

Training runs by shuffled minibatch epochs (``Setup.make_batch``); grey images are
binarised afresh each time they are used (dynamic binarisation), test images once
by a seeded draw. A batch's log-density is scaled by N / batch (the plate is told
the training-set size and the batch's positions), so every loss is an estimate for
the whole training set; the IWAE rows use the engine's per-example bound, which
applies that scale after the log-mean-exp over particles (Pyro's ``RenyiELBO``
applies it before, which gives another, tempered bound under minibatches).

Scores per row on the test set, in chunks (IWAE's protocol): ELBO, importance-
sampled log p(x) with k = ``--is-samples`` (5000 by default) and its standard
error, the NLL in nats (−log p(x), as papers report it), the amortisation gap
(free Normals fitted to the first ``gap_examples`` test images with the decoder
frozen, started at the encoder's q, against the encoder's ELBO), active units
(Burda et al.: Cov_x(E_q[z_i]) > 0.01), the training bound per image, wall time
and images per second. Figures: reconstructions, prior samples, the latent space,
training curves.
"""

import dataclasses
import functools
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import pyro
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from pyro.infer.autoguide import AutoGuide

from ..data.images import IMAGE_DATASETS, ImageDataset, binarize, images_from_arrays, load_images
from ..engine import fit_guide, resolve_settings, seeded
from ..engine.step import ELBOS
from ..errors import DataError, ZooError
from ..family import Family, Option, Setup, parse_widths
from ..guides.auto import AUTO_GUIDES
from ..guides.vae import Encoder, FreeNormal, IAFEncoder, vae_iaf_guide, vae_mean_field_guide
from ..models.vae import (ACTIVATIONS, LATENT_DIM, MAX_PLATE_NESTING, Decoder, ParamStoreDecoder, create_data_plate,
                          vae)
from ..scoring import Budget
from ..scoring.global_latents import timing
from ..scoring.local_latents import local_bounds

DEFAULT_HIDDEN = "200,200"
SYNTHETIC_SIZES = (2000, 100)  # train, test: the default run (all rows, k = 5000) takes about a minute
IWAE_PARTICLES = {"iwae_5": 5, "iwae_50": 50}
ACTIVE_UNIT_THRESHOLD = 0.01  # Burda et al. 2016, sec. 5.2


# ----------------------------------------------------------------------------- data


def load_data(data=None, *, dataset: Optional[str] = None, data_dir: Optional[str] = None,
              binarization: Optional[str] = None, train_limit: Optional[int] = None,
              test_limit: Optional[int] = None) -> ImageDataset:
    """Images for the VAE: the embedded synthetic shapes (default), MNIST, binarised MNIST, or users' images.

    Args:
        data: ``None``; a folder holding the MNIST IDX files or the binarised-MNIST
            ``.amat`` files; users' training images (n, 784) or (n, 28, 28) in [0, 1];
            or a pair ``(train_images, test_images)``.
        dataset: ``synthetic`` (2000 training and 100 test images, made in code),
            ``mnist`` or ``binarized-mnist`` (read from ``data_dir``, else downloaded once).
        binarization: ``dynamic`` (grey training images, redrawn per use) or ``fixed``.
        train_limit, test_limit: keep only the first rows of each split.
    """
    train_limit, test_limit = _limit(train_limit, "--train-limit"), _limit(test_limit, "--test-limit")
    if data is not None and (dataset not in (None, "synthetic") or data_dir is not None):
        raise DataError("pass the images either as data or by --dataset/--data-dir, not both.")
    if data is None:
        images = _named_images(dataset or "synthetic", data_dir, binarization, train_limit, test_limit)
    elif isinstance(data, (str, os.PathLike)):
        images = _folder_images(os.fspath(data), binarization, train_limit, test_limit)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        images = images_from_arrays(data[0], data[1], binarization=binarization or "dynamic")
    else:
        images = images_from_arrays(data, binarization=binarization or "dynamic")
    return limit_images(images, train_limit, test_limit)


def _limit(value, flag: str) -> Optional[int]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ZooError(f"{flag} must be a positive number of images, got {value!r}.")
    return int(value)


def _named_images(name, data_dir, binarization, train_limit, test_limit) -> ImageDataset:
    if name not in IMAGE_DATASETS:
        raise DataError(f"unknown --dataset {name!r} for vae; choose one of: {', '.join(IMAGE_DATASETS)}.")
    if name == "synthetic":
        return load_images("synthetic", data_dir, binarization=binarization, num_train=SYNTHETIC_SIZES[0],
                           num_test=SYNTHETIC_SIZES[1])
    return load_images(name, data_dir, binarization=binarization, num_train=train_limit, num_test=test_limit)


def _folder_images(folder, binarization, train_limit, test_limit) -> ImageDataset:
    if not os.path.isdir(folder):
        raise DataError(f"--data {folder!r} is not a folder; pass a folder holding the MNIST IDX files or the "
                        "binarized_mnist_*.amat files, or use --dataset with --data-dir.")
    name = "binarized-mnist" if any(f.startswith("binarized_mnist_") for f in os.listdir(folder)) else "mnist"
    return load_images(name, folder, binarization=binarization, num_train=train_limit, num_test=test_limit,
                       verify=False)


def limit_images(images: ImageDataset, train_limit: Optional[int] = None,
                 test_limit: Optional[int] = None) -> ImageDataset:
    """``images`` with only the first ``train_limit`` training and ``test_limit`` test images (and labels)."""
    changes = {}
    if train_limit is not None and train_limit < images.num_train:
        changes.update(train=tuple(a[:train_limit] for a in images.train),
                       train_labels=None if images.train_labels is None else images.train_labels[:train_limit])
    if test_limit is not None and images.test is not None and test_limit < images.num_test:
        changes.update(test=tuple(a[:test_limit] for a in images.test),
                       test_labels=None if images.test_labels is None else images.test_labels[:test_limit])
    return dataclasses.replace(images, **changes) if changes else images


# ----------------------------------------------------------------------------- model and guides


def setup(dataset: ImageDataset, *, latent_dim: int = LATENT_DIM, hidden=DEFAULT_HIDDEN,
          activation: str = "tanh") -> Setup:
    """The VAE bound to ``dataset``: a decoder per fit (:class:`ParamStoreDecoder`), the family's guides,
    IWAE rows' ELBO and particles, and minibatches that binarise grey images afresh."""
    if isinstance(latent_dim, bool) or not isinstance(latent_dim, (int, np.integer)) or latent_dim < 1:
        raise ZooError(f"--latent-dim must be a positive integer, got {latent_dim!r}.")
    if activation not in ACTIVATIONS:
        raise ZooError(f"unknown --activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}.")
    widths = parse_widths(hidden, example="200,200")
    device = dataset.device
    decoder = ParamStoreDecoder(int(latent_dim), widths, activation, device=device)
    model = functools.partial(vae, decoder=decoder, latent_dim=int(latent_dim))
    networks = dict(latent_dim=int(latent_dim), hidden_sizes=widths, activation=activation)
    mean_field = functools.partial(amortised_guide, vae_mean_field_guide, Encoder, networks, device)
    guides = {"mean_field": mean_field, "iaf": functools.partial(amortised_guide, vae_iaf_guide, IAFEncoder,
                                                                 networks, device)}
    guides.update({name: mean_field for name in IWAE_PARTICLES})
    guides["auto_normal"] = functools.partial(per_image_auto_normal, networks, device)
    return Setup(
        model=model,
        guides=guides,
        guide_settings={name: {"elbo": "iwae", "num_particles": k} for name, k in IWAE_PARTICLES.items()},
        model_kwargs={"latent_dim": int(latent_dim), "hidden": ",".join(map(str, widths)), "activation": activation,
                      "binarization": dataset.binarization},
        max_plate_nesting=MAX_PLATE_NESTING,
        auto_guide_options=unsupported_auto_guide,
        compared_sites=(),  # one z per image: per-image marginals are not a posterior summary worth plotting
        batch_keyword=None,
        make_batch=functools.partial(make_batch, dataset.train[0], dataset.binarization == "dynamic"),
    )


def amortised_guide(guide: Callable, encoder_class, networks: Dict[str, Any], device) -> Callable:
    """A guide factory's product: ``guide`` bound to a freshly initialised encoder, so every fit has its own."""
    with torch.device(device):
        encoder = encoder_class(**networks)
    return functools.partial(guide, encoder=encoder, latent_dim=networks["latent_dim"])


def per_image_auto_normal(networks: Dict[str, Any], device) -> AutoGuide:
    """Pyro's ``AutoNormal`` with one Normal per training image (``create_plates``: the model's plate).

    Its prototype trace runs the model with a frozen stand-in decoder: an
    ``AutoNormal`` only reads the model's sites, shapes and plates, and in Pyro's
    module-local parameter mode a ``PyroModule`` refuses the decoder's
    ``pyro.param`` statements made inside its own call.
    """
    with torch.device(device):
        stand_in = Decoder(networks["latent_dim"], networks["hidden_sizes"], networks["activation"])
    prototype = functools.partial(vae, decoder=stand_in.requires_grad_(False).eval(), latent_dim=networks["latent_dim"])
    return AUTO_GUIDES["auto_normal"].build(prototype, create_plates=create_data_plate)


def unsupported_auto_guide():
    """Pyro's other auto guides do not suit the VAE: say so in one line (the runner builds them through this)."""
    raise ZooError("the vae family fits Pyro's AutoNormal as its own row 'auto_normal' (one Normal per training "
                   "image); other auto guides either flatten all images' latents into one vector (diagonal, "
                   "low-rank, full-rank, flows) or have no density to score (auto_delta, auto_laplace).")


def make_batch(train_images: torch.Tensor, dynamic: bool, rows: torch.Tensor):
    """The model's arguments for training rows ``rows``: the images (a fresh Bernoulli draw of grey images
    when ``dynamic``), the training-set size (the plate scales the batch by N / batch) and the rows'
    positions (for per-example guides)."""
    images = train_images.index_select(0, rows)
    if dynamic:
        images = binarize(images)
    return (images,), {"num_examples": len(train_images), "subsample": rows}


def decoder_of(fit) -> torch.nn.Module:
    """The frozen decoder a fit trained (a copy of the weights in its parameter store)."""
    with fit.activate():
        return fit.model.keywords["decoder"].module()


def is_amortised(fit) -> bool:
    """Whether the fitted guide maps any image to its q(z | x); auto guides hold one q per training image."""
    return not isinstance(fit.guide, AutoGuide)


# ----------------------------------------------------------------------------- per-image posteriors


@torch.no_grad()
def latent_moments(guide: Callable, images: torch.Tensor, num_samples: int = 500,
                   chunk_examples: int = 100) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and standard deviation of q(z | x) for every image (n, latent_dim), in chunks.

    Exact where the guide's distribution has them (a diagonal Normal), else from
    ``num_samples`` draws (a flow). Run it inside the fit's ``activate()``.
    """
    means, sds = [], []
    for start in range(0, len(images), chunk_examples):
        chunk = images[start:start + chunk_examples]
        with pyro.plate("_moment_samples", num_samples, dim=-2):
            site = pyro.poutine.trace(guide).get_trace(chunk).nodes["z"]
        try:
            mean, sd = site["fn"].mean, site["fn"].stddev
            mean, sd = mean.expand(site["value"].shape)[0], sd.expand(site["value"].shape)[0]
        except NotImplementedError:
            mean, sd = site["value"].mean(0), site["value"].std(0)
        means.append(mean)
        sds.append(sd)
    return torch.cat(means), torch.cat(sds)


def active_units(posterior_means: torch.Tensor, threshold: float = ACTIVE_UNIT_THRESHOLD) -> int:
    """How many latent dimensions are active: Var over images of E_q[z_i] above ``threshold``.

    Burda, Grosse & Salakhutdinov 2016, sec. 5.2: a unit whose posterior mean does
    not change with the image carries no information about it.
    """
    if len(posterior_means) < 2:
        return 0
    return int((posterior_means.double().var(0) > threshold).sum())


def fit_free_normals(decoder: torch.nn.Module, latent_dim: int, images: torch.Tensor, init_loc: torch.Tensor,
                     init_scale: torch.Tensor, *, steps: int = 200, lr: float = 0.02, num_particles: int = 2,
                     seed: Optional[int] = 0):
    """A free diagonal Normal per image fitted by SVI with ``decoder`` frozen: the best of the encoder's family
    per image, the q* of Cremer, Li & Duvenaud (2018) (approximately: ``steps`` Adam steps).

    Trained on TraceMeanField_ELBO (the KL to the prior in closed form) over all
    ``images`` at once, starting at ``init_loc``/``init_scale``. Returns the engine's
    :class:`~pyro_vi_zoo.engine.FitResult` (model and guide bound, ``guide.loc``, ``guide.scale``).
    """
    model = functools.partial(vae, decoder=decoder, latent_dim=latent_dim)
    settings = resolve_settings({"steps": steps, "lr": lr, "lr_decay": 0.1, "elbo": "meanfield",
                                 "num_particles": num_particles, "seed": seed, "progress": False,
                                 "device": str(images.device), "log_every": steps})
    return fit_guide(model, lambda: FreeNormal(init_loc, init_scale), (images,), settings,
                     max_plate_nesting=MAX_PLATE_NESTING, model_name="vae", guide_name="free_normal")


# ----------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class VAEScoring:
    """How a VAE fit is scored: the shared local-latent bounds (:func:`local_bounds`) plus the gaps.

    Attributes:
        chunk_examples: test images per chunk of importance samples.
        gap_examples: test images whose free Normals measure the amortisation gap.
        free_fit_steps, free_fit_lr: the free fits' Adam steps and learning rate, started at an
            encoder's q (100 steps come within about 0.3 nats of 1000 on the synthetic images).
        prior_fit_steps, prior_fit_lr: the same for rows without an encoder (``auto_normal``),
            started at the prior, on every test image (600 steps: within about 1 nat of 2000).
        free_fit_particles: ELBO particles per free-fit step.
        gap_samples: draws per image for the free fits' ELBO on the gap images.
        moment_samples: draws per image for E_q[z] where q has no closed-form mean (flows).
    """

    chunk_examples: int = 100
    gap_examples: int = 100
    free_fit_steps: int = 200
    free_fit_lr: float = 0.02
    prior_fit_steps: int = 600
    prior_fit_lr: float = 0.05
    free_fit_particles: int = 2
    gap_samples: int = 200
    moment_samples: int = 500
    figures: Optional[Callable] = None
    evaluate: Optional[Callable] = None
    reference: Optional[Callable] = None
    baselines: Mapping[str, Callable] = field(default_factory=dict)

    def score(self, fit, dataset, reference, sites: Sequence[str], budget: Budget,
              draws_out: Optional[Dict] = None) -> Dict[str, Any]:
        start = time.perf_counter()
        images = dataset.test[0] if dataset.test is not None else _binary_training_images(dataset)
        decoder = decoder_of(fit)
        latent_dim = fit.model.keywords["latent_dim"]
        if is_amortised(fit):
            row, means = self._amortised_scores(fit, decoder, latent_dim, images, budget)
        else:
            row, means = self._free_scores(fit, decoder, latent_dim, images, budget)
        if draws_out is not None:
            draws_out[fit.guide_name] = {"z_mean": means.cpu()}
        row.update(active_units=active_units(means), **training_scores(fit))
        row["score_time_s"] = time.perf_counter() - start
        return row

    def _amortised_scores(self, fit, decoder, latent_dim, images, budget):
        with fit.activate(), torch.no_grad():
            bounds = local_bounds(fit.score_model, fit.guide, (images,), budget.num_is_samples, self.chunk_examples)
            means, sds = latent_moments(fit.guide, images, self.moment_samples, self.chunk_examples)
        count = min(self.gap_examples, len(images))
        free = fit_free_normals(decoder, latent_dim, images[:count], means[:count], sds[:count],
                                steps=self.free_fit_steps, lr=self.free_fit_lr, num_particles=self.free_fit_particles,
                                seed=fit.settings.seed)
        with free.activate(), torch.no_grad():
            free_bounds = local_bounds(free.model, free.guide, (images[:count],), self.gap_samples,
                                       self.chunk_examples)
        log_likelihood = pooled_log_likelihood((bounds.log_likelihood[:count], bounds.num_samples),
                                               (free_bounds.log_likelihood, free_bounds.num_samples))
        row = {**nll_summary(bounds), "test_scores_from": "encoder q(z|x)",
               **gap_summary(bounds.elbo[:count], free_bounds.elbo, log_likelihood)}
        return row, means

    def _free_scores(self, fit, decoder, latent_dim, images, budget):
        prior_loc, prior_scale = images.new_zeros(len(images), latent_dim), images.new_ones(len(images), latent_dim)
        free = fit_free_normals(decoder, latent_dim, images, prior_loc, prior_scale, steps=self.prior_fit_steps,
                                lr=self.prior_fit_lr, num_particles=self.free_fit_particles, seed=fit.settings.seed)
        with free.activate(), torch.no_grad():
            bounds = local_bounds(free.model, free.guide, (images,), budget.num_is_samples, self.chunk_examples)
        count = min(self.gap_examples, len(images))
        row = {**nll_summary(bounds), "test_scores_from": "free Normal per test image (decoder frozen)",
               **gap_summary(None, bounds.elbo[:count], bounds.log_likelihood[:count])}
        return row, free.guide.loc.detach()


def _binary_training_images(dataset) -> torch.Tensor:
    images = dataset.train[0]
    if dataset.binarization != "dynamic":
        return images
    return binarize(images, torch.Generator(device=images.device).manual_seed(0))


def nll_summary(bounds) -> Dict[str, Any]:
    """The shared test bounds, with the NLL in nats (−log p(x), positive, as papers report it) beside them."""
    row = bounds.summary("test")
    row.update(test_nll=-row["test_log_likelihood"], test_nll_se=row["test_log_likelihood_se"])
    return row


def pooled_log_likelihood(*estimates: Tuple[torch.Tensor, int]) -> torch.Tensor:
    """One importance-sampled log p(x) per image from several: ``(log_likelihood, k)`` pairs, each the log of
    an unbiased estimate of p(x) from k draws, pooled as the k-weighted mean of the estimates (still unbiased
    for p(x); the better proposal's draws dominate, since its weights are the larger)."""
    total = sum(k for _, k in estimates)
    stacked = torch.stack([log_likelihood + math.log(k / total) for log_likelihood, k in estimates])
    return torch.logsumexp(stacked, 0)


def gap_summary(encoder_elbo: Optional[torch.Tensor], free_elbo: torch.Tensor,
                log_likelihood: torch.Tensor) -> Dict[str, float]:
    """Cremer et al.'s decomposition on the gap images (per-image means, nats).

    ``amortization_gap`` = ELBO(free q*) − ELBO(encoder); ``approximation_gap`` =
    log p(x) − ELBO(free q*), with log p(x) an importance-sampled estimate: a
    stochastic lower bound, so this gap is under-estimated, and can come out
    negative when the draws are few or their proposal poor. No encoder: no
    amortisation gap.
    """
    free = float(free_elbo.mean())
    encoder = math.nan if encoder_elbo is None else float(encoder_elbo.mean())
    return {"gap_examples": len(free_elbo), "gap_encoder_elbo": encoder, "gap_free_elbo": free,
            "amortization_gap": free - encoder, "approximation_gap": float(log_likelihood.mean()) - free}


def training_scores(fit) -> Dict[str, float]:
    """The training bound per image (ELBO, or the k-sample IWAE bound), epochs, time and images per second.

    A step's loss is the batch's negative bound scaled by N / batch, an estimate for
    the whole training set; per image it is that over N.
    """
    num_train = len(fit.args[0])
    batch_size = fit.settings.batch_size or num_train
    per_epoch = max(1, num_train // batch_size)
    row = timing(fit)
    row.update(train_bound=-fit.final_loss / num_train, epochs=len(fit.losses) / per_epoch,
               images_per_s=len(fit.losses) * batch_size / fit.wall_time if fit.wall_time > 0 else math.nan)
    return row


# ----------------------------------------------------------------------------- gradient variance


def elbo_gradient_variance(fit, images: torch.Tensor, elbos: Sequence[str] = ("trace", "meanfield"),
                           num_draws: int = 100, seed: int = 0) -> pd.DataFrame:
    """Variance of single-draw ELBO gradients at a fit's parameters, per estimator, on one batch ``images``.

    For each ELBO (``trace``: Trace_ELBO's Monte Carlo KL; ``meanfield``:
    TraceMeanField_ELBO's closed-form KL(q(z|x) ‖ p(z)), Kingma & Welling 2014,
    eq. 10) draws ``num_draws`` one-particle gradient estimates and reports, for the
    encoder's and the decoder's weights: the total variance (sum over coordinates of
    the variance across draws), the squared norm of the mean gradient, and their
    ratio (signal-to-noise). Same parameters, batch and random draws for every
    estimator; the caller's random state is left as it was.
    """
    rows = []
    for name in elbos:
        with seeded(seed), fit.activate():
            groups = _weight_groups(("encoder", "decoder"))
            draws = _gradient_draws(ELBOS[name](num_particles=1, max_plate_nesting=MAX_PLATE_NESTING), fit, images,
                                    groups, num_draws)
        for group, values in draws.items():
            variance, signal = float(values.var(0).sum()), float(values.mean(0).pow(2).sum())
            rows.append({"elbo": name, "weights": group, "total_variance": variance, "mean_gradient_sq": signal,
                         "signal_to_noise": signal / variance if variance > 0 else math.nan})
    return pd.DataFrame(rows)


def _weight_groups(prefixes: Sequence[str]) -> Dict[str, list]:
    """The active store's unconstrained parameters of each module name (``encoder$$$...``)."""
    store = pyro.get_param_store()
    return {prefix: [store[name].unconstrained() for name in store.keys() if name.startswith(f"{prefix}$$$")]
            for prefix in prefixes}


def _gradient_draws(loss, fit, images, groups: Dict[str, list], num_draws: int) -> Dict[str, torch.Tensor]:
    """``num_draws`` gradients of ``loss`` per group of weights, flattened: (num_draws, size), float64."""
    weights = [p for params in groups.values() for p in params]
    draws = []
    for _ in range(num_draws):
        gradients = torch.autograd.grad(loss.differentiable_loss(fit.model, fit.guide, images), weights,
                                        allow_unused=True)
        draws.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).double()
                                for g, p in zip(gradients, weights)]))
    stacked, start = torch.stack(draws), 0
    by_group = {}
    for group, params in groups.items():
        size = sum(p.numel() for p in params)
        by_group[group], start = stacked[:, start:start + size], start + size
    return by_group


# ----------------------------------------------------------------------------- figures


def figures(comparison) -> Dict[str, Figure]:
    """Reconstructions beside their inputs, samples from the prior, the latent space, training curves."""
    fits = {name: fit for name, fit in comparison.fits.items() if name in comparison.draws}
    if not fits or comparison.dataset.test is None:
        return {}
    decoders = {name: decoder_of(fit) for name, fit in fits.items()}
    return {
        "reconstructions": reconstructions_figure(comparison.dataset.test[0], comparison.draws, decoders),
        "prior_samples": prior_samples_figure(decoders, fits[next(iter(fits))].model.keywords["latent_dim"]),
        "latent_space": latent_space_figure(comparison.draws, comparison.dataset.test_labels),
        "training_curves": training_curves_figure(fits, comparison.table),
    }


def mosaic_figure(rows: Dict[str, np.ndarray], title: str, shape=(28, 28)) -> Figure:
    """One image per grid cell: a row of images (count, 784) per label, drawn as a single picture."""
    height, width = shape
    count = max(len(images) for images in rows.values())
    canvas = np.ones(((height + 2) * len(rows), (width + 2) * count))
    for i, images in enumerate(rows.values()):
        for j, image in enumerate(images):
            top, left = i * (height + 2) + 1, j * (width + 2) + 1
            canvas[top:top + height, left:left + width] = image.reshape(shape)
    figure = Figure(figsize=(0.75 * count + 1.6, 0.75 * len(rows) + 0.6))
    axis = figure.subplots()
    axis.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    axis.set_yticks([(height + 2) * (i + 0.5) for i in range(len(rows))], list(rows), fontsize="small")
    axis.set_xticks([])
    axis.set_title(title, fontsize="medium")
    figure.tight_layout()
    return figure


@torch.no_grad()
def reconstructions_figure(test_images: torch.Tensor, draws, decoders, count: int = 10) -> Figure:
    """The first ``count`` test images (top) and, per row, the decoder's Bernoulli means at E_q[z | x]."""
    rows = {"input": test_images[:count].cpu().numpy()}
    for name, decoder in decoders.items():
        means = draws[name]["z_mean"][:count].to(test_images.device)
        rows[name] = torch.sigmoid(decoder(means)).cpu().numpy()
    return mosaic_figure(rows, "test images and their reconstructions (Bernoulli means at the posterior mean)")


@torch.no_grad()
def prior_samples_figure(decoders, latent_dim: int, count: int = 10, seed: int = 0) -> Figure:
    """Per row, the Bernoulli means of the decoder at the same ``count`` draws z ~ N(0, I)."""
    device = next(next(iter(decoders.values())).parameters()).device
    z = torch.randn(count, latent_dim, generator=torch.Generator().manual_seed(seed), device="cpu").to(device)
    rows = {name: torch.sigmoid(decoder(z)).cpu().numpy() for name, decoder in decoders.items()}
    return mosaic_figure(rows, "samples from the prior (Bernoulli means; the same z in every row)")


def latent_space_figure(draws, labels: Optional[np.ndarray], max_panels: int = 6) -> Figure:
    """Posterior means of the test images per row: the plane itself when the latent is 2-D, else its first
    two principal components; coloured by class where labels are known."""
    names = list(draws)[:max_panels]
    figure = Figure(figsize=(3.4 * len(names) + 1.0, 3.8), layout="constrained")
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    for axis, name in zip(axes, names):
        means = draws[name]["z_mean"].double().numpy()
        points, kind = (means, "z") if means.shape[1] <= 2 else (_principal_components(means), "PC")
        points = points if points.shape[1] == 2 else np.column_stack([points[:, 0], np.zeros(len(points))])
        # tab10 over -0.5..9.5: class c gets the c-th colour; without labels one colour, no colour map
        colours = dict(c=labels, cmap="tab10", vmin=-0.5, vmax=9.5) if labels is not None else dict(color="tab:blue")
        scatter = axis.scatter(points[:, 0], points[:, 1], s=6, alpha=0.8, **colours)
        axis.set_title(name)
        axis.set_xlabel(f"{kind} 1")
        axis.set_ylabel(f"{kind} 2")
    if labels is not None:
        figure.colorbar(scatter, ax=list(axes), label="class")
    figure.suptitle("latent space: E_q[z | x] of the test images" + ("" if means.shape[1] <= 2 else " (PCA)"))
    return figure


def _principal_components(points: np.ndarray, count: int = 2) -> np.ndarray:
    centred = points - points.mean(0)
    _, _, directions = np.linalg.svd(centred, full_matrices=False)
    return centred @ directions[:count].T


def training_curves_figure(fits, table: pd.DataFrame) -> Figure:
    """The training bound per image, averaged per epoch, for every row; the test ELBO at the end (×).

    A test ELBO far below the curves (IWAE encoders are poor variational posteriors)
    is drawn at the lower edge (▼) with its value, so it does not squash the curves.
    """
    figure = Figure(figsize=(7, 4))
    axis = figure.subplots()
    test_elbo = dict(zip(table["guide"], table["test_elbo"])) if "test_elbo" in table else {}
    curves = {name: _epoch_curve(fit) for name, fit in fits.items()}
    curves = {name: curve for name, curve in curves.items() if len(curve)}
    if not curves:
        return figure
    low = min(float(curve.min()) for curve in curves.values())
    high = max(float(curve.max()) for curve in curves.values())
    bottom = low - 0.3 * max(high - low, 1.0)
    for name, curve in curves.items():
        epochs = np.arange(1, len(curve) + 1)
        line, = axis.plot(epochs, curve, label=name, lw=1.3, marker="." if len(curve) < 30 else None)
        final = test_elbo.get(name, math.nan)
        if final >= bottom:
            axis.plot([epochs[-1]], [final], "x", color=line.get_color(), markersize=8)
        elif math.isfinite(final):
            axis.plot([epochs[-1]], [bottom], "v", color=line.get_color(), markersize=8, clip_on=False)
            axis.annotate(f"{final:.0f}", (epochs[-1], bottom), textcoords="offset points", xytext=(-8, 6),
                          ha="right", fontsize="x-small", color=line.get_color())
    axis.set_ylim(bottom, high + 0.05 * max(high - low, 1.0))
    axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    axis.set_xlabel("epoch")
    axis.set_ylabel("training bound per image (nats)")
    axis.set_title("training bound per epoch (ELBO; k-sample bound for iwae rows); × test ELBO", fontsize="medium")
    axis.legend(fontsize="small")
    figure.tight_layout()
    return figure


def _epoch_curve(fit) -> np.ndarray:
    """A fit's training bound per image, averaged over each epoch (its losses estimate N images' bound)."""
    num_train = len(fit.args[0])
    per_epoch = max(1, num_train // (fit.settings.batch_size or num_train))
    epochs = len(fit.losses) // per_epoch
    return -np.asarray(fit.losses[:epochs * per_epoch], dtype=float).reshape(epochs, per_epoch).mean(1) / num_train


FAMILY = Family(
    name="vae",
    description="variational autoencoder on binary images (IWAE's 784-200-200-50 net); amortisation and IWAE gaps",
    load_data=load_data,
    setup=setup,
    guides=("mean_field", "auto_normal", "iaf", "iwae_5", "iwae_50"),
    scoring=VAEScoring(figures=figures),
    settings={"batch_size": 100, "epochs": 10, "lr": 3e-3, "lr_decay": 0.3, "elbo": "trace", "num_particles": 1,
              "log_every": 100},
    fast_settings={"epochs": 1, "batch_size": 50},
    options=(
        Option("--dataset", "images: synthetic (embedded), mnist or binarized-mnist", "synthetic"),
        Option("--data-dir", "folder holding the data set's files (else they are downloaded once to the cache)"),
        Option("--binarization", "dynamic (redraw grey training images per use) or fixed (binarise once)",
               "dynamic"),
        Option("--train-limit", "use only the first N training images", None, type=int),
        Option("--test-limit", "score only the first N test images", None, type=int),
        Option("--latent-dim", "size of each image's latent z", LATENT_DIM, type=int, target="model"),
        Option("--hidden", "hidden layer widths of encoder and decoder, comma-separated", DEFAULT_HIDDEN,
               target="model"),
        Option("--activation", "hidden units' nonlinearity: tanh or relu", "tanh", target="model"),
    ),
)
