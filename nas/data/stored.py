"""Splits whose images live in a node's :class:`~nas.data.imagestore.ImageStore`, and the
``tf.data`` pipelines every split shares.

A :class:`StoredSplit` is what :func:`nas.data.sources.load` returns for an image folder, and for an
array source too large for ``data.memory_mb``: the images are decoded once per node, at the
experiment's resolution, into the store on local disk (``data.cache_dir``, ``data.cache_gb``)
and read from there, rows at a time, by every consumer: the trials' pipelines, the one-shot
supernet's batches (:meth:`StoredSplit.train_batch`), export's calibration and evaluation.
The whole set is read into memory only when it fits ``data.memory_mb``; a folder over the
cache budget streams (each epoch decodes the files it reads).
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from nas.data.imagestore import ImageStore, StoreSettings, chunks

log = logging.getLogger(__name__)

__all__ = ["AUGMENTS", "ArrayItems", "FolderItems", "StoredSplit", "VAL_BATCH", "augmenter", "pipelines"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


def _as_float(x, y):
    import tensorflow as tf

    return (tf.cast(x, tf.float32) / 255.0 if x.dtype == tf.uint8 else x), y


#: What ``train.augment`` names (:func:`augmenter`).
AUGMENTS = ("none", "shift", "photo")


def augmenter(kind: str | bool, seed: int = 0):
    """The per-image augmentation ``train.augment`` names, as a ``tf.data`` map function of
    ``(float image, label)``; None for ``none``. ``True``/``False`` mean shift/none.

    - ``shift``: pad-and-crop, a random translation of up to 1/8 of the image;
    - ``photo``: the standard set for photographs (Inception's, as in EfficientNet's input
      pipeline): a random crop of 35-100% of the area at aspect 3/4 to 4/3, resized back to
      the input size, then a random horizontal flip.
    """
    import tensorflow as tf

    kind = {True: "shift", False: "none"}.get(kind, kind) if isinstance(kind, bool) else kind
    if kind not in AUGMENTS:
        raise ValueError(f"train.augment: unknown {kind!r}; allowed: {', '.join(AUGMENTS)}")
    if kind == "none":
        return None
    if kind == "shift":
        def shift(x, y):
            h, w, c = x.shape
            pad = max(1, h // 8)
            x = tf.image.pad_to_bounding_box(x, pad, pad, h + 2 * pad, w + 2 * pad)
            return tf.image.random_crop(x, (h, w, c), seed=seed), y

        return shift

    whole = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])

    def photo(x, y):
        h, w, c = x.shape
        begin, size, _ = tf.image.sample_distorted_bounding_box(
            tf.shape(x), bounding_boxes=whole, min_object_covered=0.0, aspect_ratio_range=(3 / 4, 4 / 3),
            area_range=(0.35, 1.0), max_attempts=10, use_image_if_no_bounding_boxes=True, seed=seed)
        x = tf.image.resize(tf.slice(x, begin, size), (h, w), method="bilinear")
        x = tf.image.random_flip_left_right(x, seed=seed)
        return tf.ensure_shape(tf.clip_by_value(x, 0.0, 1.0), (h, w, c)), y

    return photo


def pipelines(train, val, n_train: int, batch_size: int, augment: str | bool, seed: int, *, shuffled: bool = False):
    """tf.data pipelines of decoded images (uint8 or float32 in [0, 1], one per element;
    ``val`` already batched): shuffled (unless already), augmented as ``augment`` names
    (:func:`augmenter`), batched, prefetched."""
    import tensorflow as tf

    auto = tf.data.AUTOTUNE
    if not shuffled:
        train = train.shuffle(n_train, seed=seed, reshuffle_each_iteration=True)
    train, val = train.map(_as_float, num_parallel_calls=auto), val.map(_as_float, num_parallel_calls=auto)
    fn = augmenter(augment, seed)
    if fn is not None:
        train = train.map(fn, num_parallel_calls=auto)
    return train.batch(batch_size).prefetch(auto), val.prefetch(auto)


#: Validation batch size of every split's pipelines and of :meth:`Split.val_batches`.
VAL_BATCH = 256




class FolderItems:
    """The image files of a folder with one sub-folder per class, as rows of a store: their
    listing, labels, what identifies them (path, size, modification time), and their decoding."""

    def __init__(self, arg: str, files: list[str], labels: np.ndarray, skipped: list[str]):
        self.arg, self.files, self.labels, self.skipped = arg, files, labels, skipped
        self.n = len(files)
        self.label = f"folder:{arg}"

    @functools.cached_property
    def identity(self) -> str:
        h = hashlib.sha256()
        for f in self.files:
            st = Path(f).stat()
            h.update(f"{f}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        return f"folder|{h.hexdigest()}"

    @staticmethod
    def _decode_fn(resolution: int, channels: int):
        import tensorflow as tf

        def decode(path):
            img = tf.io.decode_image(tf.io.read_file(path), channels=channels, expand_animations=False)
            img = tf.image.resize(tf.cast(img, tf.float32), (resolution, resolution), antialias=True)
            return tf.ensure_shape(tf.cast(tf.round(tf.clip_by_value(img, 0.0, 255.0)), tf.uint8),
                                   (resolution, resolution, channels))

        return decode

    def batches(self, resolution: int, channels: int, rows: np.ndarray | None = None):
        """(rows, uint8 images) of every decodable file (or of ``rows``), decoded in parallel;
        a file that cannot be decoded is left out (tf.data's ``ignore_errors``)."""
        import tensorflow as tf

        rows = np.arange(self.n) if rows is None else np.asarray(rows, dtype=np.int64)
        decode = self._decode_fn(resolution, channels)
        ds = tf.data.Dataset.from_tensor_slices(([self.files[i] for i in rows], rows))
        ds = ds.map(lambda p, i: (i, decode(p)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        for idx, images in ds.ignore_errors().batch(64).prefetch(2):
            yield idx.numpy(), images.numpy()

    def stream(self, rows, resolution: int, channels: int):
        """(uint8 image, label) of a ``tf.data`` dataset of ``rows``, each file decoded as it is
        read (when no store may be built); undecodable files are skipped."""
        import tensorflow as tf

        decode = self._decode_fn(resolution, channels)
        files, labels = tf.constant(self.files), tf.constant(self.labels)
        return rows.map(lambda i: (decode(tf.gather(files, i)), tf.gather(labels, i)),
                        num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()


class ArrayItems:
    """An ``.npz`` (or any array source) too large to hold decoded in memory, as rows of a
    store: read and resized a chunk at a time while the store is built, once per node."""

    def __init__(self, source: str, labels: np.ndarray, load: Callable[[], np.ndarray],
                 resize: Callable[[np.ndarray], np.ndarray]):
        """``load()``: the source's images as stored (any size); ``resize(x)``: uint8 at the
        store's resolution and channels."""
        self.source, self.labels, self._load, self._resize = source, labels, load, resize
        self.n = len(labels)
        self.label = source

    @functools.cached_property
    def identity(self) -> str:
        p = Path(self.source.partition(":")[2])
        st = p.stat() if p.exists() else None
        return f"{self.source}|{st.st_size if st else ''}|{st.st_mtime_ns if st else ''}"

    def batches(self, resolution: int, channels: int, rows: np.ndarray | None = None):
        x = self._load()
        for idx in chunks(self.n, 512):
            yield idx, self._resize(x[idx])

    def stream(self, rows, resolution: int, channels: int):
        raise ValueError(f"data.cache_gb: {self.source!r} is too large to hold in memory (data.memory_mb) and its "
                         "decoded images too large for the cache budget; allowed: a larger data.cache_gb or "
                         "data.memory_mb")


@dataclass(frozen=True, eq=False)
class StoredSplit:
    """A split whose images are rows of an :class:`~nas.data.imagestore.ImageStore`, built on this
    node at first use and read from there (see the module doc). ``train_rows``/``val_rows``
    index the items; rows that could not be decoded are left out of both."""

    items: FolderItems | ArrayItems
    train_rows: np.ndarray
    val_rows: np.ndarray
    num_classes: int
    resolution: int
    channels: int
    settings: StoreSettings = field(default_factory=StoreSettings)

    @functools.cached_property
    def store(self) -> ImageStore | None:
        """The node's store, built if needed; None when it would exceed ``data.cache_gb`` (the
        split then streams: each epoch decodes what it reads)."""
        shape = (self.resolution, self.resolution, self.channels)
        store = ImageStore(self.settings.root, self.items.identity, self.items.n, shape, self.items.label)
        if store.nbytes > self.settings.cache_bytes:
            why = ("data.cache_gb is 0" if not self.settings.cache_bytes else
                   f"its {self.items.n} images decoded at {self.resolution} px take {store.nbytes / 2**30:.1f} GB, "
                   f"over data.cache_gb ({self.settings.cache_bytes / 2**30:.1f} GB)")
            log.warning("%s: %s: every epoch decodes the files it reads, and files that cannot be decoded are "
                        "skipped as they are met, uncounted", self.items.label, why)
            return None
        store.ensure(lambda: self.items.batches(self.resolution, self.channels))
        if len(store.bad):
            bad = [self.items.files[i] for i in store.bad[:3]] if hasattr(self.items, "files") else []
            log.warning("%s: %d of %d images could not be decoded and are left out%s", self.items.label,
                        len(store.bad), self.items.n, f" (first: {', '.join(bad)})" if bad else "")
        return store

    @functools.cached_property
    def _rows(self) -> tuple[np.ndarray, np.ndarray]:
        """(train rows, validation rows) without the ones the store could not decode."""
        store = self.store
        if store is None or not len(store.bad):
            return self.train_rows, self.val_rows
        return (self.train_rows[~np.isin(self.train_rows, store.bad)],
                self.val_rows[~np.isin(self.val_rows, store.bad)])

    @functools.cached_property
    def _memory(self) -> np.ndarray | None:
        """Every row in memory, when the decoded set fits ``data.memory_mb``."""
        store = self.store
        if store is None or store.nbytes > self.settings.memory_bytes:
            return None
        return store.read_all()

    @property
    def y_train(self) -> np.ndarray:
        return self.items.labels[self._rows[0]]

    @property
    def y_val(self) -> np.ndarray:
        return self.items.labels[self._rows[1]]

    @property
    def n_train(self) -> int:
        return len(self._rows[0])

    @property
    def n_val(self) -> int:
        return len(self._rows[1])

    def _images(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float32 images in [0, 1] of item ``rows``, and their labels. Streaming (no store), a
        file that cannot be decoded now is left out of the batch."""
        if self._memory is not None:
            x = self._memory[rows]
        elif self.store is not None:
            x = self.store.read(rows)
        else:
            got: dict[int, np.ndarray] = {}
            for idx, images in self.items.batches(self.resolution, self.channels, rows):
                got.update(zip(idx.tolist(), images))
            rows = np.asarray([r for r in rows if int(r) in got], dtype=np.int64)
            x = np.stack([got[int(r)] for r in rows]) if len(rows) else np.zeros(
                (0, self.resolution, self.resolution, self.channels), np.uint8)
        return x.astype(np.float32) / 255.0, self.items.labels[rows]

    def train_batch(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The training images and labels at ``positions`` (0 .. n_train - 1)."""
        return self._images(self._rows[0][positions])

    def val_batch(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self._images(self._rows[1][positions])

    def val_batches(self, batch_size: int = VAL_BATCH, limit: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        n = self.n_val if limit is None else min(limit, self.n_val)
        for positions in chunks(n, batch_size):
            yield self.val_batch(positions)

    def sample_train(self, n: int, seed: int = 0) -> np.ndarray:
        return self.train_batch(np.sort(np.random.default_rng(seed).permutation(self.n_train)[:n]))[0]

    def val_arrays(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        return self.val_batch(np.arange(self.n_val if limit is None else min(limit, self.n_val)))

    def _read_rows(self, rows, batch: int):
        """(uint8 images, labels) batches of a ``tf.data`` dataset of row numbers, read from the
        store ``batch`` rows at a time (several reads in flight)."""
        import tensorflow as tf

        store, labels = self.store, self.items.labels
        shape = (self.resolution, self.resolution, self.channels)

        def read(r):
            return store.read(r), labels[r]

        ds = rows.batch(batch).map(lambda r: tf.numpy_function(read, [r], (tf.uint8, tf.int64)),
                                   num_parallel_calls=tf.data.AUTOTUNE)
        return ds.map(lambda x, y: (tf.ensure_shape(x, (None, *shape)), tf.ensure_shape(y, (None,))))

    def datasets(self, batch_size: int, augment: str | bool = "none", seed: int = 0):
        """(train, validation) ``tf.data`` pipelines: from memory when the decoded set fits
        ``data.memory_mb``; else rows read from the store (the row numbers shuffled, read 256 at
        a time); else, over the cache budget, the files decoded as read."""
        import tensorflow as tf

        train_rows, val_rows = self._rows
        labels = self.items.labels
        if self._memory is not None:
            x = self._memory
            return pipelines(tf.data.Dataset.from_tensor_slices((x[train_rows], labels[train_rows])),
                              tf.data.Dataset.from_tensor_slices((x[val_rows], labels[val_rows])).batch(VAL_BATCH),
                              len(train_rows), batch_size, augment, seed)
        shuffled = tf.data.Dataset.from_tensor_slices(train_rows).shuffle(len(train_rows), seed=seed,
                                                                          reshuffle_each_iteration=True)
        val = tf.data.Dataset.from_tensor_slices(val_rows)
        if self.store is not None:
            train, val = self._read_rows(shuffled, 256).unbatch(), self._read_rows(val, VAL_BATCH)
        else:
            train = self.items.stream(shuffled, self.resolution, self.channels)
            val = self.items.stream(val, self.resolution, self.channels).batch(VAL_BATCH)
        return pipelines(train, val, len(train_rows), batch_size, augment, seed, shuffled=True)


