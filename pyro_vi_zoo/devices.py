"""Device choice: ``auto`` means CUDA when available, else the CPU."""

import torch

from .errors import ZooError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str = "auto") -> torch.device:
    """The :class:`torch.device` for ``name``; asking for CUDA where there is none is a :class:`ZooError`."""
    name = str(name)
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ZooError(
                f"device {name!r} was asked for but CUDA is not available on this machine; "
                "use --device cpu (or auto)."
            )
        return torch.device(name)
    if name == "cpu":
        return torch.device("cpu")
    raise ZooError(f"unknown device {name!r}; choose one of: {', '.join(DEVICE_CHOICES)}.")
