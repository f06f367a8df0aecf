"""Datasets: real on-disk formats written tiny, splits, stats, save/load, normalisation, augmentation."""

import gzip
import pickle
import subprocess
import sys

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

import prunelab.data.formats as dataset_files
from prunelab.data import (SPLITS, augment_batch, crop_flip, draw_augment_params, load_prepared, normalize,
                           prepare_dataset, save_prepared, stratified_split)
from prunelab.io import CorruptFileError

# --------------------------------------------------------------------------- writers of the real formats


def make_images(rng, n, shape):
    """Random uint8 images N×shape whose first byte is the image's id (0..n-1)."""
    x = rng.integers(0, 256, size=(n, *shape), dtype=np.uint8)
    x.reshape(n, -1)[:, 0] = np.arange(n)
    return x


def ids(x):
    return x.reshape(len(x), -1)[:, 0].long()


def write_idx(path, array, magic, gz=False):
    header = np.array([magic, *array.shape], dtype=">i4").tobytes()
    data = header + array.astype(np.uint8).tobytes()
    if gz:
        path.with_name(path.name + ".gz").write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)


def write_mnist(root, folder, rng, n_train=50, n_test=20):
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    ref = {}
    for prefix, n, gz in (("train", n_train, True), ("t10k", n_test, False)):
        x = make_images(rng, n, (28, 28))
        y = np.arange(n) % 10
        rng.shuffle(y)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", x, 2051, gz=gz)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", y, 2049, gz=gz)
        ref["train" if prefix == "train" else "test"] = (x, y)
    return ref


def write_cifar(root, name, rng, n_per_batch=8, n_test=12):
    folder, batches, test, meta, label_key, names_key, k = {
        "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                    "batches.meta", b"labels", b"label_names", 10),
        "cifar100": ("cifar-100-python", ["train"], "test", "meta", b"fine_labels", b"fine_label_names", 100),
    }[name]
    base = root / folder
    base.mkdir(parents=True)
    n_train = n_per_batch * len(batches) if name == "cifar10" else 200
    x = make_images(rng, n_train, (3072,))
    y = rng.integers(0, k, size=n_train)
    for i, chunk in enumerate(np.array_split(np.arange(n_train), len(batches))):
        with open(base / batches[i], "wb") as f:
            pickle.dump({b"data": x[chunk], label_key: y[chunk].tolist(), b"coarse_labels": [0] * len(chunk)}, f)
    xt, yt = make_images(rng, n_test, (3072,)), rng.integers(0, k, size=n_test)
    with open(base / test, "wb") as f:
        pickle.dump({b"data": xt, label_key: yt.tolist()}, f)
    names = [f"class_{i}".encode() for i in range(k)]
    with open(base / meta, "wb") as f:
        pickle.dump({names_key: names}, f)
    return {"train": (x, y), "test": (xt, yt)}, [n.decode() for n in names]


def write_svhn(root, rng, n_train=40, n_test=15):
    ref = {}
    for split, n in (("train", n_train), ("test", n_test)):
        x = make_images(rng, n, (3, 32, 32))  # N×C×H×W; the file stores H×W×C×N
        digit = np.arange(n) % 10
        scipy.io.savemat(root / f"{split}_32x32.mat",
                         {"X": x.transpose(2, 3, 1, 0), "y": np.where(digit == 0, 10, digit)[:, None].astype(np.uint8)})
        ref[split] = (x, digit)
    return ref


def write_pngs(folder, rng, per_class, size=(6, 5), mode="RGB", classes=("cat", "dog", "emu")):
    """PNG files folder/<class>/<i>.png; returns {(class index, pixel array)} for checking."""
    written = []
    for label, cls in enumerate(classes):
        (folder / cls).mkdir(parents=True)
        for i in range(per_class):
            shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
            a = rng.integers(0, 256, size=shape, dtype=np.uint8)
            Image.fromarray(a).save(folder / cls / f"{i:03d}.png")
            written.append((label, a))
    return written


def check_partition(data, n_train_pool, val_fraction):
    """val + train partition the official train pool (by id), and the sizes match val_fraction."""
    train_ids, val_ids = ids(data["train"]["x"]), ids(data["val"]["x"])
    assert len(val_ids) == round(n_train_pool * val_fraction)
    assert len(train_ids) + len(val_ids) == n_train_pool
    assert sorted(torch.cat([train_ids, val_ids]).tolist()) == list(range(n_train_pool))


# --------------------------------------------------------------------------- splitting


def test_stratified_split_quotas_by_largest_remainder():
    labels = torch.tensor([0] * 5 + [1] * 3 + [2] * 2)
    first, second = stratified_split(labels, 3, torch.Generator().manual_seed(0))
    # exact quotas 1.5, 0.9, 0.6 → floors 1, 0, 0 → the two largest remainders (classes 1, 2) get one more
    assert torch.bincount(labels[second], minlength=3).tolist() == [1, 1, 1]
    assert sorted(torch.cat([first, second]).tolist()) == list(range(10))
    again = stratified_split(labels, 3, torch.Generator().manual_seed(0))
    assert torch.equal(again[1], second)


def test_digits_sizes_stratified_and_deterministic():
    from sklearn.datasets import load_digits

    data = prepare_dataset("digits", None, val_fraction=0.1, split_seed=3)
    assert data["num_classes"] == 10 and data["classes"] == [str(i) for i in range(10)]
    assert data["in_shape"] == [1, 8, 8]
    sizes = {s: len(data[s]["y"]) for s in SPLITS}
    assert sum(sizes.values()) == 1797 and sizes["test"] == 359 and sizes["val"] == 144
    # every image appears exactly once across splits: compare the multisets of (pixels, label) rows
    ref = load_digits()
    ref_rows = np.hstack([np.floor(ref.data * 255 / 16 + 0.5), ref.target[:, None]]).astype(np.int64)
    rows = np.vstack([np.hstack([data[s]["x"].reshape(len(data[s]["x"]), -1).numpy(), data[s]["y"][:, None].numpy()])
                      for s in SPLITS]).astype(np.int64)
    assert np.array_equal(rows[np.lexsort(rows.T[::-1])], ref_rows[np.lexsort(ref_rows.T[::-1])])
    class_counts = np.bincount(ref.target)
    for split, frac in (("test", 0.2), ("val", 0.1 * 0.8)):
        got = torch.bincount(data[split]["y"], minlength=10).numpy()
        assert np.all(np.abs(got - class_counts * frac) <= 1.5), (split, got)
    # the test split is fixed; val moves with split_seed; same seed → same everything
    other = prepare_dataset("digits", None, val_fraction=0.1, split_seed=4)
    assert torch.equal(other["test"]["x"], data["test"]["x"])
    assert not torch.equal(other["val"]["x"], data["val"]["x"])
    same = prepare_dataset("digits", None, val_fraction=0.1, split_seed=3)
    assert all(torch.equal(same[s][k], data[s][k]) for s in SPLITS for k in "xy")
    # mean / std of the train split on the 0..1 scale
    train = data["train"]["x"].numpy().astype(np.float64) / 255
    assert np.allclose(data["mean"].numpy(), [train.mean()], atol=1e-6)
    assert np.allclose(data["std"].numpy(), [train.std()], atol=1e-6)
    assert data["mean"].dtype == torch.float32 and data["augment"] == {"crop_padding": 1, "hflip": False}


def test_digits_does_not_import_torchvision():
    code = ("import sys; from prunelab.data import prepare_dataset; prepare_dataset('digits', None); "
            "assert 'torchvision' not in sys.modules, 'torchvision imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


# --------------------------------------------------------------------------- torchvision-format datasets


@pytest.mark.parametrize("name, folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_like_from_idx_files(tmp_path, name, folder):
    ref = write_mnist(tmp_path, folder, np.random.default_rng(0))
    data = prepare_dataset(name, tmp_path, val_fraction=0.2, split_seed=1)
    assert data["in_shape"] == [1, 28, 28] and data["num_classes"] == 10
    assert torch.equal(data["test"]["x"][:, 0], torch.from_numpy(ref["test"][0]))  # official test, in order
    assert data["test"]["y"].tolist() == ref["test"][1].tolist()
    check_partition(data, 50, 0.2)
    for split in ("train", "val"):
        i = ids(data[split]["x"]).numpy()
        assert np.array_equal(data[split]["x"][:, 0].numpy(), ref["train"][0][i])
        assert data[split]["y"].tolist() == ref["train"][1][i].tolist()
    assert torch.bincount(data["val"]["y"], minlength=10).tolist() == [1] * 10  # 5 per class → 1 each
    capped = prepare_dataset(name, tmp_path, val_fraction=0.2, split_seed=1, max_train=20)
    assert torch.bincount(capped["train"]["y"], minlength=10).tolist() == [2] * 10
    assert set(ids(capped["train"]["x"]).tolist()) <= set(ids(data["train"]["x"]).tolist())
    assert torch.equal(capped["val"]["x"], data["val"]["x"])  # val does not depend on max_train
    assert data["augment"]["crop_padding"] == 2


def test_truncated_idx_file_names_it(tmp_path):
    write_mnist(tmp_path, "MNIST", np.random.default_rng(0))
    path = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-7])
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.*truncated"):
        prepare_dataset("mnist", tmp_path)


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_cifar_from_pickled_batches(tmp_path, name):
    ref, names = write_cifar(tmp_path, name, np.random.default_rng(1))
    data = prepare_dataset(name, tmp_path, val_fraction=0.25, split_seed=0)
    assert data["classes"] == names and data["num_classes"] == len(names)
    assert data["in_shape"] == [3, 32, 32]
    xt, yt = ref["test"]
    assert torch.equal(data["test"]["x"], torch.from_numpy(xt.reshape(-1, 3, 32, 32)))
    assert data["test"]["y"].tolist() == yt.tolist()
    # channel planes: the first 1024 bytes of a row are the red 32×32 image
    assert torch.equal(data["test"]["x"][:, 0].reshape(len(xt), -1), torch.from_numpy(xt[:, :1024]))
    n_pool = len(ref["train"][1])
    check_partition(data, n_pool, 0.25)
    i = ids(data["train"]["x"]).numpy()
    assert data["train"]["y"].tolist() == ref["train"][1][i].tolist()
    assert data["augment"] == {"crop_padding": 4, "hflip": True}
    pool = torch.from_numpy(ref["train"][0][i].reshape(-1, 3, 32, 32)).double() / 255
    assert torch.allclose(data["mean"].double(), pool.mean((0, 2, 3)), atol=1e-6)
    assert torch.allclose(data["std"].double(), pool.std((0, 2, 3), correction=0), atol=1e-6)


def test_svhn_from_mat_files(tmp_path):
    ref = write_svhn(tmp_path, np.random.default_rng(2))
    data = prepare_dataset("svhn", tmp_path, val_fraction=0.25, split_seed=0)
    assert data["in_shape"] == [3, 32, 32]
    assert torch.equal(data["test"]["x"], torch.from_numpy(ref["test"][0]))
    assert data["test"]["y"].tolist() == ref["test"][1].tolist()  # label 10 read as digit 0
    check_partition(data, 40, 0.25)
    i = ids(data["val"]["x"]).numpy()
    assert data["val"]["y"].tolist() == ref["train"][1][i].tolist()
    assert data["augment"] == {"crop_padding": 4, "hflip": False}


@pytest.mark.parametrize("name, expected", [
    ("mnist", ["MNIST/raw/ (train-images-idx3-ubyte[.gz]", "t10k-labels-idx1-ubyte[.gz])"]),
    ("fashion_mnist", ["FashionMNIST/raw/ (train-images-idx3-ubyte[.gz]"]),
    ("cifar10", ["cifar-10-batches-py/data_batch_5", "cifar-10-batches-py/test_batch"]),
    ("cifar100", ["cifar-100-python/train", "cifar-100-python/meta"]),
    ("svhn", ["train_32x32.mat", "test_32x32.mat"]),
])
def test_missing_files_error_names_them(tmp_path, monkeypatch, name, expected):
    monkeypatch.setitem(dataset_files.SYSTEM_FOLDERS, "fashion_mnist", tmp_path / "no-system-package")
    with pytest.raises(FileNotFoundError) as err:
        prepare_dataset(name, tmp_path)
    message = str(err.value)
    assert "download: true" in message
    for tail in expected:
        assert (str(tmp_path / tail) if "/" in tail.split(" ")[0] else tail) in message


def test_fashion_mnist_error_names_every_place_and_both_fixes(tmp_path, monkeypatch):
    system = tmp_path / "usr-share"
    monkeypatch.setitem(dataset_files.SYSTEM_FOLDERS, "fashion_mnist", system)
    with pytest.raises(FileNotFoundError) as err:
        prepare_dataset("fashion_mnist", tmp_path / "data")
    message = str(err.value)
    for place in (tmp_path / "data" / "FashionMNIST" / "raw", tmp_path / "data", system):
        assert f"{place}/ (" in message
    assert "apt-get install dataset-fashion-mnist" in message and "download: true" in message


def flat_fashion(folder, rng):
    """Debian's layout: the four .gz idx files flat in one folder."""
    ref = write_mnist(folder, "tmp", rng)
    for f in (folder / "tmp" / "raw").iterdir():
        data = f.read_bytes() if f.suffix == ".gz" else gzip.compress(f.read_bytes())
        (folder / (f.name if f.suffix == ".gz" else f.name + ".gz")).write_bytes(data)
    return ref


def test_fashion_mnist_flat_layout_in_data_root(tmp_path, monkeypatch):
    monkeypatch.setitem(dataset_files.SYSTEM_FOLDERS, "fashion_mnist", tmp_path / "none")
    ref = flat_fashion(tmp_path, np.random.default_rng(4))
    data = prepare_dataset("fashion_mnist", tmp_path, val_fraction=0.2)
    assert torch.equal(data["test"]["x"][:, 0], torch.from_numpy(ref["test"][0]))


def test_fashion_mnist_falls_back_to_the_system_folder(tmp_path, monkeypatch):
    system = tmp_path / "system"
    system.mkdir()
    ref = flat_fashion(system, np.random.default_rng(5))
    monkeypatch.setitem(dataset_files.SYSTEM_FOLDERS, "fashion_mnist", system)
    (tmp_path / "data").mkdir()
    data = prepare_dataset("fashion_mnist", tmp_path / "data", val_fraction=0.2)
    assert data["test"]["y"].tolist() == ref["test"][1].tolist()
    # data_root wins over the system folder when it has the files
    own = write_mnist(tmp_path / "data", "FashionMNIST", np.random.default_rng(6))
    data = prepare_dataset("fashion_mnist", tmp_path / "data", val_fraction=0.2)
    assert data["test"]["y"].tolist() == own["test"][1].tolist()


def test_max_test_caps_the_test_split_stratified_in_order(tmp_path):
    ref = write_mnist(tmp_path, "MNIST", np.random.default_rng(7), n_test=40)
    full = prepare_dataset("mnist", tmp_path, val_fraction=0.2)
    capped = prepare_dataset("mnist", tmp_path, val_fraction=0.2, max_test=10)
    assert torch.bincount(capped["test"]["y"], minlength=10).tolist() == [1] * 10
    i = ids(capped["test"]["x"]).tolist()
    order = {v: k for k, v in enumerate(ids(full["test"]["x"]).tolist())}
    assert [order[v] for v in i] == sorted(order[v] for v in i)  # official order kept
    assert torch.equal(capped["train"]["x"], full["train"]["x"]) and torch.equal(capped["val"]["x"], full["val"]["x"])
    assert len(ref["test"][1]) == 40
    with pytest.raises(ValueError, match="max_test"):
        prepare_dataset("mnist", tmp_path, max_test=0)


def test_real_fashion_mnist_from_the_system_package():
    """The real files of Debian's dataset-fashion-mnist (`make data`; .ci/run installs it)."""
    folder = dataset_files.SYSTEM_FOLDERS["fashion_mnist"]
    assert dataset_files.locate_idx("fashion_mnist", folder) == folder, (
        f"Fashion-MNIST is not installed in {folder}: run `make data` (apt-get install dataset-fashion-mnist)")
    data = prepare_dataset("fashion_mnist", "/nonexistent-data-root", val_fraction=0.1, max_train=3000,
                           max_test=1000)
    assert data["in_shape"] == [1, 28, 28] and data["classes"][0] == "T-shirt/top"
    assert [len(data[s]["y"]) for s in ("train", "val", "test")] == [3000, 6000, 1000]
    assert torch.bincount(data["test"]["y"]).tolist() == [100] * 10  # the official test set is balanced
    assert torch.bincount(data["val"]["y"]).tolist() == [600] * 10
    # published pixel statistics of Fashion-MNIST's train set: mean 0.2860, std 0.3530
    assert abs(float(data["mean"]) - 0.286) < 0.005 and abs(float(data["std"]) - 0.353) < 0.005


def test_only_missing_files_are_listed(tmp_path):
    write_svhn(tmp_path, np.random.default_rng(0))
    (tmp_path / "test_32x32.mat").unlink()
    with pytest.raises(FileNotFoundError) as err:
        prepare_dataset("svhn", tmp_path)
    assert "test_32x32.mat" in str(err.value) and "train_32x32.mat" not in str(err.value)


# --------------------------------------------------------------------------- image folders


def test_imagefolder_rgb_with_test_folder(tmp_path):
    rng = np.random.default_rng(3)
    train = write_pngs(tmp_path / "train", rng, per_class=8)
    test = write_pngs(tmp_path / "test", rng, per_class=2)
    data = prepare_dataset("imagefolder", tmp_path, val_fraction=0.25)
    assert data["classes"] == ["cat", "dog", "emu"] and data["in_shape"] == [3, 5, 6]
    assert [int(y) for y in data["test"]["y"]] == [label for label, _ in test]  # sorted files, in order
    assert torch.equal(data["test"]["x"], torch.from_numpy(np.stack([a.transpose(2, 0, 1) for _, a in test])))
    assert torch.bincount(data["val"]["y"]).tolist() == [2, 2, 2]
    pool = {(label, a.transpose(2, 0, 1).tobytes()) for label, a in train}
    got = {(int(y), x.numpy().tobytes()) for s in ("train", "val") for x, y in zip(data[s]["x"], data[s]["y"])}
    assert got == pool and len(data["train"]["y"]) + len(data["val"]["y"]) == 24
    assert data["augment"] == {"crop_padding": 1, "hflip": True}


def test_imagefolder_grayscale_single_folder_carves_test(tmp_path):
    rng = np.random.default_rng(4)
    write_pngs(tmp_path, rng, per_class=10, mode="L", classes=("a", "b"))
    data = prepare_dataset("imagefolder", tmp_path, val_fraction=0.25)
    assert data["in_shape"] == [1, 5, 6]
    assert torch.bincount(data["test"]["y"]).tolist() == [2, 2]  # 20 % of each class
    assert len(data["val"]["y"]) == 4 and len(data["train"]["y"]) == 12


def test_imagefolder_sizes_differ(tmp_path):
    rng = np.random.default_rng(5)
    write_pngs(tmp_path / "train", rng, per_class=4, classes=("a",))
    write_pngs(tmp_path / "train", rng, per_class=4, size=(9, 7), classes=("b",))
    with pytest.raises(ValueError, match="differ in size.*image_size"):
        prepare_dataset("imagefolder", tmp_path)
    data = prepare_dataset("imagefolder", tmp_path, image_size=16, val_fraction=0.25)
    assert data["in_shape"] == [3, 16, 16] and data["train"]["x"].shape[1:] == (3, 16, 16)
    assert data["augment"]["crop_padding"] == 2


def test_bad_arguments_fail_early():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'"):
        prepare_dataset("imagenet", None)
    with pytest.raises(ValueError, match="val_fraction"):
        prepare_dataset("digits", None, val_fraction=1.0)
    with pytest.raises(ValueError, match="max_train"):
        prepare_dataset("digits", None, max_train=0)


# --------------------------------------------------------------------------- save / load


def tiny_prepared():
    g = torch.Generator().manual_seed(0)
    split = lambda n: {"x": torch.randint(0, 256, (n, 2, 3, 3), generator=g, dtype=torch.uint8),  # noqa: E731
                       "y": torch.randint(0, 3, (n,), generator=g)}
    return {"name": "toy", "classes": ["a", "b", "c"], "num_classes": 3, "in_shape": [2, 3, 3],
            "train": split(7), "val": split(2), "test": split(3), "mean": torch.tensor([0.4, 0.5]),
            "std": torch.tensor([0.2, 0.3]), "augment": {"crop_padding": 1, "hflip": True}, "split_seed": 5}


def test_save_load_round_trip(tmp_path):
    data = tiny_prepared()
    path = tmp_path / "data" / "toy.pt"
    save_prepared(data, path)
    assert [p.name for p in path.parent.iterdir()] == ["toy.pt"]  # no temporary file left
    back = load_prepared(path)
    assert all(torch.equal(back[s][k], data[s][k]) for s in SPLITS for k in "xy")
    assert {k: v for k, v in back.items() if k not in (*SPLITS, "mean", "std")} == \
           {k: v for k, v in data.items() if k not in (*SPLITS, "mean", "std")}
    assert torch.equal(back["mean"], data["mean"]) and torch.equal(back["std"], data["std"])


def test_save_rejects_bad_data_and_load_reports_broken_files(tmp_path):
    data = tiny_prepared()
    data["train"]["y"] = data["train"]["y"].int()
    with pytest.raises(ValueError, match="train.y must be int64"):
        save_prepared(data, tmp_path / "bad.pt")
    path = tmp_path / "toy.pt"
    with pytest.raises(CorruptFileError, match="toy.pt does not exist.*snakemake --cores all --forcerun prepare_data"):
        load_prepared(path)
    save_prepared(tiny_prepared(), path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CorruptFileError, match="toy.pt is truncated or corrupt.*snakemake --cores all --forcerun prepare_data"):
        load_prepared(path)


# --------------------------------------------------------------------------- normalisation, augmentation


def test_normalize_per_channel():
    x = torch.randint(0, 256, (4, 3, 5, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    mean, std = torch.tensor([0.1, 0.5, 0.9]), torch.tensor([0.2, 0.25, 0.5])
    got = normalize(x, mean, std)
    assert got.dtype == torch.float32
    for c in range(3):
        ref = (x[:, c].double() / 255 - mean[c].item()) / std[c].item()
        assert torch.allclose(got[:, c].double(), ref, atol=1e-5)
    assert torch.allclose(normalize(x[0], mean, std), got[0])
    with pytest.raises(TypeError, match="uint8"):
        normalize(x.float(), mean, std)


def brute_force_crop_flip(x, offsets, flip, p):
    out = torch.empty_like(x)
    for i in range(len(x)):
        padded = torch.zeros(x.shape[1], x.shape[2] + 2 * p, x.shape[3] + 2 * p, dtype=x.dtype)
        padded[:, p:p + x.shape[2], p:p + x.shape[3]] = x[i]
        r, c = offsets[i].tolist()
        window = padded[:, r:r + x.shape[2], c:c + x.shape[3]]
        out[i] = window.flip(-1) if flip[i] else window
    return out


@pytest.mark.parametrize("p, hflip", [(0, True), (2, False), (3, True)])
def test_augment_matches_brute_force(p, hflip):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 2, 5, 7, generator=g)
    offsets, flip = draw_augment_params(16, p, hflip, torch.Generator().manual_seed(1))
    assert int(offsets.min()) >= 0 and int(offsets.max()) <= 2 * p
    assert bool(flip.any()) == hflip
    assert torch.equal(crop_flip(x, offsets, flip, p), brute_force_crop_flip(x, offsets, flip, p))
    got = augment_batch(x, p, hflip, torch.Generator().manual_seed(1))
    assert torch.equal(got, brute_force_crop_flip(x, offsets, flip, p))


def test_augment_deterministic_and_seeded():
    x = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    a = augment_batch(x, 4, True, torch.Generator().manual_seed(7))
    b = augment_batch(x, 4, True, torch.Generator().manual_seed(7))
    c = augment_batch(x, 4, True, torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert augment_batch(x, 0, False, torch.Generator()) is x
    with pytest.raises(ValueError, match="crop_padding"):
        augment_batch(x, -1, False, torch.Generator())
