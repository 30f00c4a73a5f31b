"""The model interface: a :class:`Family` is what the runner needs to know of one model.

Five parts a reader can hold in their head: the **data** (``load_data``), the
**model** bound to that data with its hand-written guides (``setup`` returns a
:class:`Setup`), the **guides** that ``all`` means, the **fit defaults**, and
how it is **scored** (a scoring object from :mod:`pyro_vi_zoo.scoring`: the
shared global-latent or local-latent scorer, with the family's own held-out
scores, reference posterior, extra rows and figures).

A family module builds one ``FAMILY``; adding one is its own files plus one
line in :mod:`pyro_vi_zoo.registry`. A user's own Pyro model needs no family:
:func:`pyro_vi_zoo.runner` wraps it in one (:mod:`pyro_vi_zoo.user_model`).
"""

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from .errors import ZooError


@dataclass(frozen=True)
class Option:
    """A family's own command-line option.

    ``flag`` is the kebab-case flag (``--noise``); its value reaches
    ``Family.load_data`` (``target="data"``) or ``Family.setup``
    (``target="model"``) under the flag's name in snake case. ``default`` is
    what applies when the flag is not given (shown in ``--help``).
    """

    flag: str
    help: str
    default: Any = None
    type: Callable = str
    choices: Optional[Tuple[Any, ...]] = None
    target: str = "data"

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass
class Setup:
    """A family's model bound to one data set: what the engine fits and the scorer scores.

    Attributes:
        model: the Pyro model, called as ``model(*dataset.train, **minibatch keywords)``.
        guides: the hand-written guides by name (``"mean_field"``, ...): factories
            that build a fresh guide, so every fit has parameters of its own.
        guide_settings: fit settings a row must run with, by guide name (an IWAE row's
            ELBO and particles); they beat every other setting.
        model_kwargs: the keywords the model was bound to (recorded in the results).
        max_plate_nesting: for vectorised particles and enumeration.
        auto_guide_options: ``() -> dict`` of keywords for auto guides (``init_loc_fn``,
            ``create_plates``), called for every guide built; ``None``: prior means.
        score_model: the model fits are scored against when it differs from the one
            trained (the same joint with enumerated sites summed out).
        compared_sites: sites whose marginals are compared; ``None``: every latent site.
        batch_keyword: the model keyword that takes a minibatch size (a plate that
            subsamples the full data itself); ``None``: no such keyword.
        subsample_keyword: the model keyword that takes that plate's row indices instead
            (``subsample``); data-parallel replicas then share one shuffled order per epoch,
            each taking its part of every global batch. ``None``: each replica's plate draws its own.
        make_batch: for models that take their batch as arguments, ``make_batch(indices)
            -> (args, kwargs)`` for the training rows ``indices``; ``--batch-size`` then
            trains by shuffled epochs (:mod:`pyro_vi_zoo.engine.batches`). It returns fresh
            tensors for each batch; one it returns as the same object every time (the full
            data) is taken as unchanged.
    """

    model: Callable
    guides: Mapping[str, Callable[[], Callable]] = field(default_factory=dict)
    guide_settings: Mapping[str, Dict[str, Any]] = field(default_factory=dict)
    model_kwargs: Dict[str, Any] = field(default_factory=dict)
    max_plate_nesting: int = 1
    auto_guide_options: Optional[Callable[[], Dict[str, Any]]] = None
    score_model: Optional[Callable] = None
    compared_sites: Optional[Tuple[str, ...]] = None
    batch_keyword: Optional[str] = "subsample_size"
    subsample_keyword: Optional[str] = None
    make_batch: Optional[Callable] = None


@dataclass(frozen=True)
class Family:
    """One model family of the zoo.

    Attributes:
        name, description: registry name and one line for ``--list``.
        load_data: ``load_data(data=None, **data_options) -> Dataset``; ``None`` is the
            embedded default, otherwise arrays, a path or a named data set.
        setup: ``setup(dataset, **model_options) -> Setup``.
        guides: the guide names ``all`` means (auto-guide names and ``setup``'s own).
        scoring: how a fitted guide is scored and reported (see :mod:`pyro_vi_zoo.scoring`).
        settings, fast_settings: fit defaults, and those of the fast mode (tests, CI).
        options: the family's command-line options.
    """

    name: str
    description: str
    load_data: Callable
    setup: Callable[..., Setup]
    guides: Tuple[str, ...]
    scoring: Any
    settings: Mapping[str, Any] = field(default_factory=dict)
    fast_settings: Mapping[str, Any] = field(default_factory=dict)
    options: Tuple[Option, ...] = ()

    @property
    def row_names(self) -> Tuple[str, ...]:
        """Every row ``all`` gives: the guides, then the scorer's non-Bayesian baselines."""
        return tuple(self.guides) + tuple(getattr(self.scoring, "baselines", {}))


def parse_widths(value, flag: str = "--hidden", example: str = "50,50") -> Tuple[int, ...]:
    """Layer widths from ``"50"`` / ``"50,50"`` / a sequence of ints; a :class:`ZooError` naming ``flag`` otherwise."""
    try:
        widths = tuple(int(w) for w in (value.split(",") if isinstance(value, str) else value))
    except (TypeError, ValueError):
        widths = ()
    if not widths or min(widths) < 1:
        raise ZooError(f"{flag} must be comma-separated positive layer widths such as {example}; got {value!r}.")
    return widths
