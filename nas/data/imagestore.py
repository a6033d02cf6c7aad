"""Decoded images on a node's local disk: a source decoded once, read by every trial there.

Why: a folder of JPEGs at 224 px decodes at a few hundred images a second per core, so a
search that decodes every image in every epoch of every trial spends most of its time
decoding, and one that keeps every decoded image in every worker's RAM runs out of it. An
:class:`ImageStore` decodes each image of a source once, at one resolution and channel count,
into one file of uint8 rows on local disk; every process of the node then reads the rows it
needs (the operating system's page cache keeps the hot ones in memory once, for all of them).

Layout, in the cache folder (``data.cache_dir``; default ``$NAS_CACHE_DIR/data``, else
``~/.cache/edgetpu-nas/data``)::

    <key>.u8      N x H x W x C uint8: row i is item i of the source, in its listing order
    <key>.json    {"n", "shape", "bad": [rows that could not be decoded], "source", "seconds"}
    <key>.lock    held by the process that builds it

``<key>`` hashes what defines the rows: the source's identity (for a folder, every file's
path, size and modification time), the resolution and the channels. So a changed folder
gets a new store, and several experiments on one folder share one.

Building is safe when several processes ask at once: the first takes the lock (``fcntl``) and
decodes; the others wait on the lock, then find the store ready. The rows are written to
``<key>.u8.part`` and renamed into place, the JSON last, so a builder killed half-way leaves
nothing that looks ready. An item that cannot be decoded (a corrupt or truncated file, a
text file named ``.jpg``) is recorded in ``bad`` and left out by the readers, never a failure.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["ImageStore", "StoreSettings", "chunks", "default_cache_dir"]


def default_cache_dir() -> Path:
    """``$NAS_CACHE_DIR/data``, else ``~/.cache/edgetpu-nas/data`` (local to the node)."""
    return Path(os.environ.get("NAS_CACHE_DIR") or Path.home() / ".cache" / "edgetpu-nas") / "data"


@dataclass(frozen=True)
class StoreSettings:
    """Where decoded images may live (``data.cache_dir``, ``data.cache_gb``, ``data.memory_mb``)."""

    cache_dir: str | None = None     #: None: :func:`~nas.data.imagestore.default_cache_dir`
    cache_bytes: int = 50 << 30      #: the largest store built on disk; 0: none (folders stream)
    memory_bytes: int = 1 << 30      #: the largest decoded set held in a process's memory

    @property
    def root(self) -> Path:
        return Path(self.cache_dir).expanduser() if self.cache_dir else default_cache_dir()


#: (row indices, their images as uint8 N x H x W x C) for :meth:`ImageStore.build`; rows left
#: out of every batch are recorded as bad.
Batches = Iterable[tuple[np.ndarray, np.ndarray]]


class ImageStore:
    """One source's images, decoded at ``shape`` (H, W, C), as uint8 rows in a file (see the
    module doc). ``identity`` is what defines the rows besides the shape (hashed into the key)."""

    def __init__(self, root: str | Path, identity: str, n: int, shape: tuple[int, int, int], label: str = ""):
        self.root, self.n, self.shape, self.label = Path(root), int(n), tuple(int(s) for s in shape), label
        self.key = hashlib.sha256(json.dumps([identity, self.shape]).encode()).hexdigest()[:32]
        self.rows = self.root / f"{self.key}.u8"
        self.meta_file = self.root / f"{self.key}.json"
        self.row_bytes = int(np.prod(self.shape))
        self._meta: dict | None = None
        self._fd: int | None = None
        self._lock = threading.Lock()

    @property
    def nbytes(self) -> int:
        return self.n * self.row_bytes

    def ready(self) -> bool:
        return self.meta_file.is_file() and self.rows.is_file() and self.rows.stat().st_size == self.nbytes

    @property
    def meta(self) -> dict:
        if self._meta is None:
            self._meta = json.loads(self.meta_file.read_text())
        return self._meta

    @property
    def bad(self) -> np.ndarray:
        """The rows that could not be decoded (sorted)."""
        return np.asarray(self.meta["bad"], dtype=np.int64)

    def ensure(self, batches: Callable[[], Batches]) -> None:
        """The store ready on this node: built from ``batches()`` by whichever process gets the
        lock first; the others wait for it."""
        if self.ready():
            return
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / f"{self.key}.lock", "w") as lock:
            waited = time.monotonic()
            fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it: wait for it
            if self.ready():
                log.info("%s: decoded images ready after %.1f s (built by another process)", self.label,
                         time.monotonic() - waited)
                return
            self._build(batches())

    def _build(self, batches: Batches) -> None:
        t0 = time.monotonic()
        part = self.rows.with_suffix(".u8.part")
        seen = np.zeros(self.n, dtype=bool)
        log.info("%s: decoding %d images once into %s (%.1f MB)", self.label, self.n, self.rows, self.nbytes / 2**20)
        with open(part, "wb") as f:
            f.truncate(self.nbytes)
            for idx, images in batches:
                idx = np.asarray(idx, dtype=np.int64)
                images = np.ascontiguousarray(images, dtype=np.uint8).reshape(len(idx), -1)
                for i, row in zip(idx, images):
                    f.seek(int(i) * self.row_bytes)
                    f.write(row.tobytes())
                seen[idx] = True
            f.flush()
            os.fsync(f.fileno())
        os.replace(part, self.rows)
        bad = np.flatnonzero(~seen).tolist()
        meta = {"n": self.n, "shape": list(self.shape), "bad": bad, "source": self.label,
                "seconds": round(time.monotonic() - t0, 1)}
        tmp = self.meta_file.with_suffix(".json.part")
        tmp.write_text(json.dumps(meta))
        os.replace(tmp, self.meta_file)
        self._meta = meta
        log.info("%s: %d images decoded in %.1f s (%d could not be)", self.label, self.n - len(bad), meta["seconds"],
                 len(bad))

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The images of ``rows`` (uint8, len(rows) x H x W x C), in the order given. Reads only
        those rows (no mapping of the whole file: a process's memory does not grow with it)."""
        rows = np.asarray(rows, dtype=np.int64)
        out = np.empty((len(rows), self.row_bytes), dtype=np.uint8)
        with self._lock:  # (tf.data reads from several threads; positioned reads share one descriptor)
            if self._fd is None:
                self._fd = os.open(self.rows, os.O_RDONLY)
        order = np.argsort(rows, kind="stable")  # in file order: sequential where rows are near
        for j in order:
            got = os.preadv(self._fd, [memoryview(out[j])], int(rows[j]) * self.row_bytes)
            if got != self.row_bytes:
                raise OSError(f"{self.rows}: short read of row {rows[j]} ({got} of {self.row_bytes} bytes)")
        return out.reshape(len(rows), *self.shape)

    def read_all(self) -> np.ndarray:
        """Every row in memory (for a set small enough to hold: ``data.memory_mb``)."""
        return np.fromfile(self.rows, dtype=np.uint8).reshape(self.n, *self.shape)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("_fd", "_lock")}

    def __setstate__(self, d):
        self.__dict__.update(d, _fd=None, _lock=threading.Lock())

    def __del__(self):
        if getattr(self, "_fd", None) is not None:
            try:
                os.close(self._fd)
            except OSError:
                pass


def chunks(n: int, size: int) -> Iterator[np.ndarray]:
    for start in range(0, n, size):
        yield np.arange(start, min(n, start + size))
