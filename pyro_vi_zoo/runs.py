"""Run folders written atomically: a reader (or a crash) never sees half a file.

Every file goes to a temporary name beside its target and is renamed into place,
so an interrupted run keeps the last complete version of each result.
"""

import datetime
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Callable

from .errors import ZooError


def make_run_dir(root, model_name: str) -> Path:
    """``root/<model>/<timestamp>/``, created; an unwritable ``root`` is a :class:`ZooError`."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    path = Path(root) / model_name / stamp
    try:
        path.mkdir(parents=True, exist_ok=False)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as error:
        raise ZooError(f"cannot write results under {os.fspath(root)!r} ({error.strerror}); pass a writable --out folder.") from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def atomic_write(path, write: Callable[[str], Any]) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file to ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(handle)
    try:
        write(temporary)
        os.chmod(temporary, 0o666 & ~_UMASK)  # mkstemp makes it private; the result is an ordinary file
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise
    return path


def write_json(path, payload) -> Path:
    """JSON with NaN and infinities written as ``null`` (valid JSON for any reader)."""

    def dump(temporary):
        with open(temporary, "w") as stream:
            json.dump(_json_safe(payload), stream, indent=2, sort_keys=False)
            stream.write("\n")

    return atomic_write(path, dump)


def write_table(directory, table) -> None:
    """``results.csv`` and ``results.json`` (one record per row) of a pandas DataFrame."""
    atomic_write(Path(directory) / "results.csv", lambda temporary: table.to_csv(temporary, index=False))
    write_json(Path(directory) / "results.json", table.to_dict(orient="records"))


def save_figure(figure, path, dpi: int = 110) -> Path:
    """A matplotlib figure as a PNG at ``path``, atomically."""
    return atomic_write(path, lambda temporary: figure.savefig(temporary, dpi=dpi, format="png"))


def atomic_torch_save(obj, path) -> Path:
    """``torch.save`` of ``obj`` at ``path``, atomically."""
    import torch

    return atomic_write(path, lambda temporary: torch.save(obj, temporary))


def _json_safe(value):
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
