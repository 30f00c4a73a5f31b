"""Image loaders: IDX and .amat files written here in the exact formats, binarisation, synthetic images, downloads."""

import gzip
import hashlib
import shutil
import struct
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_vi_zoo.data import images
from pyro_vi_zoo.data.images import (
    ImageDataset,
    binarize,
    images_from_arrays,
    load_images,
    read_binarized_mnist,
    read_mnist,
    synthetic_images,
)
from pyro_vi_zoo.errors import DataError, ZooError

NUM_TRAIN, NUM_TEST = 6, 4


# ----------------------------------------------------------------------------- writers of the exact formats


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    """An IDX file: big-endian int32 magic number and dimensions, then the uint8 values."""
    header = struct.pack(f">{1 + array.ndim}i", magic, *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_gz(path: Path, content: bytes) -> Path:
    with gzip.open(path, "wb") as stream:
        stream.write(content)
    return path


def mnist_arrays(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "train-images-idx3-ubyte": (rng.integers(0, 256, (NUM_TRAIN, 28, 28)), 2051),
        "train-labels-idx1-ubyte": (rng.integers(0, 10, NUM_TRAIN), 2049),
        "t10k-images-idx3-ubyte": (rng.integers(0, 256, (NUM_TEST, 28, 28)), 2051),
        "t10k-labels-idx1-ubyte": (rng.integers(0, 10, NUM_TEST), 2049),
    }


def write_mnist(folder: Path, arrays=None, compress=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, (array, magic) in (arrays or mnist_arrays()).items():
        if compress:
            write_gz(folder / f"{stem}.gz", idx_bytes(array, magic))
        else:
            (folder / stem).write_bytes(idx_bytes(array, magic))
    return folder


def amat_text(rows: np.ndarray) -> bytes:
    """Larochelle's .amat layout: each row's values separated by single spaces, one line per image."""
    return "".join(" ".join(str(int(v)) for v in row) + "\n" for row in rows).encode()


def binarized_rows(seed=0):
    rng = np.random.default_rng(seed)
    return {"train": rng.integers(0, 2, (5, 784)), "valid": rng.integers(0, 2, (2, 784)),
            "test": rng.integers(0, 2, (3, 784))}


def write_binarized(folder: Path, rows=None, compress=True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for split, values in (rows or binarized_rows()).items():
        name = f"binarized_mnist_{split}.amat"
        if compress:
            write_gz(folder / f"{name}.gz", amat_text(values))
        else:
            (folder / name).write_bytes(amat_text(values))
    return folder


def on_device(dataset: ImageDataset, device) -> ImageDataset:
    moved = dataset.to(device)
    assert moved.train[0].device.type == torch.device(device).type
    return moved


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ----------------------------------------------------------------------------- MNIST IDX files


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "uncompressed"])
def test_read_mnist_scales_pixels_and_keeps_labels(tmp_path, device, compress):
    arrays = mnist_arrays()
    dataset = on_device(read_mnist(write_mnist(tmp_path, arrays, compress)), device)
    train_pixels, train_labels = arrays["train-images-idx3-ubyte"][0], arrays["train-labels-idx1-ubyte"][0]
    assert dataset.train[0].shape == (NUM_TRAIN, 784) and dataset.test[0].shape == (NUM_TEST, 784)
    assert dataset.train[0].dtype == torch.float32
    expected = torch.as_tensor(train_pixels.reshape(NUM_TRAIN, 784) / 255.0, dtype=torch.float32)
    assert torch.allclose(dataset.train[0].cpu(), expected)
    assert set(dataset.test[0].unique().tolist()) <= {0.0, 1.0}
    assert np.array_equal(dataset.train_labels, train_labels)
    assert dataset.binarization == "dynamic" and dataset.image_shape == (28, 28) and dataset.name == "mnist"


def test_read_mnist_keeps_the_first_rows(tmp_path):
    dataset = read_mnist(write_mnist(tmp_path), num_train=2, num_test=3)
    assert dataset.num_train == 2 and dataset.num_test == 3 and len(dataset.train_labels) == 2


def test_bad_magic_number(tmp_path):
    arrays = mnist_arrays()
    arrays["train-images-idx3-ubyte"] = (arrays["train-images-idx3-ubyte"][0], 2049)
    with pytest.raises(DataError, match="magic number 2049, not 2051"):
        read_mnist(write_mnist(tmp_path, arrays))


def test_images_not_28_by_28(tmp_path):
    arrays = mnist_arrays()
    arrays["t10k-images-idx3-ubyte"] = (np.zeros((NUM_TEST, 27, 27)), 2051)
    with pytest.raises(DataError, match="27x27 images, not 28x28"):
        read_mnist(write_mnist(tmp_path, arrays))


def test_label_count_does_not_match_images(tmp_path):
    arrays = mnist_arrays()
    arrays["train-labels-idx1-ubyte"] = (np.zeros(NUM_TRAIN - 1), 2049)
    with pytest.raises(DataError, match=f"train label count {NUM_TRAIN - 1} does not match its {NUM_TRAIN} images"):
        read_mnist(write_mnist(tmp_path, arrays))


def test_truncated_gz_file(tmp_path):
    folder = write_mnist(tmp_path)
    path = folder / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz is truncated or corrupt"):
        read_mnist(folder)


def test_corrupt_gz_file(tmp_path):
    folder = write_mnist(tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"this is not gzip data at all")
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz is truncated or corrupt"):
        read_mnist(folder)


def test_idx_content_shorter_than_its_header_says(tmp_path):
    folder = write_mnist(tmp_path)
    content = idx_bytes(mnist_arrays()["train-images-idx3-ubyte"][0], 2051)
    write_gz(folder / "train-images-idx3-ubyte.gz", content[:-100])
    with pytest.raises(DataError, match="truncated or corrupt: its header promises"):
        read_mnist(folder)


def test_missing_folder_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="missing folder"):
        read_mnist(tmp_path / "nowhere")
    folder = write_mnist(tmp_path / "mnist")
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="missing file .*t10k-labels-idx1-ubyte.gz"):
        read_mnist(folder)


# ----------------------------------------------------------------------------- binarised MNIST .amat files


@pytest.mark.parametrize("compress", [True, False], ids=["gz", "text"])
def test_read_binarized_mnist_joins_train_and_valid(tmp_path, device, compress):
    rows = binarized_rows()
    dataset = on_device(read_binarized_mnist(write_binarized(tmp_path, rows, compress)), device)
    expected_train = np.concatenate([rows["train"], rows["valid"]])
    assert dataset.train[0].shape == (7, 784) and dataset.test[0].shape == (3, 784)
    assert np.array_equal(dataset.train[0].cpu().numpy(), expected_train)
    assert np.array_equal(dataset.test[0].cpu().numpy(), rows["test"])
    assert dataset.binarization == "fixed" and dataset.train_labels is None


def test_binarized_mnist_in_another_whitespace_layout(tmp_path):
    rows = binarized_rows()
    folder = write_binarized(tmp_path, rows)
    loose = "".join("  ".join(str(v) for v in row) + " \r\n" for row in rows["test"]).encode()
    write_gz(folder / "binarized_mnist_test.amat.gz", loose)
    assert np.array_equal(read_binarized_mnist(folder).test[0].numpy(), rows["test"])


def test_binarized_row_not_784_wide(tmp_path):
    rows = binarized_rows()
    rows["valid"] = rows["valid"][:, :783]
    with pytest.raises(DataError, match="row 1 of .*valid.* has 783 values, not 784"):
        read_binarized_mnist(write_binarized(tmp_path, rows))


@pytest.mark.parametrize("value", [2, 0.5])
def test_binarized_values_not_zero_or_one(tmp_path, value):
    rows = {split: values.astype(float) for split, values in binarized_rows().items()}
    rows["test"][1, 10] = value
    folder = write_binarized(tmp_path, binarized_rows())
    text = "".join(" ".join(f"{v:g}" for v in row) + "\n" for row in rows["test"]).encode()
    write_gz(folder / "binarized_mnist_test.amat.gz", text)
    with pytest.raises(DataError, match=f"value {value:g} at row 2, column 11; .* must be 0 or 1"):
        read_binarized_mnist(folder)


def test_binarized_truncated_gz_and_missing_file(tmp_path):
    folder = write_binarized(tmp_path)
    path = folder / "binarized_mnist_train.amat.gz"
    path.write_bytes(path.read_bytes()[:30])
    with pytest.raises(DataError, match="binarized_mnist_train.amat.gz is truncated or corrupt"):
        read_binarized_mnist(folder)
    path.unlink()
    with pytest.raises(DataError, match=r"missing file .*binarized_mnist_train.amat.*put the three binarized_mnist_\*"):
        read_binarized_mnist(folder)


# ----------------------------------------------------------------------------- users' arrays and binarisation


def test_users_arrays_in_either_shape(device):
    rng = np.random.default_rng(0)
    square = rng.uniform(size=(5, 28, 28))
    dataset = on_device(images_from_arrays(square, rng.uniform(size=(3, 784)), train_labels=np.arange(5)), device)
    assert dataset.train[0].shape == (5, 784) and dataset.test[0].shape == (3, 784)
    assert np.allclose(dataset.train[0].cpu().numpy(), square.reshape(5, 784))
    assert load_images(torch.as_tensor(square)).test is None


@pytest.mark.parametrize("values, message", [
    (np.full((2, 784), 255.0), r"values outside \[0, 1\] \(from 255 to 255\)"),
    (np.full((2, 784), -0.5), r"values outside \[0, 1\]"),
    (np.zeros((2, 100)), r"shape \(2, 100\), not 28x28"),
    (np.zeros((2, 32, 32)), r"not 28x28"),
    (np.full((2, 784), np.nan), "NaN"),
])
def test_users_bad_arrays(values, message):
    with pytest.raises(DataError, match=message):
        load_images(values)


def test_users_labels_must_match_images():
    with pytest.raises(DataError, match="training labels count 4 does not match the image count 5"):
        images_from_arrays(np.zeros((5, 784)), train_labels=np.arange(4))


def test_dynamic_test_binarisation_is_seeded_and_keeps_the_grey_mean(device):
    grey = np.random.default_rng(0).uniform(0.0, 0.6, size=(300, 784))
    first = images_from_arrays(grey[:10], grey, seed=3)
    again = images_from_arrays(grey[:10], grey, seed=3)
    other = images_from_arrays(grey[:10], grey, seed=4)
    test = on_device(first, device).test[0]
    assert torch.equal(first.test[0], again.test[0]) and not torch.equal(first.test[0], other.test[0])
    assert set(test.unique().tolist()) == {0.0, 1.0}
    assert abs(test.mean().item() - grey.mean()) < 0.005
    assert torch.allclose(first.train[0], torch.as_tensor(grey[:10], dtype=torch.float32))  # train stays grey


def test_fixed_binarisation_binarises_training_images_too():
    grey = np.random.default_rng(1).uniform(size=(4, 784))
    dataset = images_from_arrays(grey, grey, binarization="fixed")
    assert set(dataset.train[0].unique().tolist()) == {0.0, 1.0}
    with pytest.raises(ZooError, match="unknown binarization"):
        images_from_arrays(grey, binarization="threshold")


def test_binarize_per_batch_is_reproducible_on_the_device(device):
    grey = torch.full((50, 784), 0.25, device=device)
    draw = lambda seed: binarize(grey, torch.Generator(device=device).manual_seed(seed))
    assert torch.equal(draw(7), draw(7)) and not torch.equal(draw(7), draw(8))
    assert draw(7).device == grey.device and set(draw(7).unique().tolist()) == {0.0, 1.0}
    assert abs(draw(7).mean().item() - 0.25) < 0.01


# ----------------------------------------------------------------------------- synthetic images


def test_synthetic_images_shape_range_and_seed(device):
    first, again, other = (synthetic_images(60, 20, seed=seed) for seed in (0, 0, 1))
    dataset = on_device(first, device)
    assert dataset.train[0].shape == (60, 784) and dataset.test[0].shape == (20, 784)
    assert 0.0 <= first.train[0].min() and first.train[0].max() <= 1.0
    assert set(first.test[0].unique().tolist()) == {0.0, 1.0}
    assert torch.equal(first.train[0], again.train[0]) and np.array_equal(first.train_labels, again.train_labels)
    assert not torch.equal(first.train[0], other.train[0])
    assert set(first.train_labels.tolist()) <= set(range(len(images.SYNTHETIC_CLASSES)))


def test_synthetic_images_have_structure():
    """Not noise: dark background, smooth strokes (neighbouring pixels correlate), classes differ on average."""
    dataset = synthetic_images(400, 0, seed=2)
    pixels = dataset.train[0].numpy().reshape(-1, 28, 28)
    assert 0.05 < pixels.mean() < 0.3 and np.mean(pixels < 0.01) > 0.5
    neighbours = np.corrcoef(pixels[:, :, :-1].ravel(), pixels[:, :, 1:].ravel())[0, 1]
    assert neighbours > 0.8
    class_means = np.stack([pixels[dataset.train_labels == label].mean(0) for label in range(8)])
    assert np.min([np.abs(class_means[i] - class_means[j]).max() for i in range(8) for j in range(i)]) > 0.1


# ----------------------------------------------------------------------------- load_images, cache, downloads


def copy_from(source: Path, calls: list):
    """A stand-in for the network: 'downloads' a URL by copying the file of the same name from ``source``."""

    def fetch(url, path):
        calls.append(url)
        shutil.copyfile(source / url.rsplit("/", 1)[-1], path)

    return fetch


@pytest.fixture
def mnist_server(tmp_path, monkeypatch):
    """Tiny MNIST files behind a fake fetch_url, with the known checksums set to theirs."""
    source = write_mnist(tmp_path / "server")
    for file in images.MNIST_SHA256:
        monkeypatch.setitem(images.MNIST_SHA256, file, sha256(source / file))
    calls = []
    monkeypatch.setattr(images, "fetch_url", copy_from(source, calls))
    return source, calls


def test_download_mnist_once_into_the_cache(cache, mnist_server, device):
    _, calls = mnist_server
    dataset = on_device(load_images("mnist", seed=0), device)
    assert dataset.num_train == NUM_TRAIN
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(images.MNIST_SHA256)
    mirror = "https://storage.googleapis.com/cvdf-datasets/mnist/"
    assert len(calls) == 4 and all(url.startswith(mirror) for url in calls)
    load_images("mnist")
    assert len(calls) == 4  # read from the cache the second time


def test_download_with_checksum_mismatch_leaves_nothing(cache, mnist_server, monkeypatch):
    monkeypatch.setitem(images.MNIST_SHA256, "t10k-images-idx3-ubyte.gz", "0" * 64)
    with pytest.raises(DataError, match="checksum mismatch: the download of .*t10k-images-idx3-ubyte.gz"):
        load_images("mnist")
    assert "t10k-images-idx3-ubyte.gz" not in {p.name for p in (cache / "mnist").iterdir()}
    assert not any(p.name.startswith(".") for p in (cache / "mnist").iterdir())  # no temporary file left


def test_corrupted_cached_file_is_named(cache, mnist_server):
    load_images("mnist")
    cached = cache / "mnist" / "train-labels-idx1-ubyte.gz"
    cached.write_bytes(cached.read_bytes()[:-3] + b"abc")
    with pytest.raises(DataError, match=f"checksum mismatch: {cached}.*Delete it"):
        load_images("mnist")


def test_local_folder_checksums(tmp_path, monkeypatch):
    folder = write_mnist(tmp_path / "mnist")
    with pytest.raises(DataError, match="checksum mismatch: .*train-images-idx3-ubyte.gz.*verify=False"):
        load_images("mnist", data_dir=folder)
    assert load_images("mnist", data_dir=folder, verify=False).num_train == NUM_TRAIN


def test_download_failure_says_how_to_fix(cache, monkeypatch):
    def offline(url, path):
        raise urllib.error.URLError("no network")

    with pytest.raises(DataError, match="could not download .* pass data_dir"):
        load_images("mnist", fetch=offline)
    assert not any((cache / "mnist").iterdir())


def test_download_binarized_mnist_checks_the_text_and_caches_it_gzipped(tmp_path, cache, monkeypatch):
    rows = binarized_rows()
    source = write_binarized(tmp_path / "server", rows, compress=False)
    for split in rows:
        monkeypatch.setitem(images.BINARIZED_MNIST_SHA256, split, sha256(source / f"binarized_mnist_{split}.amat"))
    calls = []
    dataset = load_images("binarized-mnist", fetch=copy_from(source, calls))
    assert all(url.startswith("http://www.cs.toronto.edu/~larocheh/") for url in calls) and len(calls) == 3
    assert np.array_equal(dataset.test[0].numpy(), rows["test"])
    cached = cache / "binarized-mnist" / "binarized_mnist_test.amat.gz"
    assert gzip.decompress(cached.read_bytes()) == (source / "binarized_mnist_test.amat").read_bytes()
    monkeypatch.setitem(images.BINARIZED_MNIST_SHA256, "test", "0" * 64)
    with pytest.raises(DataError, match=f"checksum mismatch: {cached}"):
        load_images("binarized-mnist", fetch=copy_from(source, calls))


def test_load_images_by_name_and_its_errors(tmp_path):
    assert load_images("synthetic", num_train=30, num_test=10).num_test == 10
    with pytest.raises(DataError, match="unknown image data set 'cifar'"):
        load_images("cifar")
    with pytest.raises(DataError, match=r"drop --data-dir \(data_dir\)"):
        load_images("synthetic", data_dir=tmp_path)
    with pytest.raises(ZooError, match="binarization is 'fixed'"):
        load_images("binarized-mnist", data_dir=tmp_path, binarization="dynamic")
