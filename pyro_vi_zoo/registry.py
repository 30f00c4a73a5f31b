"""The model registry: one :class:`ModelSpec` per model family, looked up by name.

A ``ModelSpec`` is the small record (in the spirit of posteriordb's info files)
that tells the shared runner everything model-specific: the Pyro model and its
hand-written guide, how to load data and turn options into model keywords,
which guides make sense, default fit settings, how to score a fitted posterior,
where a reference posterior comes from, and which figures to draw. The runner
(:mod:`pyro_vi_zoo.compare`) knows nothing else about a model.
"""

import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Tuple

from .errors import ZooError


@dataclass(frozen=True)
class Option:
    """A model-specific command-line option.

    ``flag`` is the kebab-case flag (``--noise``); its value reaches
    ``ModelSpec.load_data`` (``target="data"``) or ``ModelSpec.model_kwargs``
    (``target="model"``) under the flag's name in snake case.
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


@dataclass(frozen=True)
class ModelSpec:
    """What the runner needs to know of one model family.

    Attributes:
        name: registry name, e.g. ``"bayes_regression"``.
        description: one line for ``--list`` and the README.
        model: the plain Pyro model ``model(*data, **model_kwargs)``.
        guide: the hand-written mean-field guide, same signature as ``model``.
        load_data: ``load_data(data=None, **data_options) -> Dataset``; ``data=None``
            gives the embedded default; otherwise arrays, a path, or a named data set.
        model_kwargs: ``model_kwargs(dataset, **model_options) -> dict`` of keywords
            for both model and guide (priors, known noise, sizes read off the data).
        guides: the guide names that ``all`` means for this model.
        settings: default :class:`~pyro_vi_zoo.svi.FitSettings` overrides (dict).
        fast_settings: overrides for the fast mode (tests, CI, notebooks' smoke runs).
        evaluate: ``evaluate(fit_result, dataset, num_samples) -> dict`` of
            model-specific metrics (held-out predictive scores and the like).
        reference: ``reference(dataset, model_kwargs, progress=True, fast=False) -> Reference or None``
            (exact where conjugate, else e.g. cached NUTS draws).
        figures: ``figures(fits, dataset, reference) -> dict[name, matplotlib Figure]``
            of model-specific figures; ELBO traces and marginals are drawn for all.
        build_model: ``build_model(dataset, model_kwargs) -> callable`` for models that
            need an object (a PyroModule network); default binds the keywords to ``model``.
        build_guide: like ``build_model`` for the hand-written guide.
        options: model-specific command-line options.
        max_plate_nesting: for vectorised particles and enumeration.
        subsample_kwarg: name of the model keyword for minibatch size, or ``None``.
        latent_sites: sites whose posterior is compared (marginals, reference
            distances); ``None`` means every latent sample site.
        baselines: extra non-Bayesian rows (name -> callable(dataset, model_kwargs, settings) -> dict).
        auto_guide_init: ``auto_guide_init(dataset, model_kwargs) -> init_loc_fn`` for auto guides,
            called afresh for every guide built (so restarts start differently); ``None``
            keeps the auto guides' default (prior means). Mixtures need it: at the prior
            means all components coincide, a saddle that SVI leaves slowly.
        score_model: ``score_model(dataset, model_kwargs) -> callable``, the model a fitted guide
            is scored against (ELBO, PSIS, predictive traces) when it differs from the one
            trained: e.g. the same joint with enumerated discrete sites summed out, since
            importance weights cannot enumerate. ``None``: the trained model.
    """

    name: str
    description: str
    model: Callable
    guide: Callable
    load_data: Callable
    model_kwargs: Callable
    guides: Tuple[str, ...]
    settings: Dict[str, Any] = field(default_factory=dict)
    fast_settings: Dict[str, Any] = field(default_factory=dict)
    evaluate: Optional[Callable] = None
    reference: Optional[Callable] = None
    figures: Optional[Callable] = None
    build_model: Optional[Callable] = None
    build_guide: Optional[Callable] = None
    options: Tuple[Option, ...] = ()
    max_plate_nesting: int = 1
    subsample_kwarg: Optional[str] = "subsample_size"
    latent_sites: Optional[Tuple[str, ...]] = None
    baselines: Dict[str, Callable] = field(default_factory=dict)
    auto_guide_init: Optional[Callable] = None
    score_model: Optional[Callable] = None

    def bind_model(self, dataset, model_kwargs) -> Callable:
        if self.build_model is not None:
            return self.build_model(dataset, model_kwargs)
        return functools.partial(self.model, **model_kwargs)

    def bind_guide(self, dataset, model_kwargs) -> Callable:
        if self.build_guide is not None:
            return self.build_guide(dataset, model_kwargs)
        return functools.partial(self.guide, **model_kwargs)


MODELS: Dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` to :data:`MODELS` under its name (a family module calls this on import)."""
    MODELS[spec.name] = spec
    return spec


def get_spec(name_or_spec) -> ModelSpec:
    """The :class:`ModelSpec` for a name; an unknown name raises a :class:`ZooError` listing the valid ones."""
    if isinstance(name_or_spec, ModelSpec):
        return name_or_spec
    _load_families()
    try:
        return MODELS[name_or_spec]
    except KeyError:
        valid = ", ".join(sorted(MODELS))
        raise ZooError(f"unknown model {name_or_spec!r}; choose one of: {valid}.") from None


def all_specs() -> Dict[str, ModelSpec]:
    """Every registered model, by name (importing the families first)."""
    _load_families()
    return MODELS


def _load_families():
    from . import families  # noqa: F401  (importing registers every family)
