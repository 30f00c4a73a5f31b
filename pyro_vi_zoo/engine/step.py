"""One SVI step and the loop that runs it, with no host synchronisation per step.

It follows Pyro's PyTorch-native idiom (``examples/svi_torch.py``): the ELBO is
an ``nn.Module`` built by ``elbo(model, guide)``, one warm-up call creates the
guide's lazy parameters, then a plain ``torch.optim`` optimiser runs. Each step
has its own parameters (module-local, in a param-store scope of its own). The
loop reads the loss back only every ``log_every`` steps, where it also checks
that the loss is finite.
"""

import functools
import warnings
from typing import Callable, Dict, Optional

import pyro
import torch
import torch._dynamo  # noqa: F401  (torch imports it with the first optimiser: a second kept out of fit timings)
from pyro import infer

from ..errors import DivergenceError, ZooError
from .batches import BatchFeeder, copy_into, snapshot
from .capture import CaptureFallback, GraphedUpdate, RecordingFailed, wants_capture
from .distributed import world
from .elbos import SyncFreeMeanFieldELBO, SyncFreeTraceELBO, SyncFreeTraceEnumELBO
from .estimators import DReGELBO, ImportanceWeightedELBO, ScoreFunctionELBO, STLTraceELBO
from .result import parameter_scope
from .settings import FitSettings

ELBOS: Dict[str, Callable] = {
    "trace": SyncFreeTraceELBO,  # Pyro's estimators, without host synchronisation
    "meanfield": SyncFreeMeanFieldELBO,
    "tracegraph": infer.TraceGraph_ELBO,
    "enum": SyncFreeTraceEnumELBO,
    "renyi": functools.partial(infer.RenyiELBO, alpha=0.5),
    "iwae": ImportanceWeightedELBO,  # the importance-weighted bound per example (Burda et al. 2016)
    "iwae_dreg": DReGELBO,  # its doubly reparameterised gradient (Tucker et al. 2018)
    "stl": STLTraceELBO,  # sticking the landing (Roeder et al. 2017)
    "score": ScoreFunctionELBO,  # the score-function (REINFORCE) gradient of the same ELBO
    "jit": infer.JitTrace_ELBO,
    "jit_meanfield": infer.JitTraceMeanField_ELBO,
    "jit_enum": infer.JitTraceEnum_ELBO,
}


def make_elbo(settings: FitSettings, max_plate_nesting: int):
    """The ELBO object that ``settings.elbo`` names, with vectorised particles when there are several."""
    vectorize = settings.num_particles > 1 and settings.elbo != "tracegraph"
    kwargs = dict(num_particles=settings.num_particles, vectorize_particles=vectorize, max_plate_nesting=max_plate_nesting)
    if settings.elbo.startswith("jit"):
        kwargs["ignore_jit_warnings"] = True
    return ELBOS[settings.elbo](**kwargs)


class SVIStep:
    """One SVI step for a model and guide: loss, backward, (clipping), optimiser and schedule.

    ``build_guide()`` makes the guide inside this step's own parameter scope
    (module-local parameters must exist at construction). Building the step runs
    the warm-up call that creates the guide's parameters; calling
    it makes one step and returns the loss as a detached tensor on the device, with
    no host synchronisation of its own. Build and call it inside ``scope``.
    """

    def __init__(self, model, build_guide, args, kwargs, settings: FitSettings, max_plate_nesting: int,
                 feeder: Optional[BatchFeeder] = None, stream_seed: Optional[int] = None):
        self.settings, self.feeder = settings, feeder
        self.world = world()
        if feeder is not None:  # the inputs become tensors of this step's own, refilled with every batch
            args, kwargs = feeder.batch(0)
            self.first_batch = (snapshot(tuple(args)), snapshot(dict(kwargs)))  # what later batches need not copy
            args = tuple(a.clone() if isinstance(a, torch.Tensor) else a for a in args)
            kwargs = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        self.args, self.kwargs = tuple(args), dict(kwargs)
        self.param_state = {"params": {}, "constraints": {}}
        # Pyro's JIT finds parameters by name in the param store, so JIT ELBOs keep module
        # parameters there; the scope still gives every fit a store of its own.
        self.module_local = not settings.elbo.startswith("jit")
        with self.scope():
            self.model, self.guide = model, build_guide()
            self.elbo = make_elbo(settings, max_plate_nesting)
            # ELBOs with a differentiable loss run as an nn.Module; the others
            # (TraceGraph, Rényi) compute their own surrogate gradients
            self.differentiable = hasattr(self.elbo, "differentiable_loss")
            self.loss_fn = self.elbo(model, self.guide) if self.differentiable else None
            self._loss()  # the warm-up call creates the guide's lazy parameters
            self.params = self._collect_parameters()
        if not self.params:
            raise ZooError("the guide has no parameters to fit; check that it calls pyro.param or is an AutoGuide.")
        # data-parallel: every replica starts from rank 0's parameters and draws its own noise
        self.world.synchronise(self.params, settings.seed if stream_seed is None else stream_seed)
        self.gamma = settings.lr_decay ** (1.0 / settings.steps)
        device = self.params[0].device
        self.graphed = None
        if wants_capture(settings.capture, device, settings.elbo, self.world.size, settings.validate) \
                and self.differentiable and self._recordable():
            # a learning rate that lives on the device and decays inside the recorded step
            self.optimizer = torch.optim.Adam(self.params, lr=torch.tensor(settings.lr, device=device), capturable=True)
            self.schedule = None
            self.graphed = GraphedUpdate(self._update, device)
        else:
            self._eager_optimizer(settings.lr)

    def _eager_optimizer(self, lr: float) -> None:
        self.optimizer = _adam(self.params, lr)
        self.schedule = torch.optim.lr_scheduler.ExponentialLR(self.optimizer, self.gamma) if self.gamma < 1 else None

    def _run_eagerly(self, why: str) -> None:
        """From now on the step runs eagerly, with the fused Adam, carrying over the optimiser's state."""
        warnings.warn(f"running eagerly: {why}", CaptureFallback)
        state = self.optimizer_state()
        self.graphed = None
        self._eager_optimizer(state["param_groups"][0]["lr"])
        self.load_optimizer_state(state)

    def optimizer_state(self) -> dict:
        """The optimiser's state, with its learning rate as a number whether or not the step is recorded, so that
        a checkpoint written by a recorded step resumes in an eager one and the other way round."""
        state = self.optimizer.state_dict()
        for group in state["param_groups"]:
            group["lr"] = float(group["lr"])
        return state

    def load_optimizer_state(self, state: dict) -> None:
        """Put :meth:`optimizer_state` into this step's optimiser, keeping its own kind (recorded or eager)."""
        own = [{key: group[key] for key in ("lr", "capturable", "fused") if key in group}
               for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(state)
        for group, kept in zip(self.optimizer.param_groups, own):
            lr = float(group["lr"])
            group.update(kept)
            self.set_lr(lr, group)
            on_device = group.get("capturable") or group.get("fused")
            dtype = _step_dtype(bool(group.get("fused")))
            for parameter in group["params"]:
                moments = self.optimizer.state.get(parameter, {})
                if "step" in moments:  # a recorded or fused Adam counts steps on the device, the plain one on the CPU
                    moments["step"] = moments["step"].to(parameter.device if on_device else "cpu", dtype)

    def set_lr(self, lr: float, group: Optional[dict] = None) -> None:
        """Set the learning rate (of one parameter ``group``, else all): in place where it is a device tensor,
        which a recorded step reads at every replay."""
        for each in [group] if group is not None else self.optimizer.param_groups:
            if isinstance(each["lr"], torch.Tensor):
                each["lr"].fill_(lr)
            else:
                each["lr"] = lr

    def _recordable(self) -> bool:
        """False, with one line saying why, when the warm-up call found that the ELBO reads values back."""
        reason = getattr(self.elbo, "reads_back", None)
        if reason:
            warnings.warn(f"running eagerly: {reason}", CaptureFallback)
        return not reason

    def _collect_parameters(self):
        store = pyro.get_param_store()
        modules = [module for module in (self.model, self.guide) if isinstance(module, torch.nn.Module)]
        candidates = [p for module in modules for p in module.parameters()]
        candidates += [store[name].unconstrained() for name in store.keys()]
        return list({id(p): p for p in candidates}.values())

    def _loss(self) -> torch.Tensor:
        if self.differentiable:
            return self.loss_fn(*self.args, **self.kwargs)
        with torch.no_grad():
            return torch.as_tensor(self.elbo.loss(self.model, self.guide, *self.args, **self.kwargs))

    def scope(self):
        return parameter_scope(self.param_state, self.module_local)

    def load(self, args, kwargs) -> None:
        """Copy a minibatch into this step's input tensors (the shapes stay those of the warm-up batch)."""
        first_args, first_kwargs = self.first_batch
        copy_into(self.args, tuple(args), first_args)
        copy_into(self.kwargs, dict(kwargs), first_kwargs)

    def __call__(self) -> torch.Tensor:
        """One step; returns the loss as a device tensor (a recorded step's own output tensor when captured)."""
        if self.graphed is not None:
            try:
                loss = self.graphed()
            except RecordingFailed as error:  # a model or guide that cannot be recorded
                self._run_eagerly(f"recording the step as a CUDA graph failed ({error})")
            else:
                if self.graphed.refused:  # found before recording: this step ran, the next ones run eagerly
                    self._run_eagerly(self.graphed.refused)
                return loss
        return self._update()

    def _update(self) -> torch.Tensor:
        captured = self.graphed is not None
        self.optimizer.zero_grad(set_to_none=not captured)  # a recorded step keeps its gradient tensors
        if self.differentiable:
            loss = self.loss_fn(*self.args, **self.kwargs)
            loss.backward()
        else:
            loss = torch.as_tensor(self.elbo.loss_and_grads(self.model, self.guide, *self.args, **self.kwargs))
        if self.world.parallel:
            loss = self._average_over_replicas(loss)
        if self.settings.optimizer == "clipped_adam":
            torch.nn.utils.clip_grad_norm_(self.params, self.settings.clip_norm, foreach=True)
        self.optimizer.step()
        if self.schedule is not None:
            self.schedule.step()
        elif self.gamma < 1:  # a learning rate on the device (kept when a recording falls back to eager)
            for group in self.optimizer.param_groups:
                group["lr"].mul_(self.gamma)
        return loss.detach()

    def _average_over_replicas(self, loss: torch.Tensor) -> torch.Tensor:
        """The replicas' mean gradients (in place) and mean loss: the gradient of the global batch."""
        for parameter in self.params:
            if parameter.grad is None:  # a parameter this replica's batch did not reach
                parameter.grad = torch.zeros_like(parameter)
        mean_loss = loss.detach().reshape(1).to(self.params[0].device, copy=True)
        self.world.average([parameter.grad for parameter in self.params] + [mean_loss])
        return mean_loss[0]


def _step_dtype(fused: bool) -> torch.dtype:
    """The dtype torch's Adam keeps its step count in (float32 when fused, else torch's default)."""
    try:
        from torch.optim.optimizer import _get_scalar_dtype
        return _get_scalar_dtype(is_fused=fused)
    except (ImportError, TypeError):
        return torch.float32 if fused else torch.get_default_dtype()


def _adam(params, lr):
    """Adam, fused into one kernel where this torch and device allow (the per-parameter loop costs more than the maths)."""
    try:
        return torch.optim.Adam(params, lr=lr, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.Adam(params, lr=lr)


def run_steps(step: SVIStep, num_steps: int, losses: torch.Tensor, start: int, bar=None, checkpoints=None) -> None:
    """Run ``num_steps`` steps, writing losses into ``losses[start:]``; check finiteness every ``log_every``,
    and write ``checkpoints`` when they are due."""
    log_every = step.settings.log_every
    checked = start
    # the warm-up call validated every distribution; re-checking them at each step costs a quarter of the step
    with step.scope(), pyro.validation_enabled(step.settings.validate):
        for index in range(start, start + num_steps):
            if step.feeder is not None:
                step.load(*step.feeder.batch(index))
            try:
                losses[index] = step()
            except ValueError as error:  # distribution validation refusing NaN parameters
                if all(bool(torch.isfinite(p).all()) for p in step.params):
                    raise
                raise DivergenceError(index, _divergence_message(f"the parameters became non-finite at step {index}",
                                                                 step.settings)) from error
            if index + 1 - checked >= log_every or index + 1 == start + num_steps:
                _check_finite(losses, checked, index + 1, step.settings)
                if bar is not None:
                    bar.update(index + 1 - checked)
                    bar.set_postfix(loss=f"{float(losses[checked:index + 1].mean()):.4g}", refresh=False)
                checked = index + 1
            if checkpoints is not None and checkpoints.due(index + 1):
                _check_finite(losses, checked, index + 1, step.settings)
                checkpoints.save(step, losses, index + 1)


def _check_finite(losses: torch.Tensor, start: int, stop: int, settings: FitSettings) -> None:
    window = losses[start:stop]
    finite = torch.isfinite(window)
    if bool(finite.all()):
        return
    first = start + int((~finite).nonzero()[0, 0])
    raise DivergenceError(first, _divergence_message(f"the loss became {float(losses[first])} at step {first}", settings))


def _divergence_message(what: str, settings: FitSettings) -> str:
    return (f"{what}; try a smaller --lr (now {settings.lr}), --optimizer clipped_adam, "
            "more --num-particles, or check the data for extreme values.")


