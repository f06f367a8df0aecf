"""Readers for the on-disk formats of the supported datasets.

Each reader returns raw splits as ``{"train": (x, y), "test": (x, y)}`` with x a uint8 numpy array
N×C×H×W and y an int64 numpy array N, plus the class names. The readers parse the real file formats
(MNIST idx, CIFAR pickled batches, SVHN .mat, image folders) themselves; torchvision is used only to
download, and is imported only then (it costs seconds per process).
"""

from __future__ import annotations

import gzip
import pickle
from pathlib import Path

import numpy as np

RawSplits = dict[str, tuple[np.ndarray, np.ndarray]]

MNIST_CLASSES = [str(d) for d in range(10)]
FASHION_MNIST_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
SVHN_CLASSES = [str(d) for d in range(10)]
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
_GRAYSCALE_MODES = ("1", "L", "LA")

_IDX_FOLDER = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}
_IDX_FILES = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
              "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}
_CIFAR = {  # folder, train files, test file, meta file, label key, label-name key
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], "test_batch",
                "batches.meta", "labels", "label_names"),
    "cifar100": ("cifar-100-python", ["train"], "test", "meta", "fine_labels", "fine_label_names"),
}
_SVHN_FILES = {"train": "train_32x32.mat", "test": "test_32x32.mat"}


# --------------------------------------------------------------------------- missing files, download

# Folders a system package installs a dataset to, searched when data_root lacks it (Debian's
# `dataset-fashion-mnist` puts the four idx .gz files flat in this folder).
SYSTEM_FOLDERS = {"fashion_mnist": Path("/usr/share/datasets/fashion-mnist")}
SYSTEM_PACKAGES = {"fashion_mnist": "dataset-fashion-mnist"}


def idx_folders(name: str, root: Path) -> list[Path]:
    """Folders searched, in order, for the idx files of MNIST / Fashion-MNIST: torchvision's layout
    (`root/<Folder>/raw`), the flat layout (`root` itself), then the system package's folder, if any."""
    folders = [root / _IDX_FOLDER[name] / "raw", root]
    system = SYSTEM_FOLDERS.get(name)
    return folders + ([system] if system is not None and system not in folders else [])


def _idx_complete(folder: Path, name: str) -> bool:
    return all(_exists(folder / f, name) for pair in _IDX_FILES.values() for f in pair)


def locate_idx(name: str, root: Path) -> Path | None:
    """The first folder of `idx_folders` that holds all four idx files (plain or .gz), else None."""
    return next((f for f in idx_folders(name, root) if _idx_complete(f, name)), None)


def expected_files(name: str, root: Path) -> list[tuple[Path, str]]:
    """(path, how it is described in an error) for every file `name` needs under `root`."""
    if name in _IDX_FOLDER:
        raw = root / _IDX_FOLDER[name] / "raw"
        return [(raw / f, f"{raw / f} (or .gz)") for pair in _IDX_FILES.values() for f in pair]
    if name in _CIFAR:
        folder, train, test, meta, *_ = _CIFAR[name]
        return [(root / folder / f, str(root / folder / f)) for f in [*train, test, meta]]
    if name == "svhn":
        return [(root / f, str(root / f)) for f in _SVHN_FILES.values()]
    raise ValueError(f"no file list for dataset {name!r}")


def _exists(path: Path, name: str) -> bool:
    gz_ok = name in _IDX_FOLDER
    return path.is_file() or (gz_ok and path.with_name(path.name + ".gz").is_file())


def missing_files(name: str, root: Path) -> list[str]:
    """Descriptions of the files of `name` that are absent (empty when complete). For MNIST-like sets the
    files may lie in any folder of `idx_folders`; when none has all four, every folder looked in is named."""
    if name in _IDX_FOLDER:
        if locate_idx(name, root) is not None:
            return []
        files = ", ".join(f"{f}[.gz]" for pair in _IDX_FILES.values() for f in pair)
        return [f"{folder}/ ({files})" for folder in idx_folders(name, root)]
    return [desc for path, desc in expected_files(name, root) if not _exists(path, name)]


def missing_files_hint(name: str, root: Path, download: bool) -> str:
    """How to get the files of `name` (the last lines of a missing-files error)."""
    if download:
        return "the download did not produce them"
    package = SYSTEM_PACKAGES.get(name)
    fixes = [f"`apt-get install {package}` (or `make data`) installs them into {SYSTEM_FOLDERS[name]}"] \
        if package else []
    fixes.append(f"set `dataset.download: true` in the config to fetch {name} into {root}")
    return "to fix: " + "; or ".join(fixes)


def download(name: str, root: Path) -> None:
    """Fetch `name` into `root` with torchvision (network; imported lazily)."""
    import torchvision.datasets as tvd

    root.mkdir(parents=True, exist_ok=True)
    if name == "mnist":
        tvd.MNIST(str(root), train=True, download=True)  # fetches all four idx files
    elif name == "fashion_mnist":
        tvd.FashionMNIST(str(root), train=True, download=True)
    elif name == "cifar10":
        tvd.CIFAR10(str(root), train=True, download=True)
    elif name == "cifar100":
        tvd.CIFAR100(str(root), train=True, download=True)
    elif name == "svhn":
        for split in _SVHN_FILES:
            tvd.SVHN(str(root), split=split, download=True)
    else:
        raise ValueError(f"dataset {name!r} cannot be downloaded")


# --------------------------------------------------------------------------- MNIST / Fashion-MNIST

def _read_maybe_gz(path: Path) -> tuple[bytes, Path]:
    if path.is_file():
        return path.read_bytes(), path
    gz = path.with_name(path.name + ".gz")
    try:
        return gzip.decompress(gz.read_bytes()), gz
    except (OSError, EOFError) as err:
        raise ValueError(f"{gz}: not a readable gzip file ({err})") from err


def read_idx(path: Path, magic: int) -> np.ndarray:
    """Read an idx file of unsigned bytes (MNIST format; `path` or `path`.gz).

    magic 2051: images, returns uint8 N×rows×cols; magic 2049: labels, returns uint8 N.
    """
    data, where = _read_maybe_gz(path)
    ndim = {2051: 3, 2049: 1}[magic]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{where}: {len(data)} bytes, shorter than the idx header ({header} bytes)")
    found, *shape = np.frombuffer(data, dtype=">i4", count=1 + ndim).tolist()
    if found != magic:
        raise ValueError(f"{where}: idx magic number {found}, expected {magic}")
    if len(data) != header + int(np.prod(shape)):
        raise ValueError(f"{where}: {len(data)} bytes, expected {header + int(np.prod(shape))} "
                         f"for shape {shape} (truncated or corrupt file)")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def read_mnist_like(name: str, root: Path) -> tuple[RawSplits, list[str]]:
    """MNIST or Fashion-MNIST from the first folder of `idx_folders(name, root)` holding all four idx files."""
    raw = locate_idx(name, root)
    if raw is None:
        raise FileNotFoundError(f"{name}: idx files not found in any of: "
                                + ", ".join(map(str, idx_folders(name, root))))
    splits = {}
    for split, (images_file, labels_file) in _IDX_FILES.items():
        x = read_idx(raw / images_file, 2051)
        y = read_idx(raw / labels_file, 2049)
        if len(x) != len(y):
            raise ValueError(f"{raw / images_file}: {len(x)} images but {raw / labels_file} has {len(y)} labels")
        splits[split] = (x[:, None].copy(), y.astype(np.int64))
    return splits, list(MNIST_CLASSES if name == "mnist" else FASHION_MNIST_CLASSES)


# --------------------------------------------------------------------------- CIFAR-10 / CIFAR-100

def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = pickle.load(f, encoding="bytes")
    except Exception as err:  # truncated or foreign file: name it
        raise ValueError(f"{path}: not a readable CIFAR pickle ({type(err).__name__}: {err})") from err
    if not isinstance(obj, dict):
        raise ValueError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return obj


def _key(obj: dict, key: str, path: Path):
    for k in (key.encode(), key):  # the real files (Python 2 pickles) give bytes keys
        if k in obj:
            return obj[k]
    raise ValueError(f"{path}: missing key {key!r} (found {sorted(map(str, obj))})")


def _read_cifar_batch(path: Path, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    obj = _unpickle(path)
    data = np.asarray(_key(obj, "data", path))
    labels = np.asarray(_key(obj, label_key, path), dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        raise ValueError(f"{path}: 'data' is {data.dtype} {data.shape}, expected uint8 N×3072")
    if labels.shape != (len(data),):
        raise ValueError(f"{path}: {labels.shape} labels for {len(data)} images")
    return data.reshape(-1, 3, 32, 32), labels  # rows hold R, G, B planes of 32×32, row-major


def read_cifar(name: str, root: Path) -> tuple[RawSplits, list[str]]:
    """CIFAR-10 or CIFAR-100 (fine labels) from the python-pickle release under `root`."""
    folder, train_files, test_file, meta_file, label_key, names_key = _CIFAR[name]
    base = root / folder
    parts = [_read_cifar_batch(base / f, label_key) for f in train_files]
    train = (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]))
    test = _read_cifar_batch(base / test_file, label_key)
    names = [n.decode() if isinstance(n, bytes) else str(n)
             for n in _key(_unpickle(base / meta_file), names_key, base / meta_file)]
    return {"train": train, "test": test}, names


# --------------------------------------------------------------------------- SVHN

def read_svhn(root: Path) -> tuple[RawSplits, list[str]]:
    """SVHN cropped digits (train_32x32.mat, test_32x32.mat); label 10 means digit 0."""
    import scipy.io

    splits = {}
    for split, filename in _SVHN_FILES.items():
        path = root / filename
        try:
            mat = scipy.io.loadmat(str(path))
        except Exception as err:
            raise ValueError(f"{path}: not a readable .mat file ({type(err).__name__}: {err})") from err
        if "X" not in mat or "y" not in mat:
            raise ValueError(f"{path}: expected variables 'X' and 'y'")
        x, y = np.asarray(mat["X"]), np.asarray(mat["y"]).reshape(-1).astype(np.int64)
        if x.ndim != 4 or x.shape[2] != 3 or x.shape[3] != len(y):
            raise ValueError(f"{path}: X is {x.shape}, expected H×W×3×N with N={len(y)} labels")
        if ((y < 1) | (y > 10)).any():
            raise ValueError(f"{path}: labels outside 1..10")
        splits[split] = (np.ascontiguousarray(x.transpose(3, 2, 0, 1), dtype=np.uint8), y % 10)
    return splits, list(SVHN_CLASSES)


# --------------------------------------------------------------------------- digits (sklearn)

def read_digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """sklearn's bundled 8×8 digits: x uint8 1797×1×8×8 (round(v·255/16)), y int64 1797."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]
    return x, bunch.target.astype(np.int64), [str(d) for d in bunch.target_names]


# --------------------------------------------------------------------------- image folders

def _list_class_folder(folder: Path) -> dict[str, list[Path]]:
    classes = {}
    for sub in sorted(p for p in folder.iterdir() if p.is_dir()):
        files = sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise ValueError(f"{sub}: class folder with no images ({', '.join(IMAGE_EXTENSIONS)})")
        classes[sub.name] = files
    return classes


def _open_image(path: Path):
    """PIL image of `path` (header read); an unreadable file raises ValueError naming it."""
    from PIL import Image

    try:
        return Image.open(path)
    except Exception as err:
        raise ValueError(f"imagefolder: {path} is not a readable image ({type(err).__name__}: {err})") from err


def _load(im, path: Path):
    """Decode the pixels of `im` (a truncated or corrupt file raises ValueError naming `path`)."""
    try:
        im.load()
    except Exception as err:
        raise ValueError(f"imagefolder: {path} is corrupt ({type(err).__name__}: {err})") from err
    return im


def read_imagefolder(root: Path, image_size: int | None) -> tuple[RawSplits, list[str]]:
    """Images under `root`/{train,test}/<class>/ (or `root`/<class>/ alone; no test split then).

    Returns splits "train" and, when a test folder exists, "test". Images are RGB, or L when every
    image is grayscale; resized (PIL bilinear) to image_size×image_size when it is given, else they
    must all have one size.
    """
    from PIL import Image

    if not root.is_dir():
        raise FileNotFoundError(f"imagefolder: {root} does not exist; expected {root}/train/<class>/<images>")
    pool = root / "train" if (root / "train").is_dir() else root
    folders = {"train": _list_class_folder(pool)}
    if (root / "test").is_dir():
        folders["test"] = _list_class_folder(root / "test")
    classes = list(folders["train"])
    if not classes:
        raise FileNotFoundError(f"imagefolder: no class folders in {pool}; expected {pool}/<class>/<images>")
    if len(classes) < 2:
        raise ValueError(f"imagefolder: {pool} has one class folder ({classes[0]}); expected at least two")
    unknown = set(folders.get("test", {})) - set(classes)
    if unknown:
        raise ValueError(f"imagefolder: {root / 'test'} has classes not in {pool}: {sorted(unknown)}")

    files = [(split, classes.index(c), p) for split, by_class in folders.items()
             for c, paths in by_class.items() for p in paths]
    modes, sizes = {}, {}
    for _, _, p in files:
        with _open_image(p) as im:
            modes[p], sizes[p] = im.mode, im.size
    mode = "L" if all(m in _GRAYSCALE_MODES for m in modes.values()) else "RGB"
    if image_size is None and len(set(sizes.values())) > 1:
        p0, s0 = files[0][2], sizes[files[0][2]]
        p1, s1 = next((p, s) for p, s in sizes.items() if s != s0)
        raise ValueError(f"imagefolder: images differ in size ({p0}: {s0[0]}×{s0[1]}, {p1}: {s1[0]}×{s1[1]}); "
                         "set image_size to resize them all to one square size")

    splits = {}
    for split in folders:
        arrays, labels = [], []
        for s, label, p in files:
            if s != split:
                continue
            with _open_image(p) as im:
                im = _load(im, p).convert(mode)
                if image_size is not None and im.size != (image_size, image_size):
                    im = im.resize((image_size, image_size), Image.Resampling.BILINEAR)
                a = np.asarray(im, dtype=np.uint8)
            arrays.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
            labels.append(label)
        splits[split] = (np.stack(arrays), np.asarray(labels, dtype=np.int64))
    return splits, classes
