"""Images for the VAE: generated 28x28 shapes (offline default), MNIST, Larochelle's binarised MNIST, users' arrays.

Every loader returns an :class:`ImageDataset` whose ``train`` and ``test`` are
``(images,)`` with ``images`` a float32 tensor (n, 784) of values in [0, 1].

Binarisation. The VAE's likelihood is Bernoulli, so the pixels it sees are 0/1.

* ``"dynamic"`` (the protocol of Burda et al., "Importance weighted autoencoders",
  ICLR 2016): training images stay grey and the training loop draws a fresh
  Bernoulli image with :func:`binarize` each time an image is used; the test
  images are binarised once, by a Bernoulli draw seeded with ``seed`` (never by a
  threshold), so every fit is scored on the same binary test set.
* ``"fixed"``: every image is binarised once (seeded), e.g. Larochelle & Murray's
  binarised MNIST, which arrives that way.

Sources.

* :func:`synthetic_images`: eight classes of strokes and shapes with random
  position, size, angle, thickness and brightness, drawn in code.
* :func:`read_mnist`: LeCun, Cortes & Burges' MNIST, the four IDX files
  ``{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (60 000 / 10 000 images).
* :func:`read_binarized_mnist`: ``binarized_mnist_{train,valid,test}.amat[.gz]`` of
  Larochelle & Murray, "The neural autoregressive distribution estimator",
  AISTATS 2011 (50 000 / 10 000 / 10 000 rows of 784 0/1 values). As usual for
  VAE likelihoods, train and valid together are the training set (60 000).
* :func:`load_images`: any of these by name, reading ``data_dir`` or downloading
  once into ``cache_dir()/mnist`` (resp. ``binarized-mnist``), each file checked
  against its known sha256. Users' arrays go through :func:`images_from_arrays`.

Anything wrong with the input is a :class:`~pyro_vi_zoo.errors.DataError` that
names the problem and the fix.
"""

import gzip
import hashlib
import shutil
import struct
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

import numpy as np
import torch

from ..cache import cache_dir as zoo_cache_dir
from ..errors import DataError, ZooError
from ..runs import atomic_write
from .dataset import Dataset

__all__ = [
    "ImageDataset", "binarize", "synthetic_images", "images_from_arrays", "read_mnist", "read_binarized_mnist",
    "load_images", "download_mnist", "download_binarized_mnist", "fetch_url",
    "IMAGE_DATASETS", "BINARIZATIONS", "SYNTHETIC_CLASSES", "MNIST_SHA256", "BINARIZED_MNIST_SHA256",
]

IMAGE_SHAPE = (28, 28)
NUM_PIXELS = IMAGE_SHAPE[0] * IMAGE_SHAPE[1]
IMAGE_DATASETS = ("synthetic", "mnist", "binarized-mnist")
BINARIZATIONS = ("dynamic", "fixed")

IDX_IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dimensions
IDX_LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dimension
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
#: the official-equivalent mirror of yann.lecun.com/exdb/mnist/ (byte-identical files)
MNIST_URL = "https://storage.googleapis.com/cvdf-datasets/mnist/{file}"
#: sha256 of the four original .gz files (as listed by tensorflow_datasets)
MNIST_SHA256 = {
    "train-images-idx3-ubyte.gz": "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609",
    "train-labels-idx1-ubyte.gz": "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c",
    "t10k-images-idx3-ubyte.gz": "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6",
    "t10k-labels-idx1-ubyte.gz": "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6",
}

BINARIZED_MNIST_SPLITS = ("train", "valid", "test")
BINARIZED_MNIST_URL = "http://www.cs.toronto.edu/~larocheh/public/datasets/binarized_mnist/binarized_mnist_{split}.amat"
#: sha256 of the uncompressed .amat text files (as listed by tensorflow_datasets); the cache keeps them gzipped
BINARIZED_MNIST_SHA256 = {
    "train": "ad693b29f94c14277b095f5238ddefbbdaaae0939789dd2f4f0205278cee3e4d",
    "valid": "1de3d397c40fe8eeb33dafd4099a1f665ec01e96d9be234aaeeac8a34930e2e2",
    "test": "e6687bfea3f820c174f33b7865140b2a2dd2930ef786f35d45795fc193b5ab2c",
}

SYNTHETIC_CLASSES = ("vertical bar", "horizontal bar", "diagonal", "cross", "corner", "box", "ring", "disc")


@dataclass
class ImageDataset(Dataset):
    """Images (n, 784) in [0, 1] for the VAE, with their labels where known and how they are binarised.

    ``binarization == "dynamic"``: ``train`` is grey and must be binarised with
    :func:`binarize` each time a batch is used; ``test`` is already 0/1.
    ``"fixed"``: both are 0/1 already.
    """

    train_labels: Optional[np.ndarray] = None
    test_labels: Optional[np.ndarray] = None
    binarization: str = "dynamic"
    image_shape: Tuple[int, int] = IMAGE_SHAPE


def binarize(images: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """One Bernoulli draw per pixel with the grey value as its probability (dynamic binarisation).

    ``generator`` must live on the images' device; ``None`` uses torch's default
    generator of that device (which a CUDA graph can capture).
    """
    return torch.bernoulli(images, generator=generator)


def images_from_arrays(train_images, test_images=None, *, train_labels=None, test_labels=None,
                       binarization: str = "dynamic", seed: int = 0, name: str = "user_images") -> ImageDataset:
    """Users' images as a data set: arrays or tensors (n, 784) or (n, 28, 28) with values in [0, 1].

    ``binarization``: ``"dynamic"`` keeps the training images grey and binarises
    the test images once; ``"fixed"`` binarises both once; either draw is seeded
    by ``seed`` (test images first, then training images). No test set: ``test`` is ``None``.
    """
    if binarization not in BINARIZATIONS:
        raise ZooError(f"unknown binarization {binarization!r}; choose one of: {', '.join(BINARIZATIONS)}.")
    train = torch.from_numpy(_as_images(train_images, "training images"))
    test = None if test_images is None else torch.from_numpy(_as_images(test_images, "test images"))
    train_labels = _as_labels(train_labels, len(train), "training labels")
    test_labels = None if test is None else _as_labels(test_labels, len(test), "test labels")
    generator = torch.Generator().manual_seed(seed)
    if test is not None:
        test = binarize(test, generator)
    if binarization == "fixed":
        train = binarize(train, generator)
    return ImageDataset(name=name, train=(train,), test=None if test is None else (test,),
                        train_labels=train_labels, test_labels=test_labels, binarization=binarization)


def _as_images(values, what: str) -> np.ndarray:
    """``values`` as a new float32 (n, 784) array in [0, 1] (never a view of the caller's), or a DataError."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.array(values, dtype=np.float32, order="C")
    except (TypeError, ValueError) as error:
        raise DataError(f"{what} must be numeric; could not convert them ({error}).") from None
    if array.ndim == 3 and array.shape[1:] == IMAGE_SHAPE:
        array = array.reshape(len(array), NUM_PIXELS)
    if array.ndim != 2 or array.shape[1] != NUM_PIXELS:
        raise DataError(f"{what} have shape {array.shape}, not 28x28 images: pass (n, 784) or (n, 28, 28); "
                        "resize other images to 28x28 first.")
    if len(array) == 0:
        raise DataError(f"{what} are empty; pass at least one image.")
    if not np.all(np.isfinite(array)):
        raise DataError(f"{what} hold NaN or infinite values; drop or repair those images.")
    low, high = float(array.min()), float(array.max())
    if low < 0.0 or high > 1.0:
        raise DataError(f"{what} have values outside [0, 1] (from {low:g} to {high:g}); scale them into [0, 1], "
                        "e.g. divide 8-bit pixel values by 255.")
    return array


def _as_labels(labels, count: int, what: str) -> Optional[np.ndarray]:
    if labels is None:
        return None
    array = np.asarray(labels).astype(np.int64).ravel()
    if len(array) != count:
        raise DataError(f"{what} count {len(array)} does not match the image count {count}; "
                        "pass one label per image, in the same order.")
    return array


# ----------------------------------------------------------------------------- synthetic images


def synthetic_images(num_train: int = 2000, num_test: int = 500, seed: int = 0,
                     binarization: str = "dynamic") -> ImageDataset:
    """Generated 28x28 grey images of :data:`SYNTHETIC_CLASSES` (labels 0..7), for offline runs.

    Each image is one shape (strokes, a ring, a box, a disc) at a random position,
    size, angle, stroke width and brightness, drawn with soft (Gaussian) edges
    like anti-aliased pen strokes on a black background, so pixels are strongly
    correlated and a VAE has structure to learn. Deterministic per ``seed``.
    """
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(SYNTHETIC_CLASSES), size=num_train + num_test)
    images = _draw_shapes(labels, rng)
    return images_from_arrays(images[:num_train], images[num_train:] if num_test else None,
                              train_labels=labels[:num_train], test_labels=labels[num_train:] if num_test else None,
                              binarization=binarization, seed=seed, name="synthetic")


def _draw_shapes(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Images (n, 28, 28) in [0, 1]: each label's shape with random pose, size, width and brightness."""
    n = len(labels)
    center = 13.5 + np.clip(rng.normal(0.0, 1.5, size=(n, 2)), -3.0, 3.0)
    angle = rng.normal(0.0, 0.15, size=n)
    size = rng.uniform(7.5, 11.0, size=n)
    width = rng.uniform(0.9, 1.6, size=n)
    brightness = rng.uniform(0.75, 1.0, size=n)
    rows, columns = np.meshgrid(np.arange(28.0), np.arange(28.0), indexing="ij")
    # pixel coordinates in each image's own frame: centred, rotated, in units of its size
    dy, dx = rows[None] - center[:, 0, None, None], columns[None] - center[:, 1, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = (cos * dx + sin * dy) / size[:, None, None], (-sin * dx + cos * dy) / size[:, None, None]
    distance = np.empty((n, 28, 28))
    for label, shape_distance in enumerate(_SHAPE_DISTANCES):
        chosen = labels == label
        distance[chosen] = shape_distance(u[chosen], v[chosen])
    distance *= size[:, None, None]  # back to pixels
    images = brightness[:, None, None] * np.exp(-0.5 * (distance / width[:, None, None]) ** 2)
    return images.astype(np.float32)


def _segments_distance(u, v, segments):
    """Distance from points (u, v) to the nearest of the segments ((u0, v0), (u1, v1))."""
    nearest = np.full(u.shape, np.inf)
    for (u0, v0), (u1, v1) in segments:
        du, dv = u1 - u0, v1 - v0
        t = np.clip(((u - u0) * du + (v - v0) * dv) / (du * du + dv * dv), 0.0, 1.0)
        nearest = np.minimum(nearest, np.hypot(u - u0 - t * du, v - v0 - t * dv))
    return nearest


_SHAPE_DISTANCES = (
    lambda u, v: _segments_distance(u, v, [((0, -1), (0, 1))]),
    lambda u, v: _segments_distance(u, v, [((-1, 0), (1, 0))]),
    lambda u, v: _segments_distance(u, v, [((-0.7, 0.7), (0.7, -0.7))]),
    lambda u, v: _segments_distance(u, v, [((0, -1), (0, 1)), ((-1, 0), (1, 0))]),
    lambda u, v: _segments_distance(u, v, [((-0.5, -1), (-0.5, 1)), ((-0.5, 1), (0.6, 1))]),
    lambda u, v: _segments_distance(u, v, [((-0.6, -0.6), (0.6, -0.6)), ((0.6, -0.6), (0.6, 0.6)),
                                           ((0.6, 0.6), (-0.6, 0.6)), ((-0.6, 0.6), (-0.6, -0.6))]),
    lambda u, v: np.abs(np.hypot(u, v) - 0.7),
    lambda u, v: np.maximum(np.hypot(u, v) - 0.4, 0.0),
)


# ----------------------------------------------------------------------------- MNIST (IDX files)


def read_mnist(folder, *, binarization: str = "dynamic", seed: int = 0, num_train: Optional[int] = None,
               num_test: Optional[int] = None, checksums: Optional[Dict[str, str]] = None) -> ImageDataset:
    """MNIST from ``folder``'s four IDX files (gzipped ``*-ubyte.gz``, or uncompressed ``*-ubyte``).

    Pixels are scaled to [0, 1] by 1/255; ``num_train``/``num_test`` keep the first
    rows of each split (all when ``None``). ``checksums`` maps a file name to its
    expected sha256 (:data:`MNIST_SHA256`); files not named there are not checked.
    """
    folder = _existing_folder(folder, "MNIST", "the four IDX files train-images-idx3-ubyte.gz, "
                              "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz")
    arrays = {key: _read_idx(_find_file(folder, stem), key.endswith("images"), checksums or {})
              for key, stem in MNIST_FILES.items()}
    for split in ("train", "test"):
        _check_idx_pair(arrays[f"{split}_images"], arrays[f"{split}_labels"], folder, split)
    to_unit = lambda pixels: pixels.reshape(len(pixels), NUM_PIXELS).astype(np.float32) / 255.0
    return images_from_arrays(
        to_unit(arrays["train_images"][:num_train]), to_unit(arrays["test_images"][:num_test]),
        train_labels=arrays["train_labels"][:num_train], test_labels=arrays["test_labels"][:num_test],
        binarization=binarization, seed=seed, name="mnist",
    )


def _find_file(folder: Path, stem: str, data_set: str = "all four MNIST IDX files") -> Path:
    for path in (folder / f"{stem}.gz", folder / stem):
        if path.is_file():
            return path
    raise DataError(f"missing file {folder / (stem + '.gz')} (nor {folder / stem}); put {data_set} in that "
                    "folder, or leave out the folder (--data-dir; data_dir from Python) to download them.")


def _read_idx(path: Path, is_images: bool, checksums: Dict[str, str]) -> np.ndarray:
    """The uint8 array of one IDX file, its header (magic number, dimensions) checked against its size."""
    content = _read_content(path, checksums.get(path.name), checksum_of="file")
    magic, ndim, kind = (IDX_IMAGES_MAGIC, 3, "images") if is_images else (IDX_LABELS_MAGIC, 1, "labels")
    header_size = 4 * (1 + ndim)
    if len(content) < header_size:
        raise DataError(f"{path} is truncated: {len(content)} bytes, shorter than the {header_size}-byte IDX "
                        "header; download it again.")
    found, *dims = struct.unpack(f">{1 + ndim}i", content[:header_size])
    if found != magic:
        raise DataError(f"{path} has magic number {found}, not {magic} of an IDX {kind} file; "
                        "is it the right file (or a damaged one)? Replace it with the original.")
    if is_images and tuple(dims[1:]) != IMAGE_SHAPE:
        raise DataError(f"{path} holds {dims[1]}x{dims[2]} images, not 28x28; MNIST images are 28x28 (784 pixels).")
    expected = int(np.prod(dims))
    if len(content) - header_size != expected:
        raise DataError(f"{path} is truncated or corrupt: its header promises {expected} bytes of {kind}, "
                        f"it holds {len(content) - header_size}; download it again.")
    return np.frombuffer(content, np.uint8, offset=header_size).reshape(dims)


def _check_idx_pair(images: np.ndarray, labels: np.ndarray, folder: Path, split: str) -> None:
    if len(images) != len(labels):
        raise DataError(f"the {split} label count {len(labels)} does not match its {len(images)} images in "
                        f"{folder}; the label file belongs to another set or is damaged: replace it.")


# ----------------------------------------------------------------------------- binarised MNIST (.amat text)


def read_binarized_mnist(folder, *, num_train: Optional[int] = None, num_test: Optional[int] = None,
                         checksums: Optional[Dict[str, str]] = None) -> ImageDataset:
    """Larochelle & Murray's binarised MNIST from ``folder``: ``binarized_mnist_{train,valid,test}.amat[.gz]``.

    Each file is text, one image per line, 784 values 0 or 1 separated by spaces.
    Train and valid are concatenated into the training set (60 000 images: the
    usual protocol for VAE likelihoods); ``num_train``/``num_test`` keep the first
    rows. ``checksums`` maps a split to the sha256 of its uncompressed text
    (:data:`BINARIZED_MNIST_SHA256`). No labels: the files carry none.
    """
    folder = _existing_folder(folder, "binarized MNIST", "binarized_mnist_train.amat.gz, "
                              "binarized_mnist_valid.amat.gz and binarized_mnist_test.amat.gz")
    checksums = checksums or {}
    splits = {split: _read_amat(_find_file(folder, f"binarized_mnist_{split}.amat", "the three binarized_mnist_*.amat files"), checksums.get(split))
              for split in BINARIZED_MNIST_SPLITS}
    train = np.concatenate([splits["train"], splits["valid"]])[:num_train]
    return images_from_arrays(train, splits["test"][:num_test], binarization="fixed", name="binarized-mnist")


def _read_amat(path: Path, expected_sha256: Optional[str]) -> np.ndarray:
    """The (n, 784) uint8 0/1 rows of one .amat text file."""
    text = _read_content(path, expected_sha256, checksum_of="content")
    rows = _parse_amat_exact(text)
    return rows if rows is not None else _parse_amat_lines(text, path)


def _parse_amat_exact(text: bytes) -> Optional[np.ndarray]:
    """Fast path for the original layout: '0'/'1' separated by single spaces, one '\\n' per row; else None."""
    row_bytes = 2 * NUM_PIXELS
    if not text or len(text) % row_bytes:
        return None
    rows = np.frombuffer(text, np.uint8).reshape(-1, row_bytes)
    separators_ok = np.all(rows[:, 1:-1:2] == ord(" ")) and np.all(rows[:, -1] == ord("\n"))
    digits = rows[:, 0::2] - np.uint8(ord("0"))  # anything but '0'/'1' wraps to a value above 1
    if not separators_ok or digits.max() > 1:
        return None
    return np.ascontiguousarray(digits)


def _parse_amat_lines(text: bytes, path: Path) -> np.ndarray:
    """Any whitespace layout, row by row, so that the error names the first bad row."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines:
        raise DataError(f"{path} holds no rows; it must hold one image per line, 784 values 0 or 1.")
    for number, values in enumerate(lines, start=1):
        if len(values) != NUM_PIXELS:
            raise DataError(f"row {number} of {path} has {len(values)} values, not 784 (a 28x28 image); "
                            "the file is truncated or not binarized MNIST: replace it.")
    try:
        rows = np.array(lines, dtype=np.float64)
    except ValueError as error:
        raise DataError(f"{path} holds a value that is not a number ({error}); replace the file.") from None
    bad = (rows != 0) & (rows != 1)
    if bad.any():
        row, column = np.argwhere(bad)[0]
        raise DataError(f"{path} holds the value {rows[row, column]:g} at row {row + 1}, column {column + 1}; "
                        "binarized MNIST values must be 0 or 1.")
    return rows.astype(np.uint8)


# ----------------------------------------------------------------------------- files, checksums, downloads


def _existing_folder(folder, what: str, contents: str) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"missing folder {folder}: the {what} folder must exist and hold {contents}; "
                        "check data_dir, or omit it to download the files.")
    return folder


def _read_content(path: Path, expected_sha256: Optional[str], checksum_of: str) -> bytes:
    """The bytes of ``path``, gunzipped if it ends in .gz; the sha256 is of the ``"file"`` or its ``"content"``."""
    raw = path.read_bytes()
    if checksum_of == "file":
        _check_sha256(raw, expected_sha256, path)
    content = _gunzip(raw, path) if path.suffix == ".gz" else raw
    if checksum_of == "content":
        _check_sha256(content, expected_sha256, path)
    return content


def _gunzip(raw: bytes, path: Path) -> bytes:
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path} is truncated or corrupt: it is not a complete gzip file ({error}); "
                        "delete it and download it again.") from None


LOCAL_FILE_FIX = ("the file is corrupt or not the original. Delete it (a cached download is fetched again) or "
                  "replace it with a good copy; for another data set in the same format, pass its folder as --data "
                  "(verify=False from Python), which checks no checksums.")


def _check_sha256(data: bytes, expected: Optional[str], what, fix: str = LOCAL_FILE_FIX) -> None:
    if expected is None:
        return
    digest = hashlib.sha256(data).hexdigest()
    if digest != expected:
        raise DataError(f"checksum mismatch: {what} has sha256 {digest}, not the known {expected}; {fix}")


def fetch_url(url: str, path: str, timeout: float = 120.0) -> None:
    """Write the body of ``url`` to ``path`` (the one place that touches the network; tests replace it)."""
    with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as out:
        shutil.copyfileobj(response, out)


def _download(url: str, target: Path, expected_sha256: str, fetch: Callable[[str, str], None],
              compress: bool = False) -> None:
    """Fetch ``url`` into ``target`` atomically, only if its sha256 matches (then gzipped when ``compress``)."""

    def write(temporary: str) -> None:
        try:
            fetch(url, temporary)
        except (OSError, ValueError) as error:
            raise DataError(f"could not download {url} ({error}); download it by hand and pass data_dir "
                            "with the folder that holds it.") from None
        content = Path(temporary).read_bytes()
        _check_sha256(content, expected_sha256, f"the download of {url}",
                      "nothing was saved. Retry later, or download the file by hand from a trusted copy "
                      "and pass data_dir with the folder that holds it.")
        if compress:
            Path(temporary).write_bytes(gzip.compress(content, mtime=0))

    atomic_write(target, write)


def download_mnist(cache_dir=None, fetch: Optional[Callable[[str, str], None]] = None) -> Path:
    """The MNIST cache folder (default ``cache_dir()/mnist``), downloading any of the four files it lacks."""
    folder = Path(cache_dir) if cache_dir is not None else zoo_cache_dir() / "mnist"
    for file, expected in MNIST_SHA256.items():
        if not (folder / file).is_file():
            _download(MNIST_URL.format(file=file), folder / file, expected, fetch or fetch_url)
    return folder


def download_binarized_mnist(cache_dir=None, fetch: Optional[Callable[[str, str], None]] = None) -> Path:
    """The binarised-MNIST cache folder (default ``cache_dir()/binarized-mnist``), downloading what it lacks.

    The original .amat text is checked, then kept gzipped (3 MB instead of 110 MB).
    """
    folder = Path(cache_dir) if cache_dir is not None else zoo_cache_dir() / "binarized-mnist"
    for split, expected in BINARIZED_MNIST_SHA256.items():
        target = folder / f"binarized_mnist_{split}.amat.gz"
        if not target.is_file():
            _download(BINARIZED_MNIST_URL.format(split=split), target, expected, fetch or fetch_url, compress=True)
    return folder


def load_images(dataset="synthetic", data_dir=None, *, binarization: Optional[str] = None, seed: int = 0,
                num_train: Optional[int] = None, num_test: Optional[int] = None, cache_dir=None,
                fetch: Optional[Callable[[str, str], None]] = None, verify: bool = True) -> ImageDataset:
    """Images for the VAE by name (``"synthetic"``, ``"mnist"``, ``"binarized-mnist"``) or as an array.

    Args:
        dataset: a name from :data:`IMAGE_DATASETS`, or users' training images
            (n, 784) or (n, 28, 28) in [0, 1] (see :func:`images_from_arrays` for a test set).
        data_dir: a folder holding the files; ``None`` downloads them once into the cache.
        binarization: ``"dynamic"`` (default for grey images) or ``"fixed"``
            (binarized-mnist is always fixed).
        seed: seeds the synthetic images and every one-off binarisation.
        num_train, num_test: sizes of the synthetic splits (default 2000 / 500);
            for real data, keep only the first rows (default all).
        cache_dir: where downloads go (default ``cache_dir()/<dataset>``).
        fetch: ``fetch(url, path)`` replaces the download (tests).
        verify: check files against their known sha256 (cached files always are).
    """
    if not isinstance(dataset, str):
        return images_from_arrays(dataset, binarization=binarization or "dynamic", seed=seed)
    if dataset == "synthetic":
        if data_dir is not None:
            raise DataError("synthetic images are made in code and read no files; drop --data-dir (data_dir), "
                            "or choose --dataset mnist or binarized-mnist.")
        return synthetic_images(2000 if num_train is None else num_train, 500 if num_test is None else num_test,
                                seed, binarization or "dynamic")
    if dataset == "mnist":
        folder = Path(data_dir) if data_dir is not None else download_mnist(cache_dir, fetch)
        checksums = MNIST_SHA256 if verify or data_dir is None else None
        return read_mnist(folder, binarization=binarization or "dynamic", seed=seed, num_train=num_train,
                          num_test=num_test, checksums=checksums)
    if dataset == "binarized-mnist":
        if binarization not in (None, "fixed"):
            raise ZooError("binarized-mnist was binarised once by its authors: its binarization is 'fixed'; "
                           "use dataset='mnist' for dynamic binarisation.")
        folder = Path(data_dir) if data_dir is not None else download_binarized_mnist(cache_dir, fetch)
        checksums = BINARIZED_MNIST_SHA256 if verify or data_dir is None else None
        return read_binarized_mnist(folder, num_train=num_train, num_test=num_test, checksums=checksums)
    raise DataError(f"unknown image data set {dataset!r}; choose one of: {', '.join(IMAGE_DATASETS)}, "
                    "or pass an array of images (n, 784) in [0, 1].")
