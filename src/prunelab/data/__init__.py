"""Prepared datasets: fixed train/val/test splits, normalisation stats, batched augmentation.

A prepared dataset is a dict (saved with torch.save; only tensors, lists, dicts, str, int, float, bool):
    name, classes [str], num_classes, in_shape [C, H, W],
    train/val/test: {"x": uint8 N×C×H×W, "y": int64 N},
    mean, std: float32 C (train split, 0..1 scale), augment: {"crop_padding", "hflip"}, split_seed.

Splits. The official test split is kept as is. Datasets without one (digits, an image folder with no
test/ folder) get a stratified test split of TEST_FRACTION carved with the fixed seed TEST_SPLIT_SEED,
so it is the same whatever split_seed. val is carved from the official train split, stratified, with
split_seed; it does not depend on max_train, which then caps the train split (stratified subsample).

Augmentation randomness is drawn with the caller's generator on the generator's device (a CPU
generator is the intended use: then the same seed gives the same crops and flips on every device),
and the draws are moved to the batch's device.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from prunelab.data import formats as io
from prunelab.io import CorruptFileError, load_torch, regenerate_hint, save_torch

DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10", "cifar100", "svhn", "imagefolder")
TEST_FRACTION = 0.2  # for datasets without an official test split
TEST_SPLIT_SEED = 0  # fixed: the test split never moves with split_seed
# Fashion-MNIST flips: its classes (garments, shoes, bags) are mirror-invariant, unlike digits.
DEFAULT_AUGMENT = {
    "digits": {"crop_padding": 1, "hflip": False},
    "mnist": {"crop_padding": 2, "hflip": False},
    "fashion_mnist": {"crop_padding": 2, "hflip": True},
    "cifar10": {"crop_padding": 4, "hflip": True},
    "cifar100": {"crop_padding": 4, "hflip": True},
    "svhn": {"crop_padding": 4, "hflip": False},
}  # imagefolder: crop_padding = max(1, min(H, W) // 8), hflip
SPLITS = ("train", "val", "test")


# --------------------------------------------------------------------------- splitting and stats

def stratified_split(labels: torch.Tensor, n_second: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Split indices 0..N-1 into (first, second) with len(second) == n_second, stratified by label.

    Class k gets floor(n_k·n_second/N) in `second`, plus one for the classes with the largest
    remainders (ties: lower class) until the total is n_second. Which members go is a seeded random
    choice. Both index tensors (int64) are sorted ascending.
    """
    n = len(labels)
    if not 0 <= n_second <= n:
        raise ValueError(f"stratified_split: cannot take {n_second} of {n} samples")
    if n == 0:
        return labels.new_zeros(0), labels.new_zeros(0)
    counts = torch.bincount(labels)
    quota, remainder = counts * n_second // n, counts * n_second % n
    order = torch.argsort(-remainder, stable=True)
    quota[order[: n_second - int(quota.sum())]] += 1
    perm = torch.randperm(n, generator=generator)
    by_class = perm[torch.argsort(labels[perm], stable=True)]  # grouped by class, shuffled within
    sorted_labels = labels[by_class]
    class_start = torch.cumsum(counts, 0) - counts
    rank_in_class = torch.arange(n) - class_start[sorted_labels]
    chosen = rank_in_class < quota[sorted_labels]
    return by_class[~chosen].sort().values, by_class[chosen].sort().values


def channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and (population) std of uint8 images N×C×H×W on the 0..1 scale (float32 C)."""
    values = torch.arange(256, dtype=torch.float64) / 255.0
    means, stds = [], []
    for c in range(x.shape[1]):  # a 256-bin histogram per channel: exact, no float copy of the images
        hist = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        mean = (hist * values).sum() / hist.sum()
        means.append(mean)
        stds.append(((hist * (values - mean) ** 2).sum() / hist.sum()).sqrt())
    std = torch.stack(stds).clamp_min(1e-6)  # a constant channel normalises to 0, not NaN
    return torch.stack(means).float(), std.float()


def resize_uint8(x: torch.Tensor, size: int, chunk: int = 4096) -> torch.Tensor:
    """Bilinear (antialiased) resize of uint8 images N×C×H×W to N×C×size×size."""
    if x.shape[-2:] == (size, size):
        return x
    out = [F.interpolate(part.float(), size=(size, size), mode="bilinear", antialias=True,
                         align_corners=False).round_().clamp_(0, 255).to(torch.uint8)
           for part in x.split(chunk)]
    return torch.cat(out)


# --------------------------------------------------------------------------- preparation

def _read_raw(name: str, root: Path | None, download: bool,
              image_size: int | None) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    if name == "digits":
        x, y, classes = io.read_digits()
        return {"train": (x, y)}, classes
    if root is None:
        raise ValueError(f"prepare_dataset: {name!r} needs data_root")
    if name == "imagefolder":
        return io.read_imagefolder(root, image_size)
    missing = io.missing_files(name, root)
    if missing and download:
        io.download(name, root)
        missing = io.missing_files(name, root)
    if missing:
        raise FileNotFoundError(f"{name}: expected files not found; looked for:\n  " + "\n  ".join(missing)
                                + f"\n{io.missing_files_hint(name, root, download)}")
    if name in ("mnist", "fashion_mnist"):
        return io.read_mnist_like(name, root)
    if name in ("cifar10", "cifar100"):
        return io.read_cifar(name, root)
    return io.read_svhn(root)


def _check_args(name: str, val_fraction: float, image_size: int | None, max_train: int | None,
                max_test: int | None) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction!r}")
    for arg, value in (("image_size", image_size), ("max_train", max_train), ("max_test", max_test)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{arg} must be a positive int or None, got {value!r}")


def prepare_dataset(name: str, data_root: str | Path | None, download: bool = False,
                    val_fraction: float = 0.1, split_seed: int = 0, image_size: int | None = None,
                    max_train: int | None = None, max_test: int | None = None) -> dict:
    """Read dataset `name` from `data_root` and return the prepared dict (see the module docstring).

    download: fetch missing files with torchvision (never for digits, bundled, or imagefolder).
    image_size: resize every image to image_size×image_size (bilinear); required for an image folder
    whose images differ in size. max_train / max_test: caps on the train / test splits (stratified
    subsamples, seeded by split_seed; the validation split does not depend on them).
    """
    _check_args(name, val_fraction, image_size, max_train, max_test)
    root = None if data_root is None else Path(data_root)
    raw, classes = _read_raw(name, root, download, image_size)
    where = name if root is None else f"{name} ({root})"
    splits = {s: (torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)) for s, (x, y) in raw.items()}
    for split, (x, y) in splits.items():
        if x.dtype != torch.uint8 or x.ndim != 4 or len(x) != len(y):
            raise ValueError(f"{where}: {split} images {tuple(x.shape)} {x.dtype} for {len(y)} labels")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(classes)):
            raise ValueError(f"{where}: {split} labels outside 0..{len(classes) - 1}")
    if "test" not in splits:
        x, y = splits["train"]
        rest, test = stratified_split(y, round(len(y) * TEST_FRACTION),
                                      torch.Generator().manual_seed(TEST_SPLIT_SEED))
        splits = {"train": (x[rest], y[rest]), "test": (x[test], y[test])}
    if image_size is not None:
        splits = {s: (resize_uint8(x, image_size), y) for s, (x, y) in splits.items()}
    if splits["train"][0].shape[1:] != splits["test"][0].shape[1:]:
        raise ValueError(f"{where}: train images {tuple(splits['train'][0].shape[1:])} and test images "
                         f"{tuple(splits['test'][0].shape[1:])} differ in shape")

    x, y = splits.pop("train")
    n_val = round(len(y) * val_fraction)
    if not 0 < n_val < len(y):
        raise ValueError(f"{where}: val_fraction={val_fraction} of {len(y)} train images leaves "
                         f"{n_val} for validation; need at least one in each of train and val")
    generator = torch.Generator().manual_seed(split_seed)
    train, val = stratified_split(y, n_val, generator)
    splits["val"] = (x[val], y[val])
    if max_train is not None and max_train < len(train):
        _, kept = stratified_split(y[train], max_train, generator)
        train = train[kept]
    splits["train"] = (x[train], y[train])
    x_test, y_test = splits["test"]
    if max_test is not None and max_test < len(y_test):
        _, kept = stratified_split(y_test, max_test, torch.Generator().manual_seed(split_seed))
        splits["test"] = (x_test[kept], y_test[kept])

    c, h, w = splits["train"][0].shape[1:]
    mean, std = channel_stats(splits["train"][0])
    augment = dict(DEFAULT_AUGMENT.get(name, {"crop_padding": max(1, min(h, w) // 8), "hflip": True}))
    return {
        "name": name, "classes": list(classes), "num_classes": len(classes), "in_shape": [c, h, w],
        **{s: {"x": splits[s][0], "y": splits[s][1]} for s in SPLITS},
        "mean": mean, "std": std, "augment": augment, "split_seed": int(split_seed),
    }


# --------------------------------------------------------------------------- file I/O

def validate_prepared(data: dict, where: str = "prepared dataset") -> None:
    """Raise ValueError naming `where` unless `data` follows the prepared-dataset contract."""
    keys = ("name", "classes", "num_classes", "in_shape", *SPLITS, "mean", "std", "augment", "split_seed")
    if not isinstance(data, dict) or any(k not in data for k in keys):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ValueError(f"{where}: expected a dict with keys {list(keys)}, found {found}")
    if len(data["classes"]) != data["num_classes"]:
        raise ValueError(f"{where}: {len(data['classes'])} class names for num_classes={data['num_classes']}")
    c = data["in_shape"][0]
    for s in SPLITS:
        x, y = data[s].get("x"), data[s].get("y")
        if not (isinstance(x, torch.Tensor) and x.dtype == torch.uint8 and list(x.shape[1:]) == data["in_shape"]):
            raise ValueError(f"{where}: {s}.x must be uint8 N×{'×'.join(map(str, data['in_shape']))}")
        if not (isinstance(y, torch.Tensor) and y.dtype == torch.int64 and y.shape == (len(x),)):
            raise ValueError(f"{where}: {s}.y must be int64 of length {len(x)}")
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= data["num_classes"]):
            raise ValueError(f"{where}: {s}.y has labels outside 0..{data['num_classes'] - 1}")
    for k in ("mean", "std"):
        if not (isinstance(data[k], torch.Tensor) and data[k].dtype == torch.float32 and data[k].shape == (c,)):
            raise ValueError(f"{where}: {k} must be float32 of length {c}")


def save_prepared(data: dict, path: str | Path) -> None:
    """Validate and write `data` to `path` atomically (prunelab.io.save_torch)."""
    validate_prepared(data, str(path))
    save_torch(data, path)


def load_prepared(path: str | Path) -> dict:
    """Load a prepared dataset; a missing, truncated or corrupt file raises CorruptFileError naming `path` and
    the prepare_data rule that rewrites it."""
    data = load_torch(path, what="prepared dataset", producer="prepare_data")
    try:
        validate_prepared(data, str(path))
    except (ValueError, KeyError, TypeError) as err:
        raise CorruptFileError(f"prepared dataset {path} is truncated or corrupt ({type(err).__name__}: {err}); "
                               f"{regenerate_hint(path, 'prepare_data')}") from err
    return data


# --------------------------------------------------------------------------- normalisation, augmentation

def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """(x/255 − mean)/std per channel: uint8 (N×)C×H×W → float32 on x's device."""
    if x.dtype != torch.uint8:
        raise TypeError(f"normalize: expected uint8 images, got {x.dtype}")
    mean = torch.as_tensor(mean, dtype=torch.float32, device=x.device).reshape(-1, 1, 1)
    std = torch.as_tensor(std, dtype=torch.float32, device=x.device).reshape(-1, 1, 1)
    if x.ndim not in (3, 4) or x.shape[-3] != len(mean) or len(std) != len(mean):
        raise ValueError(f"normalize: images {tuple(x.shape)} do not match {len(mean)} channel mean/std")
    return x.float().div_(255.0).sub_(mean).div_(std)


def draw_augment_params(n: int, crop_padding: int, hflip: bool,
                        generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random crop offsets (int64 n×2: row, col in 0..2·crop_padding) and flips (bool n).

    Drawn on the generator's device, offsets first (only if crop_padding > 0), then flips (only if hflip).
    """
    device = generator.device
    if crop_padding > 0:
        offsets = torch.randint(0, 2 * crop_padding + 1, (n, 2), generator=generator, device=device)
    else:
        offsets = torch.zeros(n, 2, dtype=torch.int64, device=device)
    if hflip:
        flip = torch.rand(n, generator=generator, device=device) < 0.5
    else:
        flip = torch.zeros(n, dtype=torch.bool, device=device)
    return offsets, flip


def crop_flip(x: torch.Tensor, offsets: torch.Tensor, flip: torch.Tensor, crop_padding: int) -> torch.Tensor:
    """Zero-pad x (N×C×H×W) by crop_padding, take the H×W window at `offsets` (N×2), mirror where `flip`.

    Two gathers with per-sample index rows; the flip is folded into the column index.
    """
    n, c, h, w = x.shape
    offsets, flip = offsets.to(x.device), flip.to(x.device)
    p = crop_padding
    padded = F.pad(x, (p, p, p, p)) if p > 0 else x
    rows = offsets[:, :1] + torch.arange(h, device=x.device)  # N×H
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = offsets[:, 1:] + torch.where(flip[:, None], w - 1 - cols, cols)  # N×W
    out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * p))
    return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))


def augment_batch(x: torch.Tensor, crop_padding: int, hflip: bool, generator: torch.Generator) -> torch.Tensor:
    """Random zero-padded crop (offsets 0..2·crop_padding) and horizontal flip (p = 0.5) of a batch N×C×H×W.

    Runs on x's device; the random draws come from `generator` (see draw_augment_params) and are
    moved there. Returns x itself when crop_padding == 0 and not hflip.
    """
    if crop_padding < 0:
        raise ValueError(f"crop_padding must be >= 0, got {crop_padding}")
    if x.ndim != 4:
        raise ValueError(f"augment_batch: expected images N×C×H×W, got shape {tuple(x.shape)}")
    if crop_padding == 0 and not hflip:
        return x
    offsets, flip = draw_augment_params(len(x), crop_padding, hflip, generator)
    return crop_flip(x, offsets, flip, crop_padding)


def split_tensors(data: dict, split: str, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised float images (N×C×H×W) and labels of one split, on `device`."""
    d = data[split]
    x = normalize(d["x"].to(device), data["mean"].to(device), data["std"].to(device))
    return x, d["y"].to(device)


def calibration_subset(data: dict, samples: int, seed: int, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """The first `samples` images of a seeded permutation of the TRAIN split (normalised), and their labels."""
    x, y = split_tensors(data, "train", "cpu")
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(x), generator=gen)[: min(samples, len(x))]
    return x[idx].to(device), y[idx].to(device)
