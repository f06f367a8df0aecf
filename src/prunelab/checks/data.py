"""Data files and split sizes of a config (part of `prunelab.checks`, run at DAG time).

`dataset_sizes(cfg["dataset"])` finds the data files when download is off (`datasets_io.missing_files`), reads
an image folder's layout and image headers, and returns the sizes the prepared dataset will have (the same
carving as `prunelab.data.prepare_dataset`); `check_sizes` then checks what those sizes must allow.

Bounds (documented choices):
- validation split >= max(10 x classes, 100) images (MIN_VAL_PER_CLASS, MIN_VAL), enough to select epochs;
- calibration samples (stats.samples) >= 2 x classes when a method or gradual pruning needs per-class
  statistics (a per-class variance or class relevance needs two samples of each class, on average);
- the train split holds >= 2 images per class.
"""

from __future__ import annotations

from pathlib import Path

from prunelab.data import TEST_FRACTION, formats as io
from prunelab.data.formats import IMAGE_EXTENSIONS

MIN_VAL, MIN_VAL_PER_CLASS = 100, 10
MIN_CALIBRATION_PER_CLASS = 2
# Methods reading per-class statistics (screening: class-conditional F; frs: class relevance).
CLASS_STAT_METHODS = {"screening", "frs"}
# Dataset -> (in_shape, classes, official train images; None: no official test split, TEST_FRACTION carved).
DATASET_SHAPES = {
    "digits": ((1, 8, 8), 10, None), "mnist": ((1, 28, 28), 10, 60000),
    "fashion_mnist": ((1, 28, 28), 10, 60000), "cifar10": ((3, 32, 32), 10, 50000),
    "cifar100": ((3, 32, 32), 100, 50000), "svhn": ((3, 32, 32), 10, 73257),
}
DIGITS_IMAGES = 1797
MAX_HEADER_SCAN = 5000  # image-folder files whose headers are read at DAG time (sizes); more: left to the job


class ConfigError(ValueError):
    """A config mistake, as one line naming the key or file and what was expected."""


def few(names, limit: int = 12) -> str:
    """`names` as a short list for a one-line message: the first `limit`, then how many in all."""
    names = list(names)
    return str(names) if len(names) <= limit else f"{names[:limit]}".rstrip("]") + f", ... ({len(names)} in all)]"


def _data_missing(name: str, root: Path, download: bool) -> str | None:
    """One line naming the missing files of `name` under `root` (with the fix), or None when complete."""
    missing = io.missing_files(name, root)
    if not missing:
        return None
    more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
    return f"{missing[0]}{more} not found; {io.missing_files_hint(name, root, download)}".replace("\n", " ")


def _imagefolder(root: Path, image_size: int | None) -> tuple[tuple[int, int, int], int, int, bool]:
    """(in_shape, classes, train-pool images, has test folder) of an image folder; mistakes named."""
    key = "config key 'dataset.data_root'"
    if not root.is_dir():
        raise ConfigError(f"{key}: {root} does not exist; expected {root}/train/<class>/<images>")
    pool = root / "train" if (root / "train").is_dir() else root
    test = root / "test"
    classes = sorted(p for p in pool.iterdir() if p.is_dir())
    tests = sorted(p for p in test.iterdir() if p.is_dir()) if test.is_dir() else []
    files = {c: [f for f in c.iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS] for c in classes + tests}
    empty = [str(c) for c, f in files.items() if not f]
    if empty:
        raise ConfigError(f"{key}: class folder {empty[0]} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
    if len(classes) < 2:
        raise ConfigError(f"{key}: {pool} has {len(classes)} class folder(s); expected at least two "
                          "(<class>/<images>), else top-1 is trivially 100 %")
    extra = [c.name for c in tests if c.name not in {c.name for c in classes}]
    if extra:
        raise ConfigError(f"{key}: {test} has class folders {extra} that {pool} lacks; expected the same classes")
    paths = sorted(f for c in classes for f in files[c])
    from PIL import Image

    sizes, modes = {}, set()
    for p in sorted(f for fs in files.values() for f in fs)[:MAX_HEADER_SCAN]:  # train and test
        try:
            with Image.open(p) as im:
                sizes.setdefault(im.size, p)
                modes.add(im.mode)
        except Exception as err:
            raise ConfigError(f"{key}: {p} is not a readable image ({type(err).__name__})") from None
    if image_size is None and len(sizes) > 1:
        (s0, p0), (s1, p1) = list(sizes.items())[:2]
        raise ConfigError(f"{key}: images differ in size ({p0}: {s0[0]}x{s0[1]}, {p1}: {s1[0]}x{s1[1]}); "
                          "set dataset.image_size to resize them all")
    w, h = (image_size, image_size) if image_size else next(iter(sizes))
    c = 1 if modes <= {"1", "L", "LA"} else 3
    return (c, h, w), len(classes), len(paths), (root / "test").is_dir()


def dataset_sizes(ds: dict, check_files: bool = True) -> tuple[tuple[int, int, int], int, int, int]:
    """(in_shape, classes, train images, val images) the prepared dataset will have; with `check_files`, the files
    of a dataset that is not downloaded must be there (an image folder is always read: its layout is its size)."""
    name, root = ds["name"], Path(ds["data_root"])
    if name == "imagefolder":
        in_shape, classes, pool, has_test = _imagefolder(root, ds["image_size"])
    else:
        in_shape, classes, pool = DATASET_SHAPES[name]
        has_test = pool is not None
        pool = pool or DIGITS_IMAGES
        if ds["image_size"]:
            in_shape = (in_shape[0], ds["image_size"], ds["image_size"])
        if check_files:
            check_data_files(ds)
    if not has_test:
        pool -= round(pool * TEST_FRACTION)
    n_val = round(pool * ds["val_fraction"])
    n_train = pool - n_val
    if ds["max_train"] is not None:
        n_train = min(n_train, ds["max_train"])
    return in_shape, classes, n_train, n_val


def check_data_files(ds: dict) -> None:
    """ConfigError when `download` is off and the files of dataset `ds` (not digits, not an image folder) are
    missing: one line naming the first missing file, the folders looked in and the fixes."""
    name = ds["name"]
    if name in ("digits", "imagefolder") or ds["download"]:
        return
    missing = _data_missing(name, Path(ds["data_root"]), ds["download"])
    if missing:
        raise ConfigError(f"config key 'dataset.download': false, and {name} files are missing: {missing}")


def check_sizes(cfg: dict, classes: int, n_train: int, n_val: int) -> None:
    ds, samples = cfg["dataset"], cfg["stats"]["samples"]
    need_val = max(MIN_VAL_PER_CLASS * classes, MIN_VAL)
    if n_val < need_val:
        raise ConfigError(f"config key 'dataset.val_fraction': {ds['val_fraction']} gives {n_val} validation images; "
                          f"expected at least {need_val} (max(10 x {classes} classes, 100)) to select epochs")
    if n_train < 2 * classes:
        raise ConfigError(f"config key 'dataset.max_train': {n_train} training images for {classes} classes; "
                          "expected at least 2 per class")
    if samples > n_train:
        raise ConfigError(f"config key 'stats.samples': {samples} calibration samples, but the train split holds "
                          f"{n_train} images; expected at most {n_train}")
    per_class = set(cfg["methods"]) & CLASS_STAT_METHODS
    if cfg["gradual"]["enabled"]:
        per_class.add("gradual (frs)")
    if per_class and samples < MIN_CALIBRATION_PER_CLASS * classes:
        raise ConfigError(f"config key 'stats.samples': {samples} calibration samples for {classes} classes; "
                          f"{sorted(per_class)} need per-class statistics: expected at least "
                          f"{MIN_CALIBRATION_PER_CLASS * classes} ({MIN_CALIBRATION_PER_CLASS} per class)")
