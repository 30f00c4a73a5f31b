"""A user's own Pyro model in the runner, without writing a family.

``zoo.compare(model, data=(x, y), guides=["auto_normal", my_guide])`` wraps
``model`` in a :class:`~pyro_vi_zoo.family.Family` whose data are the user's
tensors or arrays (one row per example along the first dimension, the
observations last), split 80/20 at random (seeded, without touching global
random state) so that held-out predictive scores come out of the model's own
likelihood. Bad input is caught here, before Pyro sees it, with one line that
says what to change.
"""

import functools
import warnings
from typing import Callable, Tuple

import numpy as np
import pyro
import torch
from pyro.poutine.util import site_is_subsample

from .data import Dataset
from .engine.result import is_latent, model_trace
from .errors import DataError, Note, ZooError, first_line
from .family import Family, Setup
from .scoring import GlobalLatentScoring
from .scoring.predictive import heldout_scores

USER_GUIDES = ("auto_normal", "auto_mvn", "auto_iaf", "auto_delta")
TEST_FRACTION = 0.2
SPLIT_SEED = 1996


def user_family(model: Callable) -> Family:
    """A family for ``model(*data)``: the data split 80/20, auto guides, the global-latent scorer."""
    name = getattr(model, "__name__", type(model).__name__)
    return Family(
        name=name,
        description=f"the user's model {name}",
        load_data=functools.partial(user_dataset, name=name),
        setup=functools.partial(user_setup, model),
        guides=USER_GUIDES,
        scoring=GlobalLatentScoring(evaluate=_evaluate),
        settings={"steps": 2000, "lr": 0.05, "lr_decay": 0.1, "num_particles": 4},
        fast_settings={"steps": 100},
    )


def user_dataset(data, *, name: str = "user", test_fraction: float = TEST_FRACTION) -> Dataset:
    """``data`` (a tuple of tensors or arrays with one row per example) as a :class:`Dataset` split at random."""
    args = as_model_arguments(data)
    num_rows = int(args[0].shape[0])
    order = np.random.default_rng(SPLIT_SEED).permutation(num_rows)
    num_test = int(round(test_fraction * num_rows)) if num_rows >= 10 else 0
    test_rows, train_rows = np.sort(order[:num_test]), np.sort(order[num_test:])
    take = lambda rows: tuple(a[torch.as_tensor(rows, dtype=torch.long, device=a.device)] for a in args)
    return Dataset(name=name, train=take(train_rows), test=take(test_rows) if num_test else None)


def as_model_arguments(data) -> Tuple[torch.Tensor, ...]:
    """``data`` as a tuple of tensors agreeing on their first dimension; a :class:`DataError` otherwise."""
    if data is None:
        raise DataError("a user's model has no embedded data; pass data=(x, y) (tensors or arrays, observations last).")
    if isinstance(data, (torch.Tensor, np.ndarray)):
        data = (data,)
    if not isinstance(data, (tuple, list)) or not data:
        raise DataError(f"data must be a tuple of tensors or arrays such as (x, y), got {type(data).__name__}.")
    args = tuple(_as_tensor(value, index) for index, value in enumerate(data))
    rows = [int(a.shape[0]) for a in args]
    if len(set(rows)) > 1:
        raise DataError(f"the data arguments disagree in their number of rows (first dimension): {rows}; "
                        "every argument needs one row per example.")
    if rows[0] == 0:
        raise DataError("the data have no rows; pass at least one example (one row per example along the first "
                        "dimension).")
    return args


def _as_tensor(value, index: int) -> torch.Tensor:
    if isinstance(value, np.ndarray):
        if not (np.issubdtype(value.dtype, np.number) or value.dtype == bool):
            raise DataError(f"data argument {index} has dtype {value.dtype}; pass numeric arrays.")
        value = torch.as_tensor(value, device="cpu")
    if not isinstance(value, torch.Tensor):
        raise DataError(f"data argument {index} is a {type(value).__name__}; pass tensors or numpy arrays.")
    if value.dim() == 0:
        raise DataError(f"data argument {index} is a scalar; pass one row per example along the first dimension.")
    if value.is_floating_point():
        if not bool(torch.isfinite(value).all()):
            raise DataError(f"data argument {index} holds NaN or infinite values; drop or impute those rows first.")
        if value.dtype == torch.float64:
            value = value.to(torch.get_default_dtype())
    return value


def user_setup(model: Callable, dataset: Dataset) -> Setup:
    """The user's model as it is; checked once on the training data: it runs and scores its data, it has a
    latent site for a guide, and it broadcasts over a batch of draws left of its plates."""
    try:
        trace = model_trace(model, dataset.train)
        trace.compute_log_prob()  # an observation of the wrong dtype fails only here
    except Exception as error:  # the user's code: any failure is reported as what it is
        raise ZooError(f"calling {getattr(model, '__name__', 'the model')}(*data) failed with "
                       f"{first_line(error)}; check the data's order, shapes and dtypes (the model's "
                       "positional arguments, observations last).") from None
    if not any(is_latent(site) for site in trace.nodes.values()):
        raise ZooError("the model has no latent sample sites a guide could fit (every pyro.sample is observed "
                       "or enumerated); there is no posterior to approximate.")
    nesting = plate_nesting(trace)
    check_vectorises(model, dataset.train, trace, nesting)
    return Setup(model=model, batch_keyword=None, max_plate_nesting=nesting)


def plate_nesting(trace) -> int:
    """How many batch dimensions the model's sites use (its plates', at least one): draws go left of them."""
    sites = [site for site in trace.nodes.values() if site["type"] == "sample" and not site_is_subsample(site)]
    plates = [-frame.dim for site in sites for frame in site["cond_indep_stack"] if frame.vectorized]
    return max([1] + plates + [len(site["fn"].batch_shape) for site in sites])


def check_vectorises(model: Callable, args, alone, nesting: int, num_draws: int = 3) -> None:
    """The runner draws particles and posterior samples as a batch at dimension ``-(nesting + 1)``, left
    of the model's plates. Each site must then have its batch shape from ``alone`` (a trace without the
    draws) with the draws on the left; a model that fails or whose sites grow otherwise gets one line."""
    how = ("the runner batches draws that way, so the model must broadcast over leading dimensions "
           "(e.g. (x * weight).sum(-1) instead of x @ weight, a[..., index] instead of a[index], and a "
           "pyro.plate over the data's rows rather than .to_event(1) over them)")
    try:
        with torch.no_grad(), pyro.poutine.block(), pyro.plate("_draws", num_draws, dim=-(nesting + 1)):
            trace = pyro.poutine.trace(model).get_trace(*args)
    except Exception as error:
        raise ZooError(f"the model fails when its latents carry a batch of {num_draws} draws on the left "
                       f"({first_line(error)}); {how}.") from None
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or site_is_subsample(site) or name not in alone.nodes:
            continue
        shape = tuple(alone.nodes[name]["fn"].batch_shape)
        expected = (num_draws,) + (1,) * (nesting - len(shape)) + shape
        batch = tuple(site["fn"].batch_shape)
        if batch != expected:
            raise ZooError(f"site {name!r} has batch shape {batch} when the latents carry a batch of {num_draws} "
                           f"draws on the left (alone it has {shape}, so {expected} was expected); {how}.")


def _evaluate(fit, dataset, num_samples):
    if dataset.test is None:
        return {}
    local = per_row_latents(fit.model, dataset.train)
    if local:
        warnings.warn(f"no held-out scores for {fit.guide_name}: the latent site(s) {', '.join(map(repr, local))} hold "
                      "one value per training row, and the guide has none for new rows (the ELBO and k-hat on the "
                      "training rows are kept)", Note)
        return {}
    return heldout_scores(fit, dataset.test, num_samples)


def per_row_latents(model: Callable, args) -> list:
    """The latent sites inside a plate over the data's rows: a guide fitted to them says nothing of new rows."""
    rows = int(args[0].shape[0])
    return [name for name, site in model_trace(model, args).nodes.items() if is_latent(site)
            and any(frame.vectorized and (frame.full_size or frame.size) == rows for frame in site["cond_indep_stack"])]
