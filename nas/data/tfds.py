"""TensorFlow Datasets (``data.source: tfds:NAME``) as rows of a node's image store.

A TFDS dataset is read like an image folder (:class:`~nas.data.stored.FolderItems`), never loaded
whole into memory: its labels are read once per node without decoding an image, and its
images are decoded and resized in a ``tf.data`` pipeline, one at a time (so images of
different sizes work), into the node's :class:`~nas.data.imagestore.ImageStore`.

Rows: the ``train`` split's examples first, row i the i-th example of the split in file order
(shards in order, each read front to back), then the ``validation`` split's when the dataset
has one (:func:`nas.data.sources.load` then uses it as the validation set; without one, it splits
``train``). An example's row is computed from its ``tfds_id`` (shard and index in the shard)
and the split's shard lengths, so reads in any order (shuffled files, a few shards) agree.

The prepared data lives where TFDS keeps it (``TFDS_DATA_DIR``, else ``~/tensorflow_datasets``):
a node that lacks it downloads and prepares it on first use, one process at a time (a lock in
the store's folder), the others waiting for it.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["INSTALL", "TfdsItems", "describe", "require"]

#: How to get the optional dependency (the package's ``tfds`` extra).
INSTALL = "pip install 'edgetpu-nas[tfds]'"

#: Encoded images held to shuffle a streamed split (one over ``data.cache_gb``): files are
#: read in a new order every epoch, and TFDS shuffled the examples when it wrote them.
STREAM_SHUFFLE = 1024

# "<name>-<split>.<format>-00003-of-00016__412": shard 3, index 412 in it.
_SHARD = r"^.*-(\d+)-of-\d+__\d+$"
_INDEX = r"^.*__(\d+)$"


def require(source: str):
    """The ``tensorflow_datasets`` module, or a one-line error saying how to install it."""
    if importlib.util.find_spec("tensorflow_datasets") is None:
        raise ValueError(f"data.source: {source!r} needs the tensorflow-datasets package, which is not installed; "
                         f"allowed: {INSTALL}, or another source")
    import tensorflow_datasets as tfds  # type: ignore[import-not-found]

    return tfds


def _builder(source: str):
    tfds = require(source)
    name = source.partition(":")[2]
    try:
        return tfds.builder(name)
    except tfds.core.DatasetNotFoundError:
        raise ValueError(f"data.source: {source!r}: {name!r} is not a TensorFlow Datasets dataset; allowed: a name "
                         "that tfds.list_builders() lists, as NAME, NAME/CONFIG or NAME:VERSION") from None
    except Exception as e:  # a bad config or version: TFDS's own message says which exist
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"data.source: {source!r}: {first}") from None


def describe(source: str, builder=None):
    """(builder, image feature key, label feature key, number of classes) of a TFDS source,
    from its builder's info alone: nothing is downloaded, no image decoded."""
    tfds = require(source)
    builder = builder if builder is not None else _builder(source)
    info = builder.info
    top = dict(info.features.items())
    image = label = None
    keys = info.supervised_keys
    if isinstance(keys, tuple) and len(keys) >= 2 and all(isinstance(k, str) for k in keys[:2]):
        image, label = keys[0], keys[1]
        if not isinstance(top.get(image), tfds.features.Image) or not isinstance(top.get(label),
                                                                                 tfds.features.ClassLabel):
            image = label = None  # e.g. (text, label), or a label that is not a class: look again
    if image is None:
        image = next((k for k, f in top.items() if isinstance(f, tfds.features.Image)), None)
        label = next((k for k, f in top.items() if isinstance(f, tfds.features.ClassLabel)), None)
    missing = [what for what, key in (("Image", image), ("ClassLabel", label)) if key is None]
    if missing:
        raise ValueError(f"data.source: {source!r} has no {' and no '.join(missing)} feature (its features: "
                         f"{', '.join(f'{k}: {type(f).__name__}' for k, f in top.items())}); allowed: an image "
                         "classification dataset")
    if top[image].np_dtype != np.uint8:
        raise ValueError(f"data.source: {source!r}: its images are {np.dtype(top[image].np_dtype).name}; "
                         "allowed: uint8 images")
    return builder, image, label, int(top[label].num_classes)


def _prepared(source: str, builder, lock_dir: Path):
    """``builder`` (of ``source``) with its data prepared on this node: downloaded and written
    by the first process to get the lock, the others waiting, then reading what it wrote."""
    if builder.is_prepared():
        return builder
    import fcntl

    lock_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in source)
    with open(lock_dir / f"{safe}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        builder = _builder(source)  # a fresh one: another process may have prepared it meanwhile
        if not builder.is_prepared():
            log.info("data.source %r: downloading and preparing it into %s (once on this node)", source,
                     builder.data_dir)
            try:
                builder.download_and_prepare()
            except Exception as e:
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ValueError(f"data.source: {source!r} could not be downloaded and prepared into "
                                 f"{builder.data_dir}: {first}") from e
    return _builder(source)


@dataclass(frozen=True)
class _Part:
    """One split of the dataset as a run of rows: ``offset`` .. ``offset + n - 1``."""

    split: str
    offset: int
    n: int
    shard_starts: tuple[int, ...]  # the first row (in the split) of each shard, then n


class TfdsItems:
    """A TFDS dataset's ``train`` (and ``validation``) examples as rows of a store (see the
    module doc): their labels, what identifies them, and their decoding."""

    def __init__(self, source: str, cache_dir: str | Path):
        """Prepares the data on this node if needed (see :func:`_prepared`); ``cache_dir``: the
        store's folder, which also keeps the labels and the download lock."""
        self.source, self.label, self.cache_dir = source, source, Path(cache_dir)
        builder, self.image_key, self.label_key, self.num_classes = describe(source)  # before any download
        self._builder = _prepared(source, builder, self.cache_dir)
        info = self._builder.info
        self.full_name = info.full_name
        splits = info.splits
        if "train" not in splits:
            raise ValueError(f"data.source: {source!r} has no 'train' split (it has: {', '.join(splits) or 'none'}); "
                             "allowed: a dataset with a train split")
        self.validation = "validation" if "validation" in splits else None
        parts, offset = [], 0
        for split in ("train", self.validation) if self.validation else ("train",):
            lengths = [int(k) for k in splits[split].shard_lengths] or [int(splits[split].num_examples)]
            parts.append(_Part(split, offset, sum(lengths), tuple(np.concatenate([[0], np.cumsum(lengths)]).tolist())))
            offset += parts[-1].n
        self.parts = tuple(parts)
        self.n = offset

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k != "_builder"}

    def __setstate__(self, d):
        self.__dict__.update(d, _builder=None)

    @property
    def builder(self):
        if self._builder is None:  # unpickled in another process: its own (prepared there too)
            self._builder = _prepared(self.source, _builder(self.source), self.cache_dir)
        return self._builder

    @functools.cached_property
    def identity(self) -> str:
        return f"tfds|{self.full_name}|" + ",".join(f"{p.split}={p.n}" for p in self.parts)

    def part_rows(self) -> tuple[np.ndarray, np.ndarray | None]:
        """(the train split's rows, the validation split's rows or None)."""
        rows = [np.arange(p.offset, p.offset + p.n) for p in self.parts]
        return rows[0], rows[1] if len(rows) > 1 else None

    @functools.cached_property
    def labels(self) -> np.ndarray:
        """Each row's label, read once per node without decoding an image and kept beside the
        store (a large dataset's labels take minutes to read): by the first process to get the
        lock, the node's others waiting for it."""
        import fcntl

        key = hashlib.sha256(self.identity.encode()).hexdigest()[:32]
        path = self.cache_dir / f"tfds-{key}.labels.npy"
        if not path.is_file():
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            with open(path.with_suffix(".lock"), "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                if not path.is_file():
                    tmp = path.with_suffix(f".{os.getpid()}.part.npy")
                    np.save(tmp, self._read_labels())
                    os.replace(tmp, path)
        labels = np.load(path, allow_pickle=False)
        if len(labels) != self.n:
            raise ValueError(f"data.source: {self.source!r}: {path} holds {len(labels)} labels, not {self.n}; "
                             "allowed: delete it to have them read again")
        return labels

    def _read_labels(self) -> np.ndarray:
        tfds = require(self.source)
        labels = np.full(self.n, -1, dtype=np.int64)
        for part in self.parts:
            ds = self._read(part, part.split, shuffle=False,
                            decoders=tfds.decode.PartialDecoding({self.label_key: True}))
            ds = ds.map(lambda ex, part=part: (self._row(part)(ex["tfds_id"]), ex[self.label_key]))
            for rows, ys in ds.batch(8192).prefetch(2).as_numpy_iterator():
                if len(rows) and (rows.min() < part.offset or rows.max() >= part.offset + part.n):
                    raise ValueError(f"data.source: {self.source!r}: the prepared {part.split!r} files do not match "
                                     "its dataset info; allowed: delete them to have them prepared again")
                labels[rows] = ys
        missing = int((labels < 0).sum())
        if missing:
            raise ValueError(f"data.source: {self.source!r}: {missing} of {self.n} examples could not be read; "
                             "allowed: delete its prepared files to have them prepared again")
        log.info("%s: %d labels read", self.source, self.n)
        return labels

    # ------------------------------------------------------------------------------ reading

    def _read(self, part: _Part, split, *, shuffle: bool, decoders=None):
        """The examples of ``split`` (a split name or read instruction within ``part``), with
        their ``tfds_id``: in file order, or with the files shuffled every epoch."""
        tfds = require(self.source)
        if decoders is None:
            decoders = tfds.decode.PartialDecoding({self.image_key: True, self.label_key: True},
                                                   decoders={self.image_key: tfds.decode.SkipDecoding()})
        config = dict(add_tfds_id=True)
        if shuffle:
            config.update(shuffle_seed=0, shuffle_reshuffle_each_iteration=True)
        else:
            config.update(interleave_cycle_length=1)  # one file after the other: the rows' order
        return self.builder.as_dataset(split=split, shuffle_files=shuffle, decoders=decoders,
                                       read_config=tfds.ReadConfig(**config))

    @staticmethod
    def _row(part: _Part):
        """tfds_id -> row, from the shard and the index in it."""
        import tensorflow as tf

        starts = tf.constant(np.asarray(part.shard_starts[:-1], dtype=np.int64) + part.offset)

        def row(tfds_id):
            shard = tf.strings.to_number(tf.strings.regex_replace(tfds_id, _SHARD, r"\1"), tf.int64)
            index = tf.strings.to_number(tf.strings.regex_replace(tfds_id, _INDEX, r"\1"), tf.int64)
            return tf.gather(starts, shard) + index

        return row

    def _instruction(self, part: _Part, rows: np.ndarray):
        """A read instruction covering ``rows`` (sorted, of ``part``) that reads only the shards
        holding them, each from its first wanted example to its last."""
        tfds = require(self.source)
        local = rows - part.offset
        shard = np.searchsorted(np.asarray(part.shard_starts), local, side="right") - 1
        ranges: list[list[int]] = []
        for s in np.unique(shard):
            lo, hi = int(local[shard == s].min()), int(local[shard == s].max()) + 1
            if ranges and ranges[-1][1] == lo:
                ranges[-1][1] = hi
            else:
                ranges.append([lo, hi])
        return functools.reduce(lambda a, b: a + b, [tfds.core.ReadInstruction(part.split, from_=lo, to=hi, unit="abs")
                                                     for lo, hi in ranges])

    @staticmethod
    def _decode_fn(resolution: int, channels: int):
        """Encoded image -> uint8 at (resolution, resolution, channels), as a folder's files are
        decoded: grey to RGB and RGB to grey by the decoder, bilinear antialiased resize."""
        import tensorflow as tf

        def decode(encoded):
            img = tf.io.decode_image(encoded, channels=channels, expand_animations=False)
            img = tf.image.resize(tf.cast(img, tf.float32), (resolution, resolution), antialias=True)
            return tf.ensure_shape(tf.cast(tf.round(tf.clip_by_value(img, 0.0, 255.0)), tf.uint8),
                                   (resolution, resolution, channels))

        return decode

    def _examples(self, rows: np.ndarray, *, shuffle: bool):
        """(row, encoded image, label) of the wanted ``rows`` (a tf.data dataset): every part
        holding some, only the shards holding them when reading in order."""
        import tensorflow as tf

        wanted = np.zeros(self.n, dtype=bool)
        wanted[rows] = True
        mask = tf.constant(wanted)
        out = None
        for part in self.parts:
            mine = rows[(rows >= part.offset) & (rows < part.offset + part.n)]
            if not len(mine):
                continue
            split = part.split if shuffle or len(mine) == part.n else self._instruction(part, np.sort(mine))
            row = self._row(part)
            ds = self._read(part, split, shuffle=shuffle).map(
                lambda ex, row=row: (row(ex["tfds_id"]), ex[self.image_key], ex[self.label_key]))
            ds = ds.filter(lambda r, x, y: tf.gather(mask, r))
            out = ds if out is None else out.concatenate(ds)
        return out

    def batches(self, resolution: int, channels: int, rows: np.ndarray | None = None):
        """(rows, uint8 images) of every example (or of ``rows``), decoded in parallel in file
        order; an image that cannot be decoded is left out (tf.data's ``ignore_errors``)."""
        import tensorflow as tf

        rows = np.arange(self.n) if rows is None else np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return
        decode = self._decode_fn(resolution, channels)
        ds = self._examples(np.unique(rows), shuffle=False)
        ds = ds.map(lambda r, x, y: (r, decode(x)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        for idx, images in ds.ignore_errors().batch(64).prefetch(2):
            yield idx.numpy(), images.numpy()

    def stream(self, rows, resolution: int, channels: int):
        """(uint8 image, label) of the rows of the ``tf.data`` dataset ``rows``, decoded as read
        (when no store may be built). Its order is not kept: TFDS files are read in order, so
        the rows are read in a new order of files every epoch, mixed by a buffer of
        :data:`STREAM_SHUFFLE` encoded images."""
        import tensorflow as tf

        wanted = np.concatenate([np.zeros(0, np.int64), *rows.batch(1 << 16).as_numpy_iterator()]).astype(np.int64)
        decode = self._decode_fn(resolution, channels)
        ds = self._examples(wanted, shuffle=True)
        if ds is None:  # no rows: an empty dataset of the right structure
            return rows.take(0).map(lambda r: (tf.zeros((resolution, resolution, channels), tf.uint8), r))
        ds = ds.shuffle(STREAM_SHUFFLE, seed=0, reshuffle_each_iteration=True)
        return ds.map(lambda r, x, y: (decode(x), y), num_parallel_calls=tf.data.AUTOTUNE).ignore_errors()
