"""Rating matrices for AutoRec: MovieLens files, a generated default, and the download cache.

AutoRec (Sedhain et al., "AutoRec: Autoencoders Meet Collaborative Filtering",
WWW 2015) reads one row of a rating matrix at a time: an item's ratings by all
users (I-AutoRec, ``orientation="item"``) or a user's ratings of all items
(U-AutoRec, ``orientation="user"``, the transposed matrix). A
:class:`RatingsDataset` holds the dense ``(num_rows, num_columns)`` float32
matrices the model takes, ``train = (inputs, inputs, mask)`` and
``test = (inputs, test_targets, test_mask)``: the test rows are scored from the
*training* ratings, as in the paper. Zeros stand for unobserved entries; the
masks say which entries are observed (so a rating of 0 on a 0..5 scale stays
usable as a target, though as an input it reads like a missing one).

Formats (GroupLens, F. M. Harper and J. A. Konstan, "The MovieLens Datasets:
History and Context", ACM TiiS 5(4), 2015):

* MovieLens 100K: ``u.data`` and the splits ``u1..u5.base/.test`` (five-fold
  80/20) and ``ua``/``ub`` (10 test ratings per user); one rating per line,
  ``user <tab> item <tab> rating <tab> timestamp``. Half stars (``3.5``) are read
  too, so users' own files in this format work.
* MovieLens 1M: ``ratings.dat``, ``UserID::MovieID::Rating::Timestamp``; the paper's
  protocol is a random 90/10 split, repeated (seeds 0..4 here).

Users and items are mapped to contiguous indices over train and test together,
in increasing order of their ids; the id maps are kept. Test ratings whose user
or item has no training rating are cold starts: the paper predicts the default
rating 3 for them (the midpoint of the scale here); ``test_cold`` marks them.
Real data is read from ``data_dir``, or downloaded once from files.grouplens.org
into ``cache_dir()/movielens`` (checked by sha256, renamed into place atomically).
"""

import hashlib
import math
import os
import shutil
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Dict, NamedTuple, Optional, Tuple

import numpy as np
import torch

from ..cache import cache_dir as zoo_cache_dir
from ..errors import DataError
from ..runs import atomic_write
from .dataset import Dataset

__all__ = [
    "DATASETS",
    "MOVIELENS_100K_SPLITS",
    "ORIENTATIONS",
    "SOURCES",
    "MovieLensSource",
    "RatingsDataset",
    "download_movielens",
    "generate_ratings",
    "generated_ratings",
    "load_ratings",
    "movielens_folder",
    "ratings_dataset",
    "read_movielens_100k",
    "read_movielens_1m",
    "read_ratings_file",
    "validation_split",
    "write_movielens_100k",
]

DATASETS = ("generated", "movielens-100k", "movielens-1m")
ORIENTATIONS = ("item", "user")
MOVIELENS_100K_SPLITS = ("u1", "u2", "u3", "u4", "u5", "ua", "ub")


@dataclass(frozen=True)
class MovieLensSource:
    """Where a MovieLens release comes from and how its download is checked."""

    url: str
    sha256: str
    folder: str
    file_sha256: Dict[str, str] = field(default_factory=dict)


#: The official GroupLens downloads. The ml-100k.zip digest is from the tensorflow/datasets checksum list;
#: ``u.data`` inside it is checked too, against the digest verified on the file itself (shared data PROVENANCE).
SOURCES: Dict[str, MovieLensSource] = {
    "movielens-100k": MovieLensSource(
        url="https://files.grouplens.org/datasets/movielens/ml-100k.zip",
        sha256="50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229",
        folder="ml-100k",
        file_sha256={"u.data": "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"},
    ),
    "movielens-1m": MovieLensSource(
        url="https://files.grouplens.org/datasets/movielens/ml-1m.zip",
        sha256="a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20",
        folder="ml-1m",
    ),
}


class RatingTriplets(NamedTuple):
    """Ratings as parallel arrays, with where each came from (for error messages)."""

    users: np.ndarray  # int64 ids
    items: np.ndarray  # int64 ids
    ratings: np.ndarray  # float64
    lines: np.ndarray  # int64: 1-based line numbers in a file, or 0-based rows of an array
    origin: str  # a file path, or a description such as "train array"
    unit: str = "line"  # what ``lines`` counts: "line" of a file or "row" of an array

    def where(self, index: int) -> str:
        return f"{self.origin}, {self.unit} {int(self.lines[index])}"

    def take(self, index: np.ndarray) -> "RatingTriplets":
        return self._replace(users=self.users[index], items=self.items[index], ratings=self.ratings[index],
                             lines=self.lines[index])


@dataclass
class RatingsDataset(Dataset):
    """A rating matrix split into training and test ratings, as AutoRec's arguments.

    ``train = (inputs, inputs, mask)``; ``test = (inputs, test_targets, test_mask)``: dense
    ``(num_rows, num_columns)`` float32 matrices (bool masks), rows are items for
    ``orientation="item"`` and users for ``"user"``. ``train_counts`` / ``column_counts``:
    training ratings per row / column (popularity). ``test_cold``: test entries whose
    user or item has no training rating (the paper predicts :attr:`default_rating`
    there); ``num_cold`` of them, from ``num_cold_users`` users and ``num_cold_items``
    items. ``user_ids[k]`` / ``item_ids[k]`` are the original ids of index ``k``.
    """

    num_users: int = 0
    num_items: int = 0
    rating_min: float = 1.0
    rating_max: float = 5.0
    orientation: str = "item"
    train_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    column_counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    test_cold: Optional[torch.Tensor] = None
    num_cold: int = 0
    num_cold_users: int = 0
    num_cold_items: int = 0
    user_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    item_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    source: str = ""

    @property
    def default_rating(self) -> float:
        """The rating predicted for cold starts: the midpoint of the scale (3 on 1..5, as in the paper)."""
        return (self.rating_min + self.rating_max) / 2.0

    @property
    def num_rows(self) -> int:
        return int(self.train[0].shape[0])

    @property
    def num_columns(self) -> int:
        return int(self.train[0].shape[1])

    @property
    def num_train_ratings(self) -> int:
        return int(self.train_counts.sum())

    @property
    def num_test_ratings(self) -> int:
        return 0 if self.test is None else int(self.test[2].sum())

    @property
    def row_ids(self) -> np.ndarray:
        return self.item_ids if self.orientation == "item" else self.user_ids

    @property
    def column_ids(self) -> np.ndarray:
        return self.user_ids if self.orientation == "item" else self.item_ids

    def to(self, device) -> "RatingsDataset":
        """The same data on ``device``; a tensor shared by several arguments is moved once and stays shared."""
        moved = {}

        def move(value):
            if not isinstance(value, torch.Tensor):
                return value
            if id(value) not in moved:
                moved[id(value)] = value.to(device)
            return moved[id(value)]

        test = None if self.test is None else tuple(move(a) for a in self.test)
        return replace(self, train=tuple(move(a) for a in self.train), test=test, test_cold=move(self.test_cold))

    def with_orientation(self, orientation: str) -> "RatingsDataset":
        """The same ratings with rows as items (``"item"``, I-AutoRec) or users (``"user"``, U-AutoRec)."""
        _check_orientation(orientation)
        if orientation == self.orientation:
            return self
        inputs, _, mask = self.train
        _, test_targets, test_mask = self.test
        flip = lambda matrix: matrix.t().contiguous()
        return _assemble(self.name, flip(inputs), flip(mask), flip(test_targets), flip(test_mask), orientation,
                         self.user_ids, self.item_ids, self.rating_min, self.rating_max, self.source)


# ----------------------------------------------------------------------------------------------- assembling


def ratings_dataset(train, test, *, name: str = "user", orientation: str = "item",
                    rating_scale: Optional[Tuple[float, float]] = None, source: str = "") -> RatingsDataset:
    """A :class:`RatingsDataset` from training and test ratings.

    ``train`` and ``test`` are :class:`RatingTriplets` (from :func:`read_ratings_file`)
    or arrays of rows ``(user, item, rating[, timestamp])``. ``rating_scale=(low, high)``
    checks every rating against it; ``None`` reads the scale off the data (its
    lowest and highest rating). Raises :class:`DataError` for an empty split,
    ratings outside the scale, or a (user, item) pair rated twice.
    """
    _check_orientation(orientation)
    train, test = _as_triplets(train, "train array"), _as_triplets(test, "test array")
    for part, what in ((train, "training"), (test, "test")):
        if len(part.ratings) == 0:
            raise DataError(f"the {what} split ({part.origin}) holds no ratings; each split needs at least one.")
    rating_min, rating_max = _rating_scale(train, test, rating_scale)
    _check_unique_pairs(train, test)
    user_ids = np.unique(np.concatenate([train.users, test.users]))
    item_ids = np.unique(np.concatenate([train.items, test.items]))
    shape = (len(item_ids), len(user_ids)) if orientation == "item" else (len(user_ids), len(item_ids))
    inputs, mask = _dense(train, user_ids, item_ids, orientation, shape)
    test_targets, test_mask = _dense(test, user_ids, item_ids, orientation, shape)
    return _assemble(name, inputs, mask, test_targets, test_mask, orientation, user_ids, item_ids,
                     rating_min, rating_max, source)


def _as_triplets(ratings, origin: str) -> RatingTriplets:
    if isinstance(ratings, RatingTriplets):
        return ratings
    table = np.asarray(ratings)
    if table.ndim != 2 or table.shape[1] not in (3, 4):
        raise DataError(f"the {origin} must have rows (user, item, rating[, timestamp]), got shape {table.shape}.")
    ids = table[:, :2].astype(np.float64)
    if not np.all(ids == np.round(ids)):
        raise DataError(f"the {origin} holds user or item ids that are not whole numbers; ids must be integers.")
    ratings = table[:, 2].astype(np.float64)
    if not np.all(np.isfinite(ratings)):
        raise DataError(f"the {origin} holds NaN or infinite ratings; drop those rows.")
    return RatingTriplets(ids[:, 0].astype(np.int64), ids[:, 1].astype(np.int64), ratings,
                          np.arange(len(table), dtype=np.int64), origin, unit="row")


def _rating_scale(train: RatingTriplets, test: RatingTriplets, rating_scale) -> Tuple[float, float]:
    if rating_scale is None:
        both = np.concatenate([train.ratings, test.ratings])
        return float(both.min()), float(both.max())
    low, high = (float(v) for v in rating_scale)
    if not low < high:
        raise DataError(f"rating_scale must be (low, high) with low < high, got {rating_scale}.")
    for part in (train, test):
        outside = np.flatnonzero((part.ratings < low) | (part.ratings > high))
        if outside.size:
            first = outside[0]
            raise DataError(f"{part.where(first)}: rating {part.ratings[first]:g} lies outside the rating scale "
                            f"{low:g}..{high:g}; fix that rating or pass a rating_scale that covers it.")
    return low, high


def _check_unique_pairs(train: RatingTriplets, test: RatingTriplets) -> None:
    """Raise for the first (user, item) pair rated twice, naming both places (a train/test overlap leaks too)."""
    users = np.concatenate([train.users, test.users])
    items = np.concatenate([train.items, test.items])
    _, item_codes = np.unique(items, return_inverse=True)
    keys = np.unique(users, return_inverse=True)[1].astype(np.int64) * (item_codes.max() + 1) + item_codes
    order = np.argsort(keys, kind="stable")
    repeated = np.flatnonzero(keys[order][1:] == keys[order][:-1])
    if repeated.size == 0:
        return
    first, second = sorted((order[repeated[0]], order[repeated[0] + 1]))
    where = lambda k: train.where(k) if k < len(train.users) else test.where(k - len(train.users))
    raise DataError(f"duplicate rating for user {users[first]}, item {items[first]}: {where(first)} and "
                    f"{where(second)}; keep one rating per (user, item) pair, and none in both train and test.")


def _dense(part: RatingTriplets, user_ids, item_ids, orientation: str, shape) -> Tuple[torch.Tensor, torch.Tensor]:
    users = np.searchsorted(user_ids, part.users)
    items = np.searchsorted(item_ids, part.items)
    rows, columns = (items, users) if orientation == "item" else (users, items)
    values = np.zeros(shape, dtype=np.float32)
    observed = np.zeros(shape, dtype=bool)
    values[rows, columns] = part.ratings
    observed[rows, columns] = True
    return torch.from_numpy(values), torch.from_numpy(observed)


def _assemble(name, inputs, mask, test_targets, test_mask, orientation, user_ids, item_ids, rating_min, rating_max,
              source) -> RatingsDataset:
    """The dataset with its counts and cold starts computed from the dense matrices."""
    row_counts, column_counts = mask.sum(1), mask.sum(0)
    cold_rows, cold_columns = row_counts == 0, column_counts == 0
    test_cold = test_mask & (cold_rows.unsqueeze(1) | cold_columns.unsqueeze(0))
    cold_row_count = int((cold_rows & test_mask.any(1)).sum())
    cold_column_count = int((cold_columns & test_mask.any(0)).sum())
    cold_users, cold_items = ((cold_column_count, cold_row_count) if orientation == "item"
                              else (cold_row_count, cold_column_count))
    return RatingsDataset(
        name=name, train=(inputs, inputs, mask), test=(inputs, test_targets, test_mask),
        num_users=len(user_ids), num_items=len(item_ids), rating_min=float(rating_min), rating_max=float(rating_max),
        orientation=orientation, train_counts=row_counts.cpu().numpy().astype(np.int64),
        column_counts=column_counts.cpu().numpy().astype(np.int64), test_cold=test_cold,
        num_cold=int(test_cold.sum()), num_cold_users=cold_users, num_cold_items=cold_items,
        user_ids=np.asarray(user_ids), item_ids=np.asarray(item_ids), source=str(source),
    )


def _check_orientation(orientation: str) -> None:
    if orientation not in ORIENTATIONS:
        raise DataError(f"unknown orientation {orientation!r}; use 'item' (I-AutoRec: rows are items) "
                        "or 'user' (U-AutoRec: rows are users).")


# ----------------------------------------------------------------------------------------------- reading files


def read_ratings_file(path, separator: Optional[str] = None) -> RatingTriplets:
    """The ratings in one file, one ``user item rating [timestamp]`` per line.

    ``separator=None`` splits on whitespace (MovieLens 100K's tabs); ``"::"`` reads
    MovieLens 1M. Blank lines are skipped. Raises :class:`DataError` naming the file
    and line for a line without 3 or 4 fields, an id that is not a whole number, or
    a rating that is not a finite number; and for a missing file.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing file {path}; check the data folder (--data-dir) or download the data set again.")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as stream:
        for number, line in enumerate(stream, 1):
            text = line.strip()
            if text:
                rows.append((*_parse_line(text, separator, path, number), number))
    columns = list(zip(*rows)) or [(), (), (), ()]
    return RatingTriplets(np.array(columns[0], dtype=np.int64), np.array(columns[1], dtype=np.int64),
                          np.array(columns[2], dtype=np.float64), np.array(columns[3], dtype=np.int64), str(path))


def _parse_line(text: str, separator: Optional[str], path: Path, number: int) -> Tuple[int, int, float]:
    fields = text.split(separator)
    if len(fields) not in (3, 4):
        shown = "<tab>" if separator is None else separator
        raise DataError(f"{path}, line {number}: expected user{shown}item{shown}rating{shown}timestamp "
                        f"(3 or 4 fields), got {len(fields)}: {text[:80]!r}; fix or delete that line.")
    try:
        user, item = int(fields[0]), int(fields[1])
    except ValueError:
        raise DataError(f"{path}, line {number}: user and item ids must be whole numbers, got "
                        f"{fields[0].strip()!r} and {fields[1].strip()!r}; fix or delete that line.") from None
    try:
        rating = float(fields[2])
    except ValueError:
        rating = math.nan
    if not math.isfinite(rating):
        raise DataError(f"{path}, line {number}: rating {fields[2].strip()!r} is not a number; ratings must be "
                        "finite numbers such as 4 or 3.5.")
    return user, item, rating


#: MovieLens' stars
MOVIELENS_SCALE = (1.0, 5.0)


def read_movielens_100k(folder, split: str = "u1", *, orientation: str = "item",
                        rating_scale: Optional[Tuple[float, float]] = None) -> RatingsDataset:
    """Split ``split`` (``u1``..``u5``, ``ua``, ``ub``) of a folder in the MovieLens 100K format.

    Reads ``<split>.base`` (training) and ``<split>.test``; the numbers of users and
    items and the rating scale come from the files (``rating_scale`` checks instead).
    """
    if split not in MOVIELENS_100K_SPLITS:
        raise DataError(f"unknown split {split!r}; MovieLens 100K splits are {', '.join(MOVIELENS_100K_SPLITS)}.")
    folder = _existing_folder(folder)
    train = read_ratings_file(folder / f"{split}.base")
    test = read_ratings_file(folder / f"{split}.test")
    return ratings_dataset(train, test, name=f"movielens-100k:{split}", orientation=orientation,
                           rating_scale=rating_scale, source=str(folder))


def read_movielens_1m(folder, seed: int = 0, test_fraction: float = 0.1, *, orientation: str = "item",
                      rating_scale: Optional[Tuple[float, float]] = None) -> RatingsDataset:
    """``ratings.dat`` of MovieLens 1M, split at random into train and test (the paper's 90/10, seeds 0..4)."""
    folder = _existing_folder(folder)
    ratings = read_ratings_file(folder / "ratings.dat", separator="::")
    train, test = _random_split(ratings, test_fraction, seed)
    return ratings_dataset(train, test, name=f"movielens-1m:seed{seed}", orientation=orientation,
                           rating_scale=rating_scale, source=str(folder))


def _existing_folder(folder) -> Path:
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.is_file() else "does not exist"
        raise DataError(f"data folder {folder} {what}; pass the folder that holds the MovieLens files "
                        "(uN.base/uN.test for 100K, ratings.dat for 1M).")
    return folder


def _random_split(ratings: RatingTriplets, test_fraction: float, seed: int) -> Tuple[RatingTriplets, RatingTriplets]:
    if not 0.0 < test_fraction < 1.0:
        raise DataError(f"test_fraction must lie strictly between 0 and 1, got {test_fraction}.")
    order = np.random.default_rng(seed).permutation(len(ratings.ratings))
    num_test = int(round(test_fraction * len(order)))
    return ratings.take(np.sort(order[num_test:])), ratings.take(np.sort(order[:num_test]))


# ----------------------------------------------------------------------------------------------- validation


def validation_split(dataset: RatingsDataset, fraction: float = 0.1, seed: int = 0) -> RatingsDataset:
    """Hold out ``fraction`` of the *training* ratings, at random, as a validation set.

    Returns a :class:`RatingsDataset` whose training part is the rest of the training
    ratings and whose test part is the held-out ones (scored from the remaining
    inputs); the original test split is not touched. For choosing the prior scale
    (the paper's lambda) without looking at the test ratings.
    """
    if not 0.0 < fraction < 1.0:
        raise DataError(f"validation fraction must lie strictly between 0 and 1, got {fraction}.")
    inputs, _, mask = dataset.train
    positions = mask.cpu().flatten().nonzero().squeeze(1)
    num_held = int(round(fraction * len(positions)))
    if not 0 < num_held < len(positions):
        raise DataError(f"a validation fraction of {fraction} of {len(positions)} training ratings leaves an empty "
                        "part; choose a fraction that holds out at least one rating and keeps at least one.")
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(positions)))
    held = torch.zeros(mask.numel(), dtype=torch.bool)
    held[positions[order[:num_held]]] = True
    held = held.view(mask.shape).to(mask.device)
    kept = mask & ~held
    zero = inputs.new_zeros(())
    return _assemble(f"{dataset.name}:validation", torch.where(kept, inputs, zero), kept,
                     torch.where(held, inputs, zero), held, dataset.orientation, dataset.user_ids, dataset.item_ids,
                     dataset.rating_min, dataset.rating_max, dataset.source)


# ----------------------------------------------------------------------------------------------- generated data


def generate_ratings(num_users: int = 300, num_items: int = 200, rank: int = 5, density: float = 0.06,
                     seed: int = 0) -> np.ndarray:
    """A generated rating table, rows ``(user, item, rating, timestamp)`` (int64, ids from 1), MovieLens-like.

    Ratings are a low-rank truth ``3.5 + user bias + item bias + P Q^T`` (biases N(0, 0.4^2)
    and N(0, 0.5^2), interaction sd 0.8, ``rank`` factors) plus N(0, 0.5^2) noise, rounded
    and clipped to 1..5. Which pairs are rated follows user activity and item popularity
    drawn LogNormal(0, 1) and LogNormal(0, 1.2): a few busy users and popular items,
    a long tail, and ``density`` of the cells rated.
    """
    if num_users < 2 or num_items < 2 or rank < 1 or not 0.0 < density <= 1.0:
        raise DataError("generated ratings need num_users, num_items >= 2, rank >= 1 and 0 < density <= 1.")
    rng = np.random.default_rng(seed)
    activity = rng.lognormal(0.0, 1.0, num_users)
    popularity = rng.lognormal(0.0, 1.2, num_items)
    weights = np.outer(activity, popularity).ravel()
    num_ratings = int(min(max(round(density * num_users * num_items), 2), num_users * num_items))
    cells = np.sort(rng.choice(num_users * num_items, size=num_ratings, replace=False, p=weights / weights.sum()))
    users, items = np.divmod(cells, num_items)
    user_factors, item_factors = rng.standard_normal((num_users, rank)), rng.standard_normal((num_items, rank))
    truth = (3.5 + rng.normal(0.0, 0.4, num_users)[users] + rng.normal(0.0, 0.5, num_items)[items]
             + 0.8 / math.sqrt(rank) * np.einsum("nk,nk->n", user_factors[users], item_factors[items]))
    ratings = np.clip(np.round(truth + rng.normal(0.0, 0.5, num_ratings)), 1, 5)
    timestamps = 874_724_710 + np.sort(rng.integers(0, 20_000_000, num_ratings))
    return np.stack([users + 1, items + 1, ratings.astype(np.int64), timestamps], axis=1).astype(np.int64)


def _split_table(table: np.ndarray, test_fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    triplets = RatingTriplets(table[:, 0], table[:, 1], table[:, 2].astype(np.float64),
                              np.arange(len(table)), "generated table", unit="row")
    train, test = _random_split(triplets, test_fraction, seed)
    return table[train.lines], table[test.lines]  # lines are the table's row numbers here


def generated_ratings(num_users: int = 300, num_items: int = 200, rank: int = 5, density: float = 0.06,
                      seed: int = 0, test_fraction: float = 0.2, *, orientation: str = "item",
                      split_seed: Optional[int] = None) -> RatingsDataset:
    """The embedded default: :func:`generate_ratings`, split at random 80/20 (seeded), on the 1..5 scale.

    ``seed`` makes the ratings; ``split_seed`` (default: ``seed``) the train/test split,
    so several splits of the same ratings can be compared. With ``split_seed`` left
    out these are the ratings :func:`write_movielens_100k` writes with the same
    arguments and :func:`read_movielens_100k` then reads back as split ``u1``.
    """
    split_seed = seed if split_seed is None else split_seed
    table = generate_ratings(num_users, num_items, rank, density, seed)
    train, test = _split_table(table, test_fraction, split_seed)
    name = "generated" if split_seed == seed else f"generated:split{split_seed}"
    return ratings_dataset(train, test, name=name, orientation=orientation, rating_scale=(1, 5), source="generated")


def write_movielens_100k(folder, table: Optional[np.ndarray] = None, *, split: str = "u1", test_fraction: float = 0.2,
                         seed: int = 0, **generate) -> Path:
    """Write ratings as MovieLens 100K files: ``u.data`` and ``<split>.base``/``<split>.test``, tab-separated.

    ``table`` holds rows ``(user, item, rating, timestamp)``; ``None`` generates one
    (:func:`generate_ratings` with ``seed`` and ``generate``'s keywords). The split
    is a seeded random one (not MovieLens's per-user folds). Returns the folder.
    """
    if split not in MOVIELENS_100K_SPLITS:
        raise DataError(f"unknown split {split!r}; MovieLens 100K splits are {', '.join(MOVIELENS_100K_SPLITS)}.")
    table = generate_ratings(seed=seed, **generate) if table is None else np.asarray(table)
    train, test = _split_table(table, test_fraction, seed)
    folder = Path(folder)
    for name, rows in (("u.data", table), (f"{split}.base", train), (f"{split}.test", test)):
        atomic_write(folder / name, lambda temporary, rows=rows: _write_rows(temporary, rows))
    return folder


def _write_rows(path: str, rows: np.ndarray) -> None:
    with open(path, "w") as stream:
        for user, item, rating, *timestamp in rows.tolist():
            stream.write("\t".join([f"{int(user)}", f"{int(item)}", f"{rating:g}", *(f"{int(t)}" for t in timestamp)]))
            stream.write("\n")


# ----------------------------------------------------------------------------------------------- load and download


def load_ratings(dataset: str = "generated", data_dir=None, *, split: str = "u1", seed: int = 0,
                 test_fraction: Optional[float] = None, orientation: str = "item",
                 rating_scale: Optional[Tuple[float, float]] = None, cache_dir=None,
                 fetch: Optional[Callable[[str, str], None]] = None) -> RatingsDataset:
    """The rating data set ``dataset``: ``"generated"``, ``"movielens-100k"`` or ``"movielens-1m"``.

    Real data comes from ``data_dir`` (a folder holding the files, or ``ml-100k/`` /
    ``ml-1m/`` inside it) or, when ``None``, from the cache, downloading it once
    (:func:`download_movielens`). ``split`` picks the MovieLens 100K split; ``seed``
    the random split of 1M (and of the generated data); ``test_fraction`` defaults
    to 0.1 for 1M (the paper) and 0.2 for the generated data. MovieLens ratings are
    checked against its 1..5 stars unless ``rating_scale`` says otherwise (the format
    readers, :func:`read_movielens_100k`, take the scale from the files). ``fetch(url,
    path)`` replaces the network (tests).
    """
    _check_orientation(orientation)
    if dataset == "generated":
        if data_dir is not None:
            raise DataError("data_dir is not read for the generated data set; for a folder in the MovieLens 100K "
                            "format use dataset='movielens-100k' (--dataset movielens-100k --data-dir DIR).")
        return generated_ratings(seed=seed, test_fraction=0.2 if test_fraction is None else test_fraction,
                                 orientation=orientation)
    if dataset not in SOURCES:
        raise DataError(f"unknown rating data set {dataset!r}; choose one of: {', '.join(DATASETS)}.")
    if dataset == "movielens-100k" and split not in MOVIELENS_100K_SPLITS:
        raise DataError(f"unknown split {split!r}; MovieLens 100K splits are {', '.join(MOVIELENS_100K_SPLITS)}.")
    key_file = f"{split}.base" if dataset == "movielens-100k" else "ratings.dat"
    folder = movielens_folder(dataset, key_file, data_dir, cache_dir, fetch)
    rating_scale = MOVIELENS_SCALE if rating_scale is None else rating_scale  # a rating outside it: a damaged file
    if dataset == "movielens-100k":
        return read_movielens_100k(folder, split, orientation=orientation, rating_scale=rating_scale)
    return read_movielens_1m(folder, seed, 0.1 if test_fraction is None else test_fraction, orientation=orientation,
                             rating_scale=rating_scale)


def movielens_folder(dataset: str, key_file: str, data_dir=None, cache_dir=None,
                     fetch: Optional[Callable[[str, str], None]] = None) -> Path:
    """The folder that holds ``key_file`` of ``dataset``: under ``data_dir``, else the cached (downloaded) copy."""
    source = SOURCES[dataset]
    if data_dir is None:
        return download_movielens(dataset, cache_dir, fetch)
    data_dir = _existing_folder(data_dir)
    for folder in (data_dir, data_dir / source.folder):
        if (folder / key_file).is_file():
            return folder
    raise DataError(f"missing file {data_dir / key_file} (nor {data_dir / source.folder / key_file}); check "
                    f"--data-dir: it must hold the {dataset} files, e.g. as unzipped from {source.url}.")


def movielens_cache_dir(cache_dir=None) -> Path:
    """Where MovieLens downloads go: ``cache_dir``, else ``<cache_dir()>/movielens`` (see :mod:`pyro_vi_zoo.cache`)."""
    return Path(cache_dir) if cache_dir is not None else zoo_cache_dir() / "movielens"


def download_movielens(dataset: str, cache_dir=None, fetch: Optional[Callable[[str, str], None]] = None) -> Path:
    """The extracted folder of ``dataset``'s official zip in the cache, downloading and checking it first if needed.

    The zip is fetched to a temporary name and renamed into place only once its
    sha256 matches; it is extracted into a temporary folder, its checked files are
    verified, and that folder is renamed into place. A failure leaves nothing behind.
    """
    source = SOURCES[dataset]
    root = movielens_cache_dir(cache_dir)
    final = root / source.folder
    if final.is_dir():
        return final
    archive = root / f"{source.folder}.zip"
    try:
        if not (archive.is_file() and _sha256(archive) == source.sha256):
            atomic_write(archive, lambda temporary: _fetch_checked(source, temporary, fetch or _fetch_url))
        _extract(archive, source, final)
    except DataError:
        raise
    except Exception as error:
        raise DataError(f"could not download {dataset} ({error}); download {source.url} by hand, unzip it and "
                        "pass --data-dir with the folder.") from None
    return final


def _fetch_checked(source: MovieLensSource, path: str, fetch) -> None:
    fetch(source.url, path)
    _check_sha256(Path(path), source.sha256, source.url)


def _extract(archive: Path, source: MovieLensSource, final: Path) -> None:
    staging = Path(tempfile.mkdtemp(prefix=f".{source.folder}-", dir=final.parent))
    try:
        try:
            with zipfile.ZipFile(archive) as bundle:
                bundle.extractall(staging)
        except zipfile.BadZipFile as error:
            raise DataError(f"{archive} is not a valid zip ({error}); delete it and retry.") from None
        extracted = staging / source.folder
        if not extracted.is_dir():
            raise DataError(f"{archive} has no folder {source.folder}/; delete it and retry, or pass --data-dir.")
        for name, digest in source.file_sha256.items():
            _check_sha256(extracted / name, digest, f"{source.folder}/{name}")
        if not final.is_dir():  # another process may have finished first; its copy is as good
            os.replace(extracted, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _fetch_url(url: str, path: str, timeout: float = 60.0) -> None:
    with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as out:
        shutil.copyfileobj(response, out)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_sha256(path: Path, expected: str, what: str) -> None:
    if not path.is_file():
        raise DataError(f"missing file {path} in the download of {what}; download it by hand and pass --data-dir.")
    digest = _sha256(path)
    if digest != expected:
        raise DataError(f"{what} has sha256 {digest}, not the known {expected}: the download is corrupt or not the "
                        "official file; retry, or download it by hand and pass --data-dir.")
