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
from typing import Callable, Tuple

import numpy as np
import pyro
import torch

from .data import Dataset
from .engine import latent_sites
from .errors import DataError, ZooError
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
    """The user's model as it is; checked once on the training data for a latent site."""
    try:
        sites = latent_sites(model, dataset.train)
    except Exception as error:  # the user's code: any failure is reported as what it is
        raise ZooError(f"calling {getattr(model, '__name__', 'the model')}(*data) failed with "
                       f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}; check the data's order and shapes "
                       "(the model's positional arguments, observations last).") from None
    if not sites:
        raise ZooError("the model has no latent sample sites (every pyro.sample is observed); "
                       "there is no posterior to approximate.")
    check_vectorises(model, dataset.train)
    return Setup(model=model, batch_keyword=None)


def check_vectorises(model: Callable, args, num_draws: int = 2) -> None:
    """The runner draws particles and posterior samples as a batch at dimension −2 (left of the data
    plate); a model whose sites grow extra dimensions under such a batch gets a clear error here."""
    with torch.no_grad(), pyro.poutine.block(), pyro.plate("_draws", num_draws, dim=-2):
        trace = pyro.poutine.trace(model).get_trace(*args)
    for name, site in trace.nodes.items():
        if site["type"] != "sample" or pyro.poutine.util.site_is_subsample(site):
            continue
        batch = tuple(site["fn"].batch_shape)
        if len(batch) > 2 or (len(batch) == 2 and batch[0] not in (1, num_draws)):
            raise ZooError(
                f"site {name!r} has batch shape {batch} when the latents carry a batch of {num_draws} draws "
                "on the left; the runner batches draws that way, so the model must broadcast over leading "
                "dimensions (e.g. (x * weight).sum(-1) instead of x @ weight, and bias without unsqueeze).")


def _evaluate(fit, dataset, num_samples):
    return {} if dataset.test is None else heldout_scores(fit, dataset.test, num_samples)
