"""data.source: tfds:NAME, offline: TFDS's mock data for registered datasets (random images,
split sizes from metadata written here), and a small dataset of this file's own prepared
into a temporary TFDS folder for real files (several shards, images of different sizes, a
colour per class so every image can be checked against its label)."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest

tfds = pytest.importorskip("tensorflow_datasets")

from nas.data.sources import StoreSettings, StoredSplit, check_source, class_count, load  # noqa: E402
from nas.data.tfds import TfdsItems  # noqa: E402

N_MOCK = 20  # mock examples per split (TFDS's mock gives this many whatever the split)


class NasToyShapes(tfds.core.GeneratorBasedBuilder):
    """30 train and 9 validation RGB images of sizes 10..40 px, 3 classes: the image of class
    c is bright in channel c (so a decoded image shows its label)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, supervised_keys=("image", "label"), features=tfds.features.FeaturesDict({
            "image": tfds.features.Image(shape=(None, None, 3)), "label": tfds.features.ClassLabel(num_classes=3)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(30, 0), "validation": self._generate_examples(9, 1)}

    def _generate_examples(self, n, seed):
        rng = np.random.default_rng(seed)
        for i in range(n):
            h, w = rng.integers(10, 41, 2)
            img = rng.integers(0, 40, (h, w, 3)).astype(np.uint8)
            img[..., i % 3] += 200
            yield f"{seed}-{i}", {"image": img, "label": i % 3}


def colours_match(x: np.ndarray, y: np.ndarray) -> bool:
    return len(y) > 0 and (x.mean(axis=(1, 2)).argmax(axis=1) == y).all()


@pytest.fixture
def tfds_dir(tmp_path, monkeypatch):
    """An empty TFDS data folder (nothing read from or written to ~/tensorflow_datasets)."""
    tfds.disable_progress_bar()
    d = tmp_path / "tensorflow_datasets"
    monkeypatch.setenv("TFDS_DATA_DIR", str(d))
    monkeypatch.setattr(tfds.core.constants, "DATA_DIR", str(d))  # (read once, at import)
    return d


@pytest.fixture
def toy(tfds_dir):
    """The toy dataset prepared in 3 shards per split, so reads cross shard boundaries."""
    tfds.builder("nas_toy_shapes").download_and_prepare(download_config=tfds.download.DownloadConfig(num_shards=3))
    return "tfds:nas_toy_shapes"


@pytest.fixture
def mock(tmp_path):
    """TFDS mocked (random examples) with split metadata: cifar10 (train, test),
    oxford_flowers102 (train, validation, test; images of varying size), mnist (grey)."""
    meta = tmp_path / "tfds_meta"
    for name, splits in [("cifar10", ("train", "test")), ("oxford_flowers102", ("train", "validation", "test")),
                         ("mnist", ("train", "test"))]:
        b = tfds.builder(name, data_dir=str(meta))
        b.info.set_splits(tfds.core.SplitDict([tfds.core.SplitInfo(
            name=s, shard_lengths=[N_MOCK], num_bytes=0, filename_template=tfds.core.ShardedFileTemplate(
                data_dir=b.data_dir, template="{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}", dataset_name=name,
                filetype_suffix="tfrecord")) for s in splits]))
        b.data_path.mkdir(parents=True)
        b.info.write_to_directory(b.data_dir)
    with tfds.testing.mock_data(num_examples=N_MOCK, data_dir=str(meta)):
        yield


def settings(tmp_path, **kw) -> StoreSettings:
    return StoreSettings(cache_dir=str(tmp_path / "cache"), **kw)


def test_a_dataset_without_validation_split_splits_train_and_is_stored_once(mock, tmp_path, monkeypatch):
    check_source("tfds:cifar10")
    assert class_count("tfds:cifar10") == 10
    d = load("tfds:cifar10", 16, val_fraction=0.25, seed=1, settings=settings(tmp_path))
    assert isinstance(d, StoredSplit) and isinstance(d.items, TfdsItems) and d.num_classes == 10
    assert d.n_train + d.n_val == N_MOCK and d.n_val > 0  # the train split only: test stays unseen
    assert d.items.identity == f"tfds|cifar10/3.0.2|train={N_MOCK}"
    x, y = d.val_arrays()
    assert x.shape == (d.n_val, 16, 16, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    train, val = d.datasets(8)
    xb, yb = next(iter(train))
    assert tuple(xb.shape) == (8, 16, 16, 3) and xb.dtype.name == "float32" and tuple(yb.shape) == (8,)
    assert sum(int(yv.shape[0]) for _, yv in val) == d.n_val
    assert d.train_batch(np.arange(3))[0].shape == (3, 16, 16, 3)
    assert sum(len(yv) for _, yv in d.val_batches(batch_size=2)) == d.n_val
    cache = tmp_path / "cache"
    rows = list(cache.glob("*.u8"))
    assert len(rows) == 1 and len(list(cache.glob("tfds-*.labels.npy"))) == 1
    stamp = rows[0].stat().st_mtime_ns

    # A second load (another trial on this node) reads the store and the labels: no example is read.
    monkeypatch.setattr(TfdsItems, "batches", lambda *a, **k: pytest.fail("decoded again"))
    monkeypatch.setattr(TfdsItems, "_read", lambda *a, **k: pytest.fail("read again"))
    again = load("tfds:cifar10", 16, val_fraction=0.25, seed=1, settings=settings(tmp_path))
    assert (again.val_arrays()[0] == x).all() and (again.y_train == d.y_train).all()
    assert list(cache.glob("*.u8")) == rows and rows[0].stat().st_mtime_ns == stamp


def test_a_validation_split_is_used_and_images_of_any_size_are_resized(mock, tmp_path):
    d = load("tfds:oxford_flowers102", 16, val_fraction=0.5, settings=settings(tmp_path))
    assert d.num_classes == 102 and (d.n_train, d.n_val) == (N_MOCK, N_MOCK)  # val_fraction unused
    assert d.items.identity == f"tfds|oxford_flowers102/2.1.1|train={N_MOCK},validation={N_MOCK}"
    assert (d.val_rows >= N_MOCK).all() and (d.train_rows < N_MOCK).all()  # rows: train first, then validation
    assert d.val_arrays()[0].shape == (N_MOCK, 16, 16, 3)
    grey = load("tfds:oxford_flowers102", 16, channels=1, settings=settings(tmp_path))
    assert grey.train_batch(np.arange(4))[0].shape == (4, 16, 16, 1)


def test_grey_images_become_three_channels(mock, tmp_path):
    d = load("tfds:mnist", 16, channels=3, settings=settings(tmp_path))
    x = d.val_arrays()[0]
    assert x.shape[1:] == (16, 16, 3) and (x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all()


@pytest.mark.parametrize("memory, cache", [(1 << 30, 1 << 30), (0, 1 << 30), (0, 0)], ids=["memory", "store", "stream"])
def test_every_way_of_reading_gives_each_image_with_its_label(toy, tmp_path, memory, cache):
    d = load(toy, 16, seed=2, settings=settings(tmp_path, memory_bytes=memory, cache_bytes=cache))
    assert (d.n_train, d.n_val, d.num_classes) == (30, 9, 3)
    assert (d.store is None) == (cache == 0)
    x, y = d.val_arrays()
    assert x.shape == (9, 16, 16, 3) and colours_match(x, y) and sorted(y) == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    xb, yb = d.train_batch(np.array([0, 29, 11, 20]))  # rows in three shards
    assert colours_match(xb, yb) and (yb == d.y_train[[0, 29, 11, 20]]).all()
    train, val = d.datasets(7, seed=1)
    for _ in range(2):  # every epoch: each training image once, with its label
        got = [(xt.numpy(), yt.numpy()) for xt, yt in train]
        ys = np.concatenate([g[1] for g in got])
        assert sorted(ys.tolist()) == sorted(d.y_train.tolist())
        assert colours_match(np.concatenate([g[0] for g in got]), ys)
    assert sum(int(yv.shape[0]) for _, yv in val) == 9


def test_limit_keeps_both_splits_in_proportion_by_class(toy, tmp_path):
    d = load(toy, 16, limit=13, seed=0, settings=settings(tmp_path))
    assert (d.n_train, d.n_val) == (9, 3)  # 13 x 30/39: 10 of train, 3 per class; the 3 left: 1 per class
    assert sorted(d.y_val.tolist()) == [0, 1, 2] and np.bincount(d.y_train).tolist() == [3, 3, 3]
    assert colours_match(*d.val_arrays())


def test_a_dataset_is_downloaded_and_prepared_on_first_use_and_pickles(tfds_dir, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="nas.data.tfds"):
        d = load("tfds:nas_toy_shapes", 16, channels=1, settings=settings(tmp_path))
    assert "downloading and preparing" in caplog.text and (tfds_dir / "nas_toy_shapes" / "1.0.0").is_dir()
    assert d.val_arrays()[0].shape == (9, 16, 16, 1)
    back = pickle.loads(pickle.dumps(d.items))  # another process's copy: builds its own builder
    assert back.identity == d.items.identity and (back.labels == d.items.labels).all()
    assert [r.tolist() for r, _ in back.batches(16, 1, np.array([3, 31]))] == [[3, 31]]


def test_bad_tfds_sources_are_one_line_errors(mock, monkeypatch):
    for source, message in [("tfds:no_such_dataset", "'no_such_dataset' is not a TensorFlow Datasets dataset"),
                            ("tfds:imdb_reviews", "has no Image feature"),
                            ("tfds:cifar10:9.9.9", "cannot be loaded at version 9.9.9")]:
        with pytest.raises(ValueError, match=f"^data.source: '{source}'") as e:
            check_source(source)
        assert message in str(e.value) and "\n" not in str(e.value)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tensorflow_datasets"
                        else real(name, *a))
    for call in (lambda: check_source("tfds:mnist"), lambda: load("tfds:mnist", 16), lambda: class_count("tfds:mnist")):
        with pytest.raises(ValueError, match=r"^data.source: 'tfds:mnist' needs the tensorflow-datasets package.*"
                                             r"pip install 'edgetpu-nas\[tfds\]'"):
            call()


def test_a_streamed_subset_is_exactly_its_rows(toy, tmp_path):
    """Streaming reads the files in a shuffled order and finds each example's row from its
    tfds_id: the images it yields are those the store holds for the rows asked, none else."""
    import tensorflow as tf

    items = load(toy, 16, settings=settings(tmp_path)).items
    stored = load(toy, 16, settings=settings(tmp_path))
    rows = np.array([0, 5, 12, 29, 33, 38])  # train and validation rows, in four shards
    got = list(items.stream(tf.data.Dataset.from_tensor_slices(rows), 16, 3).as_numpy_iterator())
    assert sorted(x.tobytes() for x, _ in got) == sorted(x.tobytes() for x in stored.store.read(rows))
    assert sorted(int(y) for _, y in got) == sorted(items.labels[rows].tolist())
