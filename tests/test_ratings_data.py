"""Rating files: MovieLens 100K / 1M formats, id maps, cold starts, validation splits, bad input, the download cache."""

import hashlib
import shutil
import zipfile

import numpy as np
import pytest
import torch

from pyro_vi_zoo.data import ratings as ratings_module
from pyro_vi_zoo.data.ratings import (
    MovieLensSource,
    generate_ratings,
    generated_ratings,
    load_ratings,
    ratings_dataset,
    read_movielens_100k,
    read_movielens_1m,
    validation_split,
    write_movielens_100k,
)
from pyro_vi_zoo.errors import DataError

# users 10, 3, 7 and items 100, 5, 42; user 99 and item 77 appear only in the test split
TRAIN = ["10\t100\t4\t881250949", "10\t5\t2\t881250950", "3\t100\t3\t881250951", "7\t42\t4\t881250952",
         "3\t42\t2\t881250953"]
TEST = ["10\t42\t3\t881250954", "7\t100\t4\t881250955", "99\t5\t4\t881250956", "3\t77\t2\t881250957"]


def write_lines(path, lines):
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


@pytest.fixture
def folder(tmp_path):
    write_lines(tmp_path / "u1.base", TRAIN)
    write_lines(tmp_path / "u1.test", TEST)
    return tmp_path


def dense(dataset, user, item, part="train"):
    """The stored rating of original ids (user, item) and whether it is observed, in either orientation."""
    users, items = list(dataset.user_ids), list(dataset.item_ids)
    row, column = ((items.index(item), users.index(user)) if dataset.orientation == "item"
                   else (users.index(user), items.index(item)))
    _, targets, mask = dataset.train if part == "train" else dataset.test
    return float(targets[row, column]), bool(mask[row, column])


def test_movielens_100k_ids_counts_and_scale(folder, device):
    data = read_movielens_100k(folder, "u1").to(device)
    assert (data.num_users, data.num_items) == (4, 4)
    assert data.user_ids.tolist() == [3, 7, 10, 99] and data.item_ids.tolist() == [5, 42, 77, 100]
    assert (data.rating_min, data.rating_max, data.default_rating) == (2.0, 4.0, 3.0)
    assert (data.num_rows, data.num_columns) == (4, 4) and data.orientation == "item"
    assert dense(data, 10, 100) == (4.0, True) and dense(data, 10, 42) == (0.0, False)
    assert dense(data, 10, 42, "test") == (3.0, True)
    assert data.train_counts.tolist() == [1, 2, 0, 2]  # ratings per item: 5, 42, 77, 100
    assert data.column_counts.tolist() == [2, 1, 2, 0]  # ratings per user: 3, 7, 10, 99
    assert (data.num_train_ratings, data.num_test_ratings) == (5, 4)
    inputs, targets, mask = data.train
    assert inputs is targets and data.test[0] is inputs and inputs.device.type == torch.device(device).type
    assert inputs.dtype == torch.float32 and mask.dtype == torch.bool and data.test_cold.device == inputs.device


def test_cold_starts_are_counted_and_marked(folder, device):
    data = read_movielens_100k(folder, "u1").to(device)
    assert (data.num_cold, data.num_cold_users, data.num_cold_items) == (2, 1, 1)
    cold = [(int(data.user_ids[c]), int(data.item_ids[r])) for r, c in data.test_cold.nonzero().tolist()]
    assert sorted(cold) == [(3, 77), (99, 5)]
    assert not (data.test_cold & ~data.test[2]).any()


def test_user_orientation_is_the_transpose(folder, device):
    items = read_movielens_100k(folder, "u1").to(device)
    users = read_movielens_100k(folder, "u1", orientation="user").to(device)
    assert users.orientation == "user" and users.row_ids.tolist() == [3, 7, 10, 99]
    for by_item, by_user in zip(items.train + items.test, users.train + users.test):
        assert torch.equal(by_item.t(), by_user)
    assert users.train_counts.tolist() == items.column_counts.tolist()
    assert torch.equal(users.test_cold, items.test_cold.t()) and users.num_cold_users == items.num_cold_users
    flipped = items.with_orientation("user")
    assert torch.equal(flipped.train[2], users.train[2])
    assert flipped.train_counts.tolist() == users.train_counts.tolist()


def test_half_star_ratings(tmp_path, device):
    write_lines(tmp_path / "ua.base", ["1\t1\t3.5\t0", "1\t2\t0.5\t0", "2\t1\t5\t0"])
    write_lines(tmp_path / "ua.test", ["2\t2\t4.5\t0"])
    data = read_movielens_100k(tmp_path, "ua").to(device)
    assert (data.rating_min, data.rating_max, data.default_rating) == (0.5, 5.0, 2.75)
    assert dense(data, 1, 1) == (3.5, True) and dense(data, 2, 2, "test") == (4.5, True)
    assert read_movielens_100k(tmp_path, "ua", rating_scale=(0.5, 5)).rating_min == 0.5


def test_validation_split_holds_out_training_ratings_only(device):
    data = generated_ratings(num_users=60, num_items=40, density=0.2, seed=3).to(device)
    validation = validation_split(data, fraction=0.25, seed=1)
    kept, held, train_mask, test_mask = validation.train[2], validation.test[2], data.train[2], data.test[2]
    assert not (kept & held).any()
    assert torch.equal(kept | held, train_mask)
    assert not (held & test_mask).any() and not (kept & test_mask).any()
    assert int(held.sum()) == round(0.25 * int(train_mask.sum()))
    assert torch.equal(validation.test[1][held], data.train[0][held])
    assert not validation.train[0][held].any()  # held-out ratings are gone from the inputs
    assert validation.train_counts.sum() == int(kept.sum()) and validation.name.endswith(":validation")
    assert torch.equal(validation_split(data, fraction=0.25, seed=1).test[2], held)
    assert not torch.equal(validation_split(data, fraction=0.25, seed=2).test[2], held)
    with pytest.raises(DataError, match="fraction"):
        validation_split(data, fraction=1.0)


def test_generated_ratings_look_like_movielens(tmp_path, device):
    table = generate_ratings(num_users=300, num_items=200, density=0.06, seed=0)
    assert table.shape == (3600, 4) and set(np.unique(table[:, 2])) <= {1, 2, 3, 4, 5}
    data = generated_ratings(seed=0).to(device)
    assert (data.rating_min, data.rating_max) == (1.0, 5.0)
    assert data.num_train_ratings + data.num_test_ratings == 3600
    assert data.num_test_ratings == 720
    counts = np.concatenate([data.train_counts, data.column_counts])
    assert data.train_counts.max() > 4 * np.median(data.train_counts)  # popularity skew: a long tail
    assert counts.min() >= 0
    written = read_movielens_100k(write_movielens_100k(tmp_path / "ml", seed=0), "u1").to(device)
    for ours, theirs in zip(data.train + data.test, written.train + written.test):
        assert torch.equal(ours, theirs)
    assert (tmp_path / "ml" / "u.data").read_text().count("\n") == 3600


def test_generated_split_seed_splits_the_same_ratings_again(device):
    data = generated_ratings(num_users=60, num_items=40, density=0.2, seed=3).to(device)
    again = generated_ratings(num_users=60, num_items=40, density=0.2, seed=3, split_seed=3).to(device)
    other = generated_ratings(num_users=60, num_items=40, density=0.2, seed=3, split_seed=4).to(device)
    assert again.name == "generated" and torch.equal(again.test[2], data.test[2])
    assert other.name == "generated:split4" and not torch.equal(other.test[2], data.test[2])
    both = lambda d: d.train[0] + d.test[1]  # every rating, wherever the split put it
    assert torch.equal(both(other), both(data)) and other.num_test_ratings == data.num_test_ratings


def test_movielens_1m_random_split(tmp_path, device):
    table = generate_ratings(num_users=50, num_items=30, density=0.3, seed=1)
    (tmp_path / "ratings.dat").write_text("".join("::".join(map(str, row)) + "\n" for row in table.tolist()))
    data = read_movielens_1m(tmp_path, seed=0).to(device)
    assert data.num_train_ratings + data.num_test_ratings == len(table)
    assert data.num_test_ratings == round(0.1 * len(table))
    assert data.name == "movielens-1m:seed0"
    same = read_movielens_1m(tmp_path, seed=0).to(device)
    other = read_movielens_1m(tmp_path, seed=1).to(device)
    assert torch.equal(same.test[2], data.test[2]) and not torch.equal(other.test[2], data.test[2])
    assert load_ratings("movielens-1m", data_dir=tmp_path, seed=1).num_test_ratings == data.num_test_ratings


BAD_FILES = [
    (["1\t1\tfour\t0"], "line 1: rating 'four' is not a number"),
    (["1\t1\t4\t0", "2\t1\tnan\t0"], "line 2: rating 'nan' is not a number"),
    (["1\t1\t4\t0", "1\t2"], r"u1.base, line 2: expected .* got 2"),
    (["x\t1\t4\t0"], "line 1: user and item ids must be whole numbers"),
    (["1\t1\t4\t0", "2\t1\t4\t0", "1\t1\t5\t0"],
     r"duplicate rating for user 1, item 1: .*u1.base, line 1 and .*line 3"),
    (["1\t2\t4\t0"], r"duplicate rating for user 1, item 2: .*u1.base, line 1 and .*u1.test, line 1"),
]


@pytest.mark.parametrize("lines, message", BAD_FILES)
def test_bad_files_raise_data_errors(tmp_path, lines, message):
    write_lines(tmp_path / "u1.base", lines)
    write_lines(tmp_path / "u1.test", ["1\t2\t3\t0"])
    with pytest.raises(DataError, match=message):
        read_movielens_100k(tmp_path, "u1")


def test_other_bad_input_raises_data_errors(folder, tmp_path):
    with pytest.raises(DataError, match=r"line 1: rating 4 lies outside the rating scale 1..3"):
        read_movielens_100k(folder, "u1", rating_scale=(1, 3))
    write_lines(folder / "u2.base", TRAIN)
    write_lines(folder / "u2.test", ["", "  "])
    with pytest.raises(DataError, match="test split .* holds no ratings"):
        read_movielens_100k(folder, "u2")
    with pytest.raises(DataError, match="missing file .*u3.base"):
        read_movielens_100k(folder, "u3")
    with pytest.raises(DataError, match="does not exist"):
        read_movielens_100k(tmp_path / "nowhere", "u1")
    with pytest.raises(DataError, match="unknown split 'u9'.*u1, u2"):
        read_movielens_100k(folder, "u9")
    with pytest.raises(DataError, match="unknown split"):
        load_ratings("movielens-100k", data_dir=folder, split="u6")
    with pytest.raises(DataError, match="orientation"):
        read_movielens_100k(folder, "u1", orientation="column")
    with pytest.raises(DataError, match="unknown rating data set"):
        load_ratings("netflix")
    with pytest.raises(DataError, match="missing file .*ratings.dat"):
        load_ratings("movielens-1m", data_dir=folder)


def test_load_ratings_reads_a_local_folder_or_its_ml_100k_subfolder(folder, tmp_path):
    assert load_ratings("movielens-100k", data_dir=folder).num_test_ratings == len(TEST)
    shutil.copytree(folder, tmp_path / "outer" / "ml-100k")
    assert load_ratings("movielens-100k", data_dir=tmp_path / "outer").num_train_ratings == len(TRAIN)
    assert load_ratings("generated", orientation="user").orientation == "user"
    write_lines(folder / "u1.base", TRAIN + ["7\t5\t-3\t881250958"])  # a damaged file: MovieLens has 1..5 stars
    with pytest.raises(DataError, match="outside .*1..5"):
        load_ratings("movielens-100k", data_dir=folder)
    assert read_movielens_100k(folder).rating_min == -3  # the format reader takes the scale from the files


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake_release(tmp_path, monkeypatch):
    """A small ml-100k.zip made locally, registered as the official source; returns (fetch, calls)."""
    write_movielens_100k(tmp_path / "release" / "ml-100k", num_users=40, num_items=30, density=0.3, seed=2)
    archive = tmp_path / "ml-100k.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        for file in sorted((tmp_path / "release" / "ml-100k").iterdir()):
            bundle.write(file, f"ml-100k/{file.name}")
    source = MovieLensSource("https://example.invalid/ml-100k.zip", sha256(archive), "ml-100k",
                             {"u.data": sha256(tmp_path / "release" / "ml-100k" / "u.data")})
    monkeypatch.setitem(ratings_module.SOURCES, "movielens-100k", source)
    calls = []

    def fetch(url, path):
        calls.append(url)
        shutil.copyfile(archive, path)

    return fetch, calls


def test_download_is_cached_and_checked(cache, fake_release, device):
    fetch, calls = fake_release
    data = load_ratings("movielens-100k", fetch=fetch).to(device)
    assert calls == ["https://example.invalid/ml-100k.zip"]
    assert (cache / "movielens" / "ml-100k" / "u1.base").is_file()
    again = load_ratings("movielens-100k", fetch=fetch).to(device)
    assert len(calls) == 1 and torch.equal(again.test[2], data.test[2])


def test_download_with_a_wrong_checksum_leaves_nothing_behind(cache, fake_release, monkeypatch):
    fetch, _ = fake_release
    source = ratings_module.SOURCES["movielens-100k"]
    monkeypatch.setitem(ratings_module.SOURCES, "movielens-100k",
                        MovieLensSource(source.url, "0" * 64, source.folder, source.file_sha256))
    with pytest.raises(DataError, match="sha256 .* not the known 0{64}"):
        load_ratings("movielens-100k", fetch=fetch)
    assert not any((cache / "movielens").iterdir())


def test_download_with_a_wrong_file_inside_leaves_nothing_behind(cache, fake_release, monkeypatch):
    fetch, _ = fake_release
    source = ratings_module.SOURCES["movielens-100k"]
    monkeypatch.setitem(ratings_module.SOURCES, "movielens-100k",
                        MovieLensSource(source.url, source.sha256, source.folder, {"u.data": "1" * 64}))
    with pytest.raises(DataError, match="ml-100k/u.data has sha256"):
        load_ratings("movielens-100k", fetch=fetch)
    assert not (cache / "movielens" / "ml-100k").exists()


def test_download_failure_says_how_to_get_the_data(cache):
    def offline(url, path):
        raise OSError("network is unreachable")

    with pytest.raises(DataError, match="could not download movielens-1m .*network is unreachable.*--data-dir"):
        load_ratings("movielens-1m", fetch=offline)
    assert not any((cache / "movielens").iterdir())


def test_ratings_from_arrays(device):
    data = ratings_dataset(np.array([[1, 1, 4], [2, 1, 3]]), np.array([[2, 2, 5]]), name="mine").to(device)
    assert (data.num_users, data.num_items, data.num_cold, data.num_cold_items) == (2, 2, 1, 1)
    with pytest.raises(DataError, match="user 1, item 1: train array, row 0 and train array, row 2"):
        ratings_dataset(np.array([[1, 1, 4], [2, 1, 3], [1, 1, 2]]), np.array([[2, 2, 5]]))
    with pytest.raises(DataError, match=r"rows \(user, item, rating"):
        ratings_dataset(np.array([1, 1, 4]), np.array([[2, 2, 5]]))
