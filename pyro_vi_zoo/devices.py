"""Device choice: ``auto`` means CUDA when available, else the CPU; ``cuda:N`` picks a GPU."""

import re

import torch

from .errors import ZooError

DEVICE_HELP = "auto (CUDA when available), cpu, cuda or cuda:N"


def device_name(name: str) -> str:
    """``name`` if it is a device the zoo understands (for argparse), else a :class:`ZooError`."""
    if name in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:\d+", name):
        return name
    raise ZooError(f"unknown device {name!r}; choose {DEVICE_HELP}.")


def resolve_device(name="auto") -> torch.device:
    """The :class:`torch.device` for ``name``; asking for a CUDA device that is not there is a :class:`ZooError`."""
    name = device_name(str(name))
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ZooError(f"device {name!r} was asked for but CUDA is not available on this machine; "
                           "use --device cpu (or auto).")
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ZooError(f"device {name!r} was asked for but this machine has {torch.cuda.device_count()} "
                           "CUDA device(s); pick another index.")
        return device
    return torch.device("cpu")
