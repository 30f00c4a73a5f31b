"""The whole SVI step recorded once as a CUDA graph and replayed (the zoo's answer to "Pyro is slow").

A Pyro step is hundreds of small kernels launched from Python (tracing the guide, replaying the model,
log-probability sums, backward, Adam); on a GPU the launches cost more than the arithmetic. Recorded
once with ``torch.cuda.graph`` after a few eager warm-up steps on a side stream, the step replays as
one launch. What it needs, and the engine provides: a sync-free ELBO (:mod:`.elbos`), Adam with
``capturable=True`` and its learning rate as a device tensor decayed inside the step, gradient clipping
on the device, minibatches copied into the step's own input tensors, and validation off. Whatever
cannot be recorded runs eagerly, with one line that says why: the last warm-up step looks for numbers
copied from the host and values read back to it (the common causes, named with their line of code) and
asks torch for the synchronisations it makes itself; a recording that still fails says what CUDA said,
and leaves the stream and the random state as they were.
"""

import contextlib
import os
import traceback
import warnings
from typing import List, Optional

import pyro
import torch
from torch.overrides import TorchFunctionMode

from ..errors import Note, ZooError

CAPTURE_CHOICES = ("auto", "on", "off")
CAPTURABLE_ELBOS = ("trace", "meanfield", "enum", "stl", "score", "iwae", "iwae_dreg")
WARMUP_STEPS = 3
#: code that is not the user's: a tensor made from Python data is reported where the user's code asked for it
_LIBRARIES = tuple(os.path.dirname(module.__file__) for module in (torch, pyro)) + (__file__, warnings.__file__)


class CaptureFallback(Note):
    """The step runs eagerly instead of as a CUDA graph; the message says why."""


def may_record(choice: str, device: torch.device) -> bool:
    """Whether ``--capture`` lets a step on ``device`` be recorded at all: not ``off``, and on CUDA."""
    return choice != "off" and device.type == "cuda"


def wants_capture(choice: str, device: torch.device, elbo: str, replicas: int = 1, validate: bool = False) -> bool:
    """Whether to record the step: ``auto`` on CUDA, ``on`` (CUDA required), ``off``; an ELBO that
    reads values back to the host, a data-parallel step (``replicas`` > 1, whose all-reduce this
    version does not record) or one that ``validate``s its distributions (on the host) runs eagerly
    with a :class:`CaptureFallback` warning."""
    if choice not in CAPTURE_CHOICES:
        raise ZooError(f"unknown capture {choice!r}; choose one of: {', '.join(CAPTURE_CHOICES)}.")
    if choice == "on" and device.type != "cuda":
        raise ZooError(f"--capture on records the step as a CUDA graph, but this fit runs on {device}; "
                       "use --device cuda, or --capture auto/off.")
    if not may_record(choice, device):
        return False
    if replicas > 1:
        if choice == "on":
            raise ZooError(f"--capture on does not apply to a data-parallel fit ({replicas} processes): the step's "
                           "gradient all-reduce is not recorded in a CUDA graph yet; use --capture auto or off.")
        warnings.warn(f"running eagerly: a data-parallel step ({replicas} processes) all-reduces its gradients, "
                      "which this version does not record in a CUDA graph", CaptureFallback)
        return False
    if validate:
        if choice == "on":
            raise ZooError("--capture on cannot record a step that --validate checks on the host at every step; "
                           "drop one of them.")
        warnings.warn("running eagerly: --validate checks every distribution's arguments on the host at every step",
                      CaptureFallback)
        return False
    if elbo not in CAPTURABLE_ELBOS:
        warnings.warn(f"running eagerly: --elbo {elbo} reads values back to the host each step, which a CUDA "
                      f"graph cannot hold (capturable: {', '.join(CAPTURABLE_ELBOS)})", CaptureFallback)
        return False
    return True


class HostTrafficRecorder(TorchFunctionMode):
    """Records what a CUDA graph cannot hold: a copy from the host at every step (``torch.tensor(1.0)``, a
    number in a distribution, ``.to(device)`` of a CPU tensor) and a value read back to the host (``.item()``,
    ``if`` on a tensor, ``float()``, printing, a boolean mask, ``nonzero``, ``torch.equal``), a synchronisation.
    Only tensors on a device other than the CPU count (any device with ``include_cpu``, which finds on
    the CPU what would sync on a GPU). ``copies`` and ``reads`` name each call and the code that made it.
    Calls are seen as the user's code makes them, not inside torch's own functions: a synchronisation
    inside torch's C++ (``torch.linalg.cholesky``'s check) is what :func:`synchronisations` finds.
    """

    FACTORIES = (torch.tensor, torch.as_tensor, torch.scalar_tensor, torch.Tensor.new_tensor)
    MOVES = (torch.Tensor.to, torch.Tensor.cuda, torch.Tensor.copy_)
    READS = (torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.__bool__, torch.Tensor.__float__,
             torch.Tensor.__int__, torch.Tensor.__index__, torch.Tensor.__format__, torch.Tensor.__repr__,
             torch.Tensor.__str__, torch.Tensor.__contains__, torch.Tensor.nonzero, torch.nonzero,
             torch.Tensor.masked_select, torch.masked_select, torch.Tensor.unique, torch.unique, torch.Tensor.cpu,
             torch.Tensor.numpy, torch.equal, torch.Tensor.equal, torch.allclose, torch.Tensor.allclose)
    #: functions whose result's size is read back unless it is given
    SIZED = {torch.repeat_interleave: "output_size", torch.Tensor.repeat_interleave: "output_size"}

    def __init__(self, include_cpu: bool = False):
        super().__init__()
        self.include_cpu = include_cpu
        self.copies: List[str] = []
        self.reads: List[str] = []

    @property
    def sites(self) -> List[str]:
        return self.copies + self.reads

    def refusal(self) -> Optional[str]:
        """Why the step cannot be recorded, in one line, or None."""
        if self.copies:
            return (f"the step copies a number from the host at every step, {self.copies[0]}; "
                    "make such constants once on the data's device (x.new_full, a buffer)")
        if self.reads:
            return (f"the step reads a value back to the host at every step, {self.reads[0]}; keep its values "
                    "on the device (no .item(), float(), if on a tensor, printing or boolean masks)")
        return None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if args and isinstance(args[0], torch.Tensor) and self._counts(args[0]) and self._reads(func, args, kwargs):
            self.reads.append(f"{func.__name__}() in {_caller()}")
        if func in self.MOVES and isinstance(args[0], torch.Tensor) and self._moves_to_device(func, args):
            self.copies.append(f"{func.__name__}() of a CPU tensor in {_caller()}")
        result = func(*args, **kwargs)
        if func in self.FACTORIES and args:
            data = args[1] if func is torch.Tensor.new_tensor else args[0]
            if not isinstance(data, torch.Tensor) and result.numel() and self._counts(result):
                self.copies.append(f"{func.__name__}({data!r}) in {_caller()}")
        elif func is torch.Tensor.to and isinstance(result, torch.Tensor) and result.device.type == "cpu" \
                and args[0].device.type != "cpu":
            self.reads.append(f"to(cpu) in {_caller()}")
        return result

    def _counts(self, tensor: torch.Tensor) -> bool:
        return self.include_cpu or tensor.device.type != "cpu"

    def _moves_to_device(self, func, args) -> bool:
        """A CPU tensor copied to another device (``copy_``: into one), which costs a copy from the host."""
        if func is torch.Tensor.copy_:
            source, target = args[1], args[0]
            return isinstance(source, torch.Tensor) and source.device.type == "cpu" and target.device.type != "cpu"
        return args[0].device.type == "cpu" and _target_device(func, args) not in (None, "cpu")

    def _reads(self, func, args, kwargs) -> bool:
        if func in self.READS:
            return func is not torch.Tensor.numpy or self.include_cpu  # numpy() of a GPU tensor fails anyway
        if func in self.SIZED:
            return isinstance(args[1] if len(args) > 1 else kwargs.get("repeats"), torch.Tensor) \
                and kwargs.get(self.SIZED[func]) is None
        if func is torch.where:  # torch.where(condition) alone is nonzero
            return len(args) + len(kwargs) == 1
        if func in (torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.index_put_,
                    torch.Tensor.index_put):  # a boolean mask: how many entries it keeps is read back
            index = args[1] if isinstance(args[1], (tuple, list)) else (args[1],)
            return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in index)
        return False


def _target_device(func, args) -> Optional[str]:
    """The device type that ``tensor.to(...)`` or ``tensor.cuda()`` moves to, if it names one."""
    if func is torch.Tensor.cuda:
        return "cuda"
    for argument in args[1:]:
        if isinstance(argument, (str, torch.device)):
            return torch.device(argument).type
        if isinstance(argument, torch.Tensor):
            return argument.device.type
    return None


def _caller() -> str:
    """The innermost frame outside torch, Pyro and this module: the code that asked for the tensor."""
    for frame in reversed(traceback.extract_stack()[:-2]):
        if not frame.filename.startswith(_LIBRARIES):
            return f"{frame.filename}:{frame.lineno} ({(frame.line or '').strip()})"
    return "torch or Pyro"


#: what ``torch.cuda.set_sync_debug_mode("warn")`` says of a synchronising call
SYNC_WARNING = "called a synchronizing CUDA operation"


@contextlib.contextmanager
def synchronisations():
    """Collects where torch synchronised with the host inside the block (the user's line that called it),
    including inside its C++ (what :class:`HostTrafficRecorder` cannot see); torch's other warnings pass
    through, even when the block raises."""
    found: List[str] = []
    others = []

    def show(message, category, filename, lineno, file=None, line=None):
        if SYNC_WARNING in str(message):
            found.append(_caller())  # torch attributes its warning to the innermost Python frame, not the user's
        else:
            others.append((message, category, filename, lineno))

    previous = torch.cuda.get_sync_debug_mode()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = show
            torch.cuda.set_sync_debug_mode("warn")
            try:
                yield found
            finally:
                torch.cuda.set_sync_debug_mode(previous)
    finally:
        for message, category, filename, lineno in others:
            warnings.warn_explicit(message, category, filename, lineno)


class RecordingFailed(RuntimeError):
    """Recording the step as a CUDA graph failed; the message is what CUDA first objected to."""


class GraphedUpdate:
    """Runs ``update()`` eagerly on a side stream for the first steps, then records it and replays it.

    ``update()`` must return the step's loss as a device tensor and do no host synchronisation;
    its inputs must live in tensors that are refilled in place between calls. The last warm-up step
    looks for tensors built from Python data, values read back to the host and torch's own
    synchronisations; where it finds one, ``refused`` says where, and the step is not recorded.
    A recording that fails raises :class:`RecordingFailed` with the current stream and the random
    state as they were, so that the step can go on eagerly.
    """

    def __init__(self, update, device: torch.device):
        self.update = update
        self.device = torch.device(device)
        self.graph: Optional[torch.cuda.CUDAGraph] = None
        self.static_loss: Optional[torch.Tensor] = None
        self.eager_steps = 0
        self.refused: Optional[str] = None
        with torch.cuda.device(self.device):  # streams and graphs belong to a device: this step's, not device 0
            self.stream = torch.cuda.Stream()

    def __call__(self) -> torch.Tensor:
        if self.graph is not None:  # a replay runs on the device it was recorded on
            self.graph.replay()
            return self.static_loss
        with torch.cuda.device(self.device):
            if self.eager_steps < WARMUP_STEPS - 1:
                self.eager_steps += 1
                return self._on_side_stream()
            if self.eager_steps == WARMUP_STEPS - 1:
                self.eager_steps += 1
                with HostTrafficRecorder() as recorder, synchronisations() as syncs:
                    loss = self._on_side_stream()
                self.refused = recorder.refusal() or (
                    f"the step synchronises with the host inside torch at every step, at {syncs[0]} "
                    "(torch.linalg.cholesky and inv check their result on the host: use cholesky_ex, inv_ex)"
                    if syncs else None)
                return loss
            return self._record_then_replay()

    def _on_side_stream(self) -> torch.Tensor:
        self.stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(self.stream):
            loss = self.update()
        torch.cuda.current_stream().wait_stream(self.stream)
        return loss

    def _record_then_replay(self) -> torch.Tensor:
        graph, pool = torch.cuda.CUDAGraph(), torch.cuda.graph_pool_handle()
        generator = torch.cuda.default_generators[self.device.index or 0]
        random_state = generator.clone_state() if hasattr(generator, "clone_state") else None
        first: List[BaseException] = []
        try:
            # torch.cuda.graph leaves its stream current when ending a failed recording raises: this one restores it
            with torch.cuda.stream(self.stream), torch.cuda.graph(graph, pool=pool, stream=self.stream):
                try:
                    self.static_loss = self.update()
                except BaseException as error:
                    first.append(error)
                    raise
        except Exception as error:
            _clean_up_after_failed_recording(self.device, pool, generator, random_state)
            cause = first[0] if first else error
            raise RecordingFailed(str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__) \
                from error
        self.graph = graph
        graph.replay()  # recording does not run the step
        return self.static_loss


def _clean_up_after_failed_recording(device, pool, generator, random_state) -> None:
    """What ending a failed recording skips in torch: the allocator stops sending this stream's memory to the
    graph's pool and releases the pool (a graph releases it only after a recording that ended), and the
    generator leaves its recording state (torch versions that keep one flag for it fail every later draw on
    the device otherwise)."""
    try:
        torch._C._cuda_endAllocateToPool(device.index or 0, pool)
    except Exception:  # torch had ended it: the graph owns the pool and releases it
        pass
    else:
        with contextlib.suppress(Exception):
            torch._C._cuda_releasePool(device.index or 0, pool)
    if random_state is not None:
        with contextlib.suppress(Exception):
            generator.graphsafe_set_state(random_state)
